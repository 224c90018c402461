//! Integration tests for active health checking, against real HTTP and
//! gRPC servers, TCP listeners and child processes on 127.0.0.1.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

#[path = "../support/mod.rs"]
mod support;

mod servers;

mod checker;
mod exec;
mod filter;
#[cfg(feature = "grpc")]
mod grpc;
mod http;
mod tcp;
mod ttl;
