//! [`CircuitDiscover`]: a circuit per endpoint, named by its discovery key.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures_core::{Stream, TryStream};
use pin_project_lite::pin_project;
use tower::Layer;
use tower::discover::Change;

use super::layer::CircuitBreakerLayer;
use super::service::CircuitBreakerService;

/// Wraps every endpoint of a `Discover` stream in a circuit breaker whose
/// key is the endpoint's discovery key (for the registry's stream, the
/// instance id), so events and logs name the instance; see
/// [`CircuitBreakerLayer::keyed_by_discovery`].
#[derive(Clone, Debug)]
pub struct CircuitDiscoverLayer<C> {
    breaker: CircuitBreakerLayer<C>,
}

impl<C> CircuitBreakerLayer<C> {
    /// A layer over a whole `Discover` stream (rather than one endpoint, as
    /// with [`EndpointLayer`](crate::EndpointLayer)) that keys each
    /// endpoint's circuit by its discovery key, e.g. the instance id.
    pub fn keyed_by_discovery(self) -> CircuitDiscoverLayer<C> {
        CircuitDiscoverLayer { breaker: self }
    }
}

impl<D, C: Clone> Layer<D> for CircuitDiscoverLayer<C> {
    type Service = CircuitDiscover<D, C>;

    fn layer(&self, discover: D) -> Self::Service {
        CircuitDiscover {
            discover,
            breaker: self.breaker.clone(),
        }
    }
}

pin_project! {
    /// A `Discover` whose endpoints are wrapped in circuit breakers keyed by
    /// their discovery keys; from [`CircuitDiscoverLayer`].
    pub struct CircuitDiscover<D, C> {
        #[pin]
        discover: D,
        breaker: CircuitBreakerLayer<C>,
    }
}

impl<D: fmt::Debug, C: fmt::Debug> fmt::Debug for CircuitDiscover<D, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitDiscover")
            .field("discover", &self.discover)
            .field("breaker", &self.breaker)
            .finish()
    }
}

impl<D, K, S, C> Stream for CircuitDiscover<D, C>
where
    D: TryStream<Ok = Change<K, S>>,
    K: fmt::Display,
    C: Clone,
{
    type Item = Result<Change<K, CircuitBreakerService<S, C>>, D::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.project();
        let breaker = this.breaker;
        let item = ready!(this.discover.try_poll_next(cx));
        Poll::Ready(item.map(|r| {
            r.map(|change| match change {
                Change::Insert(key, service) => {
                    let wrapped = breaker.layer_keyed(&key.to_string(), service);
                    Change::Insert(key, wrapped)
                }
                Change::Remove(key) => Change::Remove(key),
            })
        }))
    }
}
