use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures_core::{Stream, TryStream};
use pin_project_lite::pin_project;
use tower::Layer;
use tower::discover::Change;

/// Applies the layer `L` to every endpoint service inserted by a `Discover`
/// stream; see the [module docs](crate::endpoint).
#[derive(Clone, Debug)]
pub struct EndpointLayer<L> {
    layer: L,
}

impl<L> EndpointLayer<L> {
    /// Wraps each endpoint in `layer`.
    pub fn new(layer: L) -> Self {
        Self { layer }
    }
}

impl<L: Clone, D> Layer<D> for EndpointLayer<L> {
    type Service = LayeredDiscover<D, L>;

    fn layer(&self, discover: D) -> Self::Service {
        LayeredDiscover {
            discover,
            layer: self.layer.clone(),
        }
    }
}

pin_project! {
    /// A `Discover` whose endpoint services are wrapped in a layer; from
    /// [`EndpointLayer`].
    pub struct LayeredDiscover<D, L> {
        #[pin]
        discover: D,
        layer: L,
    }
}

impl<D: fmt::Debug, L: fmt::Debug> fmt::Debug for LayeredDiscover<D, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LayeredDiscover")
            .field("discover", &self.discover)
            .field("layer", &self.layer)
            .finish()
    }
}

impl<D, L, K, S> Stream for LayeredDiscover<D, L>
where
    D: TryStream<Ok = Change<K, S>>,
    L: Layer<S>,
{
    type Item = Result<Change<K, L::Service>, D::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.project();
        let layer = this.layer;
        let item = ready!(this.discover.try_poll_next(cx));
        Poll::Ready(item.map(|r| r.map(|change| map_change(change, |s| layer.layer(s)))))
    }
}

/// Maps the service of an insert; a remove passes through.
pub(crate) fn map_change<K, S, T>(change: Change<K, S>, f: impl FnOnce(S) -> T) -> Change<K, T> {
    match change {
        Change::Insert(key, service) => Change::Insert(key, f(service)),
        Change::Remove(key) => Change::Remove(key),
    }
}
