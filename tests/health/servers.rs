//! Servers whose health can be flipped, and helpers to wait for events.
#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use fluxor_registry::{Event, InstanceId, Subscription};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// An HTTP/1 server on 127.0.0.1: `/health` answers with a status the test
/// sets (body `state=<code>`), `/moved` redirects to `/health`, `/slow`
/// answers after a delay, anything else answers with the server's name.
pub struct FlipServer {
    pub name: String,
    pub addr: SocketAddr,
    state: Arc<ServerState>,
    task: JoinHandle<()>,
}

struct ServerState {
    status: AtomicU16,
    requests: AtomicUsize,
    connections: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    slow: Mutex<Duration>,
    last_probe_header: Mutex<Option<String>>,
    health_hits: watch::Sender<usize>,
}

impl FlipServer {
    pub async fn start(name: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ServerState {
            status: AtomicU16::new(200),
            requests: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            slow: Mutex::new(Duration::ZERO),
            last_probe_header: Mutex::new(None),
            health_hits: watch::channel(0).0,
        });
        let (s, n) = (state.clone(), name.to_owned());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                s.connections.fetch_add(1, Ordering::SeqCst);
                let (s, n) = (s.clone(), n.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (s, n) = (s.clone(), n.clone());
                        async move { Ok::<_, Infallible>(answer(&s, &n, req).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self {
            name: name.to_owned(),
            addr,
            state,
            task,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn set_health(&self, status: u16) {
        self.state.status.store(status, Ordering::SeqCst);
    }

    /// Requests other than health probes.
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    pub fn health_hits(&self) -> usize {
        *self.state.health_hits.borrow()
    }

    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }

    pub fn set_slow(&self, delay: Duration) {
        *self.state.slow.lock().unwrap() = delay;
    }

    pub fn last_probe_header(&self) -> Option<String> {
        self.state.last_probe_header.lock().unwrap().clone()
    }

    /// Waits until `/health` has been hit at least `n` times.
    pub async fn wait_health_hits(&self, n: usize) {
        let mut rx = self.state.health_hits.subscribe();
        within(rx.wait_for(|hits| *hits >= n)).await.unwrap();
    }
}

async fn answer(s: &ServerState, name: &str, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let reply = |status: u16, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = StatusCode::from_u16(status).unwrap();
        response
    };
    match req.uri().path() {
        "/health" | "/slow" => {
            if let Some(v) = req.headers().get("x-probe") {
                *s.last_probe_header.lock().unwrap() = v.to_str().ok().map(str::to_owned);
            }
            let now = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            s.max_in_flight.fetch_max(now, Ordering::SeqCst);
            let delay = *s.slow.lock().unwrap();
            if req.uri().path() == "/slow" && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            s.in_flight.fetch_sub(1, Ordering::SeqCst);
            let status = s.status.load(Ordering::SeqCst);
            s.health_hits.send_modify(|h| *h += 1);
            reply(status, format!("state={status}"))
        }
        "/moved" => {
            let mut response = reply(301, String::new());
            response
                .headers_mut()
                .insert("location", "/health".parse().unwrap());
            response
        }
        _ => {
            s.requests.fetch_add(1, Ordering::SeqCst);
            reply(200, name.to_owned())
        }
    }
}

impl Drop for FlipServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A guard against a hung test: real-time waits get 20 s.
pub async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .expect("timed out waiting")
}

/// The next health event (`service-healthy` / `service-unhealthy`) for `id`,
/// skipping other events.
pub async fn next_health_event(events: &mut Subscription, id: &InstanceId) -> Event {
    within(async {
        loop {
            let event = events.recv().await.unwrap();
            if matches!(event, Event::Healthy { .. } | Event::Unhealthy { .. })
                && event.key() == id.as_str()
            {
                return event;
            }
        }
    })
    .await
}

/// The event's name and the status it carries.
pub fn describe(event: &Event) -> (&'static str, fluxor_registry::HealthStatus) {
    (event.name(), event.instance().unwrap().health())
}
