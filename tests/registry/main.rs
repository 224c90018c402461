//! Integration tests for the service registry.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

#[path = "../support/mod.rs"]
mod support;

mod balance_p2c;
mod crash;
mod crud;
mod discover;
mod find_prop;
mod persistence;
mod ttl;
