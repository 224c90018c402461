//! Integration tests for the service registry.

#[path = "../support/mod.rs"]
mod support;

mod balance_p2c;
mod crash;
mod crud;
mod discover;
mod find_prop;
mod persistence;
mod ttl;
