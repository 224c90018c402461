//! Integration tests for the circuit breaker: both faces, on paused time,
//! and per endpoint under tower's balancer against real HTTP servers.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

#[path = "../support/mod.rs"]
mod support;

mod balance;
mod breaker;
mod service;
