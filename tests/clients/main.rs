//! The client integrations against real servers on 127.0.0.1: reqwest,
//! tonic (a generated client over the balanced stack) and axum (ip-hash
//! from `ConnectInfo`).
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

#[path = "../support/mod.rs"]
mod support;

mod axum;
mod hyper;
mod reqwest;
mod servers;
mod tonic;
