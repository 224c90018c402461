//! [`TonicEndpoint`]: a `tonic::transport::Channel` per instance, so that a
//! balanced stack is the transport of a generated tonic client.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tonic::body::Body;
use tonic::transport::channel::ResponseFuture;
use tonic::transport::{Channel, Endpoint};
use tower_service::Service;

use super::target::{AddressError, Target};
use crate::instance::ServiceInstance;
use crate::registry::MakeEndpoint;

type Configure = Arc<dyn Fn(Endpoint) -> Endpoint + Send + Sync>;

/// Makes, for each discovered instance, a [`TonicChannel`]: a lazily
/// connecting `tonic::transport::Channel` to `http://host:port` (or
/// `https://` for [`Protocol::Https`](crate::Protocol::Https), which needs
/// tonic's TLS features).
///
/// Balance those with [`LoadBalanceLayer`](crate::LoadBalanceLayer), make
/// the result `Clone` with `tower::buffer::Buffer`, and hand it to any
/// generated client: `GreeterClient::new(balanced)`. Each instance has its
/// own HTTP/2 connection, and the balancer spreads calls over them.
///
/// Endpoints are made while the `Discover` stream is polled, which must be
/// inside a Tokio runtime (tonic spawns each channel's worker).
///
/// ```
/// use fluxor_registry::endpoint::TonicEndpoint;
/// use fluxor_registry::{LoadBalanceLayer, Query, ServiceRegistry, Strategy};
/// use tonic_health::pb::health_client::HealthClient;
/// use tower::ServiceBuilder;
/// use tower::buffer::BufferLayer;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let registry = ServiceRegistry::builder().build().await?;
/// let endpoints = registry
///     .discover(Query::name("inventory-grpc"))
///     .endpoints(TonicEndpoint::new().configure(|e| e.timeout(std::time::Duration::from_secs(2))));
/// let balanced = ServiceBuilder::new()
///     .layer(BufferLayer::new(64))
///     .layer(LoadBalanceLayer::new(Strategy::RoundRobin))
///     .service(endpoints);
/// let client = HealthClient::new(balanced);
/// # let _ = client;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Default)]
pub struct TonicEndpoint {
    configure: Option<Configure>,
}

impl fmt::Debug for TonicEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TonicEndpoint")
            .field("configured", &self.configure.is_some())
            .finish()
    }
}

impl TonicEndpoint {
    /// Channels with tonic's defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets up each instance's `tonic::transport::Endpoint` (timeouts,
    /// keep-alive, concurrency limit, …) before its channel is made.
    pub fn configure<F>(mut self, f: F) -> Self
    where
        F: Fn(Endpoint) -> Endpoint + Send + Sync + 'static,
    {
        self.configure = Some(Arc::new(f));
        self
    }
}

impl MakeEndpoint for TonicEndpoint {
    type Service = TonicChannel;

    fn make_endpoint(&mut self, instance: &ServiceInstance) -> Self::Service {
        let target = Target::of(instance);
        let channel = target.base().map(|uri| {
            let mut endpoint = Endpoint::from(uri);
            if let Some(configure) = &self.configure {
                endpoint = configure(endpoint);
            }
            endpoint.connect_lazy()
        });
        TonicChannel {
            id: target.id().into(),
            channel,
        }
    }
}

/// The channel to one instance; from [`TonicEndpoint`]. An instance whose
/// URI cannot be built gets a channel whose every call fails with
/// [`TonicError::Address`].
#[derive(Clone)]
pub struct TonicChannel {
    id: Arc<str>,
    channel: Result<Channel, AddressError>,
}

impl fmt::Debug for TonicChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TonicChannel")
            .field("instance", &self.id)
            .field("addressable", &self.channel.is_ok())
            .finish()
    }
}

/// The error of a [`TonicChannel`].
#[derive(Debug, thiserror::Error)]
pub enum TonicError {
    /// The instance's URI could not be built.
    #[error(transparent)]
    Address(#[from] AddressError),
    /// tonic's transport failed (connect, HTTP/2, …).
    #[error("instance {instance}: {source}")]
    Transport {
        /// The instance the call went to.
        instance: Arc<str>,
        /// What tonic said.
        #[source]
        source: tonic::transport::Error,
    },
}

impl Service<http::Request<Body>> for TonicChannel {
    type Response = http::Response<Body>;
    type Error = TonicError;
    type Future = TonicFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match &mut self.channel {
            Ok(channel) => channel
                .poll_ready(cx)
                .map_err(|source| TonicError::Transport {
                    instance: self.id.clone(),
                    source,
                }),
            // Ready, so that the call fails with the reason.
            Err(_) => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let state = match &mut self.channel {
            Ok(channel) => State::Sent {
                future: channel.call(req),
            },
            Err(e) => State::Failed {
                error: Some(e.clone()),
            },
        };
        TonicFuture {
            instance: self.id.clone(),
            state,
        }
    }
}

pin_project! {
    /// The response future of a [`TonicChannel`].
    pub struct TonicFuture {
        instance: Arc<str>,
        #[pin]
        state: State,
    }
}

pin_project! {
    #[project = StateProj]
    enum State {
        Sent { #[pin] future: ResponseFuture },
        Failed { error: Option<AddressError> },
    }
}

impl fmt::Debug for TonicFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Sent { .. } => "sent",
            State::Failed { .. } => "failed",
        };
        f.debug_struct("TonicFuture")
            .field("instance", &self.instance)
            .field("state", &state)
            .finish()
    }
}

impl Future for TonicFuture {
    type Output = Result<http::Response<Body>, TonicError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.state.project() {
            StateProj::Sent { future } => future.poll(cx).map_err(|source| TonicError::Transport {
                instance: this.instance.clone(),
                source,
            }),
            StateProj::Failed { error } => {
                Poll::Ready(Err(TonicError::Address(error.take().unwrap_or_else(
                    || AddressError::new(this.instance, "polled after completion"),
                ))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instance::{HealthStatus, InstanceId, Liveness, ServiceDefinition};

    fn instance(host: &str) -> ServiceInstance {
        let now = std::time::SystemTime::now();
        ServiceInstance::new(
            InstanceId::new("grpc-1").unwrap(),
            ServiceDefinition::new("grpc", host, 50051),
            None,
            now,
            HealthStatus::Passing,
            Liveness::new(now, u64::MAX),
        )
    }

    #[tokio::test]
    async fn an_instance_without_a_valid_uri_fails_with_a_typed_error() {
        // Registry validation rejects such hosts; an instance made another
        // way (a backend, a test) must still not panic.
        let mut svc = TonicEndpoint::new().make_endpoint(&instance("bad host/with spaces"));
        assert!(format!("{svc:?}").contains("addressable: false"));
        std::future::poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
        let err = svc
            .call(http::Request::new(Body::empty()))
            .await
            .unwrap_err();
        assert!(matches!(err, TonicError::Address(_)), "{err:?}");
        assert!(err.to_string().contains("grpc-1"), "{err}");
    }

    #[tokio::test]
    async fn a_valid_instance_gets_a_lazy_channel() {
        let svc = TonicEndpoint::new().make_endpoint(&instance("127.0.0.1"));
        assert!(svc.channel.is_ok());
    }
}
