//! [`HttpEndpoint`]: every instance reached through one shared hyper-util
//! client.

use std::fmt;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::client::legacy::{Client, ResponseFuture};
use tower::Service;

use super::target::{AddressError, Target};
use crate::instance::ServiceInstance;
use crate::registry::MakeEndpoint;

/// Makes, for each discovered instance, an [`InstanceClient`]: a `Service`
/// that sends `http::Request`s to that instance through one shared
/// hyper-util client (and so one connection pool).
///
/// The request's scheme and authority are replaced by the instance's; its
/// path and query are kept. So callers write requests for a path
/// (`/api/inventory?page=2`) and the balancer decides where they go.
///
/// ```
/// use fluxor_registry::endpoint::HttpEndpoint;
/// use fluxor_registry::{LoadBalanceLayer, Query, ServiceRegistry, Strategy};
/// use http_body_util::Empty;
/// use bytes::Bytes;
/// use tower::ServiceBuilder;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let registry = ServiceRegistry::builder().build().await?;
/// let endpoints = registry
///     .discover(Query::name("inventory-service"))
///     .endpoints(HttpEndpoint::<Empty<Bytes>>::http());
/// let client = ServiceBuilder::new()
///     .layer(LoadBalanceLayer::new(Strategy::LeastConnections))
///     .service(endpoints);
/// # let _ = client;
/// # Ok(())
/// # }
/// ```
pub struct HttpEndpoint<B, C = HttpConnector> {
    client: Client<C, B>,
}

impl<B, C: Clone> Clone for HttpEndpoint<B, C> {
    fn clone(&self) -> Self {
        Self {
            client: self.client.clone(),
        }
    }
}

impl<B, C> fmt::Debug for HttpEndpoint<B, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpEndpoint").finish_non_exhaustive()
    }
}

impl<B, C> HttpEndpoint<B, C> {
    /// Endpoints sharing `client`.
    pub fn new(client: Client<C, B>) -> Self {
        Self { client }
    }
}

impl<B> HttpEndpoint<B, HttpConnector>
where
    B: hyper::body::Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// Endpoints sharing a new plain-HTTP client (HTTP/1.1, pooled).
    pub fn http() -> Self {
        let client = Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
        Self { client }
    }
}

impl<B, C: Clone> MakeEndpoint for HttpEndpoint<B, C> {
    type Service = InstanceClient<B, C>;

    fn make_endpoint(&mut self, instance: &ServiceInstance) -> Self::Service {
        InstanceClient {
            client: self.client.clone(),
            target: Target::of(instance),
        }
    }
}

/// Sends requests to one instance; from [`HttpEndpoint`].
pub struct InstanceClient<B, C = HttpConnector> {
    client: Client<C, B>,
    target: Target,
}

impl<B, C: Clone> Clone for InstanceClient<B, C> {
    fn clone(&self) -> Self {
        Self {
            client: self.client.clone(),
            target: self.target.clone(),
        }
    }
}

impl<B, C> fmt::Debug for InstanceClient<B, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InstanceClient")
            .field("target", &self.target)
            .finish()
    }
}

/// The error of an [`InstanceClient`].
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// The request's URI could not be rewritten to the instance.
    #[error(transparent)]
    Address(#[from] AddressError),
    /// hyper-util's client failed (connect, send, …).
    #[error(transparent)]
    Client(#[from] hyper_util::client::legacy::Error),
}

impl<B, C> Service<http::Request<B>> for InstanceClient<B, C>
where
    C: Connect + Clone + Send + Sync + 'static,
    B: hyper::body::Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = http::Response<hyper::body::Incoming>;
    type Error = EndpointError;
    type Future = InstanceFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // hyper-util's client is always ready: it queues on its pool.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        match self.target.rewrite(req.uri()) {
            Ok(uri) => {
                *req.uri_mut() = uri;
                InstanceFuture::Sent(self.client.request(req))
            }
            Err(e) => InstanceFuture::Failed(Some(e)),
        }
    }
}

/// The response future of an [`InstanceClient`].
#[derive(Debug)]
pub enum InstanceFuture {
    /// The request is on its way.
    Sent(ResponseFuture),
    /// It could not be addressed.
    Failed(Option<AddressError>),
}

impl std::future::Future for InstanceFuture {
    type Output = Result<http::Response<hyper::body::Incoming>, EndpointError>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            InstanceFuture::Sent(f) => std::pin::Pin::new(f)
                .poll(cx)
                .map_err(EndpointError::Client),
            InstanceFuture::Failed(e) => {
                Poll::Ready(Err(EndpointError::Address(e.take().unwrap_or_else(|| {
                    AddressError::new("", "polled after completion")
                }))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instance::{HealthStatus, InstanceId, Liveness, ServiceDefinition};
    use http::Uri;
    use http_body_util::Empty;

    #[tokio::test]
    async fn rewrites_scheme_and_authority_and_keeps_path_and_query() {
        let def = ServiceDefinition::new("svc", "::1", 8080);
        let now = std::time::SystemTime::now();
        let instance = ServiceInstance::new(
            InstanceId::new("svc-1").unwrap(),
            def,
            None,
            now,
            HealthStatus::Passing,
            Liveness::new(now, u64::MAX),
        );
        let mut make = HttpEndpoint::<Empty<bytes::Bytes>>::http();
        let svc = make.make_endpoint(&instance);
        let uri: Uri = "http://placeholder/api/inventory?page=2".parse().unwrap();
        assert_eq!(
            svc.target.rewrite(&uri).unwrap().to_string(),
            "http://[::1]:8080/api/inventory?page=2"
        );
        let bare: Uri = "/x".parse().unwrap();
        assert_eq!(
            svc.target.rewrite(&bare).unwrap().to_string(),
            "http://[::1]:8080/x"
        );
    }
}
