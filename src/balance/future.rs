use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower::BoxError;

use super::p2c::{EndpointLoad, EwmaConfig};

pin_project! {
    /// The response future of [`LoadBalance`](super::LoadBalance): the
    /// endpoint's future, counted in flight until it completes or is dropped.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Option<F>,
        guard: Option<LoadGuard>,
        error: Option<BoxError>,
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, guard: LoadGuard) -> Self {
        Self {
            inner: Some(inner),
            guard: Some(guard),
            error: None,
        }
    }

    pub(crate) fn failed(error: BoxError) -> Self {
        Self {
            inner: None,
            guard: None,
            error: Some(error),
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(inner) = this.inner.as_pin_mut() else {
            let error = this
                .error
                .take()
                .unwrap_or_else(|| "response future polled after completion".into());
            return Poll::Ready(Err(error));
        };
        let output = ready!(inner.poll(cx));
        if let Some(guard) = this.guard.take() {
            guard.complete(output.is_ok());
        }
        Poll::Ready(output.map_err(Into::into))
    }
}

/// Counts a request in flight on its endpoint until completed or dropped.
pub(crate) struct LoadGuard {
    pub(crate) load: Arc<EndpointLoad>,
    /// Whether to tell the balancer the count changed (least-connections).
    pub(crate) mark: bool,
    /// When the request started (p2c only: its latency feeds the estimate).
    pub(crate) started: Option<(Instant, Instant, EwmaConfig)>,
    pub(crate) done: bool,
}

impl LoadGuard {
    fn complete(mut self, ok: bool) {
        self.finish(ok);
    }

    fn finish(&mut self, ok: bool) {
        if self.done {
            return;
        }
        self.done = true;
        self.load.end();
        if let (Some((epoch, start, config)), true) = (&self.started, ok) {
            // One clock read for both the latency and the update time.
            let now = Instant::now();
            let now_ns =
                u64::try_from(now.saturating_duration_since(*epoch).as_nanos()).unwrap_or(u64::MAX);
            self.load
                .observe(now.saturating_duration_since(*start), now_ns, config);
        }
        // Least-connections: re-bucket the endpoint if the balancer holds it
        // as ready (otherwise it reads the count when it next is).
        if self.mark
            && self.load.ready.load(std::sync::atomic::Ordering::SeqCst)
            && let Some(marker) = &self.load.marker
        {
            marker.mark();
        }
    }
}

impl Drop for LoadGuard {
    fn drop(&mut self) {
        self.finish(false);
    }
}
