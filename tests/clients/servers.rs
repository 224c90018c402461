//! Servers the client tests talk to.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic_health::ServingStatus;
use tower::Service;
use tower::layer::layer_fn;

/// Counts the requests that reach the inner service.
#[derive(Clone)]
struct Count<S> {
    inner: S,
    hits: Arc<AtomicUsize>,
}

impl<S: Service<R>, R> Service<R> for Count<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> S::Future {
        self.hits.fetch_add(1, Ordering::SeqCst);
        self.inner.call(req)
    }
}

/// A tonic server on 127.0.0.1 with the standard gRPC health service
/// (the overall status `""` is SERVING), counting the calls it serves.
pub(crate) struct GrpcServer {
    pub(crate) addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl GrpcServer {
    pub(crate) async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("", ServingStatus::Serving)
            .await;
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        let server = tonic::transport::Server::builder()
            .layer(layer_fn(move |inner| Count {
                inner,
                hits: h.clone(),
            }))
            .add_service(health)
            .serve_with_incoming(TcpListenerStream::new(listener));
        let task = tokio::spawn(async move {
            let _keep = reporter;
            let _ = server.await;
        });
        Self { addr, hits, task }
    }

    pub(crate) fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub(crate) fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Fails the test instead of hanging it.
pub(crate) async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .expect("timed out")
}
