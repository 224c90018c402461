//! [`ReqwestService`]: a `reqwest::Client` as a tower `Service` of
//! `http::Request`s, and [`ReqwestEndpoint`], which makes one per instance.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tower_service::Service;

use super::target::{AddressError, Target};
use crate::instance::ServiceInstance;
use crate::registry::MakeEndpoint;

/// reqwest's own response future (its type is not exported by name).
type Pending = <reqwest::Client as Service<reqwest::Request>>::Future;

/// A `reqwest::Client` as a `Service<http::Request<B>>` answering
/// `http::Response<reqwest::Body>`, so that reqwest users can wrap it with
/// `ServiceBuilder` and tower layers.
///
/// Made with [`new`](Self::new) it sends each request where its URI says;
/// made by [`ReqwestEndpoint`] it sends it to one instance, replacing the
/// URI's scheme and authority and keeping its path and query.
///
/// ```
/// use fluxor_registry::endpoint::ReqwestService;
/// use tower::ServiceBuilder;
/// use tower::timeout::TimeoutLayer;
/// use std::time::Duration;
///
/// let client = ServiceBuilder::new()
///     .layer(TimeoutLayer::new(Duration::from_secs(5)))
///     .service(ReqwestService::new(reqwest::Client::new()));
/// # let _ = client;
/// ```
#[derive(Clone)]
pub struct ReqwestService {
    client: reqwest::Client,
    target: Option<Target>,
}

impl fmt::Debug for ReqwestService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReqwestService")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl ReqwestService {
    /// Sends requests through `client`, each to the URI it carries.
    pub fn new(client: reqwest::Client) -> Self {
        Self {
            client,
            target: None,
        }
    }

    /// The client requests go through.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }
}

/// The error of a [`ReqwestService`].
#[derive(Debug, thiserror::Error)]
pub enum ReqwestError {
    /// The request's URI could not be rewritten to the instance.
    #[error(transparent)]
    Address(#[from] AddressError),
    /// The `http::Request` is not one reqwest can send (its URI is not an
    /// absolute URL, for instance).
    #[error("cannot convert the request for reqwest: {0}")]
    Request(#[source] reqwest::Error),
    /// reqwest failed to send it or to read the response head.
    #[error("reqwest failed: {0}")]
    Send(#[source] reqwest::Error),
}

impl<B> Service<http::Request<B>> for ReqwestService
where
    B: Into<reqwest::Body>,
{
    type Response = http::Response<reqwest::Body>;
    type Error = ReqwestError;
    type Future = ReqwestFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // reqwest's client is always ready: it queues on its pool.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        if let Some(target) = &self.target {
            match target.rewrite(req.uri()) {
                Ok(uri) => *req.uri_mut() = uri,
                Err(e) => return ReqwestFuture::failed(ReqwestError::Address(e)),
            }
        }
        match reqwest::Request::try_from(req) {
            Ok(req) => ReqwestFuture {
                state: State::Sent {
                    pending: self.client.call(req),
                },
            },
            Err(e) => ReqwestFuture::failed(ReqwestError::Request(e)),
        }
    }
}

pin_project! {
    /// The response future of a [`ReqwestService`].
    pub struct ReqwestFuture {
        #[pin]
        state: State,
    }
}

pin_project! {
    #[project = StateProj]
    enum State {
        Sent { #[pin] pending: Pending },
        Failed { error: Option<ReqwestError> },
    }
}

impl ReqwestFuture {
    fn failed(error: ReqwestError) -> Self {
        Self {
            state: State::Failed { error: Some(error) },
        }
    }
}

impl fmt::Debug for ReqwestFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Sent { .. } => "sent",
            State::Failed { .. } => "failed",
        };
        f.debug_struct("ReqwestFuture")
            .field("state", &state)
            .finish()
    }
}

impl Future for ReqwestFuture {
    type Output = Result<http::Response<reqwest::Body>, ReqwestError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Sent { pending } => pending
                .poll(cx)
                .map(|r| r.map(http::Response::from).map_err(ReqwestError::Send)),
            StateProj::Failed { error } => Poll::Ready(Err(error.take().unwrap_or_else(|| {
                ReqwestError::Address(AddressError::new("", "polled after completion"))
            }))),
        }
    }
}

/// Makes, for each discovered instance, a [`ReqwestService`] that sends
/// requests to that instance through one shared `reqwest::Client` (and so
/// one connection pool): the request's scheme and authority are replaced by
/// the instance's, its path and query are kept.
///
/// ```
/// use fluxor_registry::endpoint::ReqwestEndpoint;
/// use fluxor_registry::{LoadBalanceLayer, Query, ServiceRegistry, Strategy};
/// use tower::ServiceBuilder;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let registry = ServiceRegistry::builder().build().await?;
/// let endpoints = registry
///     .discover(Query::name("inventory-service"))
///     .endpoints(ReqwestEndpoint::new(reqwest::Client::new()));
/// let client = ServiceBuilder::new()
///     .layer(LoadBalanceLayer::new(Strategy::RoundRobin))
///     .service(endpoints);
/// // client: Service<http::Request<B>> for any B: Into<reqwest::Body>
/// # let _ = client;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ReqwestEndpoint {
    client: reqwest::Client,
}

impl fmt::Debug for ReqwestEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReqwestEndpoint").finish_non_exhaustive()
    }
}

impl ReqwestEndpoint {
    /// Endpoints sharing `client`.
    pub fn new(client: reqwest::Client) -> Self {
        Self { client }
    }
}

impl MakeEndpoint for ReqwestEndpoint {
    type Service = ReqwestService;

    fn make_endpoint(&mut self, instance: &ServiceInstance) -> Self::Service {
        ReqwestService {
            client: self.client.clone(),
            target: Some(Target::of(instance)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instance::{HealthStatus, InstanceId, Liveness, ServiceDefinition};

    #[tokio::test]
    async fn a_request_reqwest_cannot_send_is_a_typed_error() {
        let mut svc = ReqwestService::new(reqwest::Client::new());
        // A relative URI is no URL reqwest can send.
        let req = http::Request::get("/relative")
            .body(Vec::<u8>::new())
            .unwrap();
        let err = svc.call(req).await.unwrap_err();
        assert!(matches!(err, ReqwestError::Request(_)), "{err:?}");
    }

    #[tokio::test]
    async fn endpoint_rewrites_to_the_instance() {
        let now = std::time::SystemTime::now();
        let instance = ServiceInstance::new(
            InstanceId::new("svc-1").unwrap(),
            ServiceDefinition::new("svc", "127.0.0.1", 1),
            None,
            now,
            HealthStatus::Passing,
            Liveness::new(now, u64::MAX),
        );
        let mut svc = ReqwestEndpoint::new(reqwest::Client::new()).make_endpoint(&instance);
        // Port 1 on loopback refuses: the request went to the instance, not
        // to the host written in the request.
        let req = http::Request::get("http://placeholder.invalid/x")
            .body(Vec::<u8>::new())
            .unwrap();
        match svc.call(req).await.unwrap_err() {
            ReqwestError::Send(e) => {
                assert!(e.is_connect(), "{e:?}");
                assert_eq!(e.url().map(|u| u.as_str()), Some("http://127.0.0.1:1/x"));
            }
            other => panic!("expected a connect error, got {other:?}"),
        }
    }
}
