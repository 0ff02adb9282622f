//! One black-box test binary: every test talks to real servers on loopback.

mod browser;
mod cli;
mod gateway;
mod helpers;
mod load;
mod outbox;
mod restart;
mod sandbox;
mod shopify;
