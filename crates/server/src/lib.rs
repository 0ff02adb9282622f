//! pincapi: the gateway around `pincapi-core` — sources, store, delivery, Pinterest client,
//! sandbox, and the command line.

pub mod api_error;
pub mod app;
pub mod assemble;
pub mod audiences;
pub mod backpressure;
pub mod browser;
pub mod clock;
pub mod commands;
pub mod config;
pub mod delivery;
pub mod metrics;
pub mod pinterest_client;
pub mod pinterest_connect;
pub mod pinterest_oauth;
pub mod quality;
pub mod reload;
pub mod retention;
pub mod routes;
pub mod sandbox;
pub mod sealed;
pub mod serve;
pub mod setup;
pub mod shopify;
pub mod sign_in;
pub mod state;
pub mod store;
