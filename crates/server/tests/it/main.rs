//! One black-box test binary: every test talks to real servers on loopback.

mod audiences;
mod browser;
mod cli;
mod gateway;
mod helpers;
mod outbox;
mod restart;
mod sandbox;
mod shopify;
