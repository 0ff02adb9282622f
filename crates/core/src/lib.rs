//! pincapi-core: the pure heart of pincapi.
//!
//! Event model, normalisation and hashing of match keys, the Shopify → Pinterest mapping and
//! Pinterest wire types with response classification. Nothing in this crate does IO: no
//! sockets, files, clocks or randomness. Callers pass the current time in when a rule needs it.

pub mod audience;
pub mod event;
pub mod ingest;
pub mod normalize;
pub mod pinterest;
pub mod quality;
pub mod redact;
pub mod repeat;
pub mod shopify;
pub mod source;
pub mod tag;
