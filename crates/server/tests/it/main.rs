//! One black-box test binary: every test talks to real servers on loopback.

mod audiences;
mod backup;
mod browser;
mod cli;
mod contract;
mod deploy;
mod edge;
mod faults;
mod gateway;
mod graphql_documents;
mod helpers;
mod load;
mod multi_instance;
mod pg;
mod pg_outage;
mod pinterest_compat;
mod pinterest_oauth;
mod quality;
mod reload;
mod restart;
mod sandbox;
mod shopify;
mod shopify_app;
mod shopify_pixel;
mod status;
mod store;
