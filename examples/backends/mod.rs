//! HTTP backends on 127.0.0.1 for the client examples: each answers every
//! request (`/health` included) with its name and a status you can change,
//! and counts the requests it served.
#![allow(dead_code)]

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Starts backends `a`, `b` and `c`, registers them as `service` and starts
/// an HTTP health check on each, every 100 ms.
pub(crate) async fn registered(
    service: &str,
) -> Result<
    (
        [Backend; 3],
        fluxor_registry::ServiceRegistry,
        fluxor_registry::HealthChecker,
    ),
    tower::BoxError,
> {
    use fluxor_registry::{
        CheckSpec, HealthChecker, HealthCheckerConfig, HealthConfig, ServiceDefinition,
        ServiceRegistry,
    };
    use std::time::Duration;
    let backends = [
        Backend::start("a").await?,
        Backend::start("b").await?,
        Backend::start("c").await?,
    ];
    let registry = ServiceRegistry::builder().build().await?;
    let checker = HealthChecker::new(registry.clone(), HealthCheckerConfig::default());
    for b in &backends {
        let instance = registry
            .register(ServiceDefinition::new(service, "127.0.0.1", b.port))
            .await?;
        checker.start_health_checks(
            &instance,
            HealthConfig {
                interval: Duration::from_millis(100),
                checks: vec![CheckSpec::http("/health").timeout(Duration::from_secs(1))],
                ..Default::default()
            },
        )?;
    }
    Ok((backends, registry, checker))
}

/// One backend.
pub(crate) struct Backend {
    pub(crate) name: &'static str,
    pub(crate) port: u16,
    hits: Arc<AtomicUsize>,
    status: Arc<AtomicU16>,
    task: tokio::task::JoinHandle<()>,
}

impl Backend {
    pub(crate) async fn start(name: &'static str) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let hits = Arc::new(AtomicUsize::new(0));
        let status = Arc::new(AtomicU16::new(200));
        let (h, s) = (hits.clone(), status.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (h, s) = (h.clone(), s.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        if req.uri().path() != "/health" {
                            h.fetch_add(1, Ordering::Relaxed);
                        }
                        let code = StatusCode::from_u16(s.load(Ordering::Relaxed))
                            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                        async move {
                            let mut response = Response::new(Full::new(Bytes::from(name)));
                            *response.status_mut() = code;
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(Self {
            name,
            port,
            hits,
            status,
            task,
        })
    }

    /// Requests served, health checks not counted.
    pub(crate) fn hits(&self) -> usize {
        self.hits.load(Ordering::Relaxed)
    }

    /// Answers every later request (health checks too) with `code`.
    pub(crate) fn set_status(&self, code: u16) {
        self.status.store(code, Ordering::Relaxed);
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `name: hits` for each backend.
pub(crate) fn spread(backends: &[Backend]) -> String {
    backends
        .iter()
        .map(|b| format!("{}: {}", b.name, b.hits()))
        .collect::<Vec<_>>()
        .join(", ")
}
