//! One black-box test binary: every test talks to real servers on loopback.

mod cli;
mod gateway;
mod helpers;
mod restart;
mod sandbox;
