//! Integration tests for load balancing.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

#[path = "../support/mod.rs"]
mod support;

mod imperative;
mod properties;
mod readiness;
mod real_servers;
mod retry;

use std::convert::Infallible;

use fluxor_registry::{InstanceId, Strategy};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tower::discover::Change;

/// A Discover fed by hand.
pub(crate) type Feed<S> = UnboundedReceiverStream<Result<Change<InstanceId, S>, Infallible>>;

/// The sending side of a [`Feed`].
pub(crate) type Tx<S> = mpsc::UnboundedSender<Result<Change<InstanceId, S>, Infallible>>;

pub(crate) fn feed<S>() -> (Tx<S>, Feed<S>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (tx, UnboundedReceiverStream::new(rx))
}

pub(crate) fn id(n: usize) -> InstanceId {
    InstanceId::new(format!("ep-{n}")).unwrap()
}

pub(crate) const ALL: [Strategy; 6] = Strategy::ALL;
