//! The command line's commands that are more than a call into the library: each may use
//! `anyhow`, print, and exit. `main.rs` parses the arguments and dispatches here.

pub mod audiences;
pub mod audit;
pub mod backup;
pub mod bench;

pub mod demo;
pub mod demo_shop;
pub mod egress;
pub mod export_missed;
pub mod pinterest;
pub mod shopify;
pub mod shopify_connect;
pub mod status;
pub mod tag_check;
pub mod webdriver;
