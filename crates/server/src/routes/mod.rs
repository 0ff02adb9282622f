//! HTTP routes of the gateway (their error answer is [`crate::api_error::ApiError`]).

pub mod admin;
pub mod dashboard;
pub mod health;
pub mod ingest;
pub mod pinterest_compat;
pub mod quality;
pub mod session;
