//! `TriedEndpoints` with `tower::retry`: a retried request never goes back
//! to an endpoint it already tried (Envoy's `previous_hosts`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use fluxor_registry::balance::{HttpContext, TriedEndpoints};
use fluxor_registry::{LoadBalanceLayer, Strategy};
use futures_util::future;
use tower::discover::Change;
use tower::retry::{Policy, RetryLayer};
use tower::{BoxError, Layer, Service, ServiceBuilder, ServiceExt, service_fn};

use crate::{feed, id};

#[derive(Clone)]
struct RetryErrors(usize);

impl<Res> Policy<http::Request<()>, Res, BoxError> for RetryErrors {
    type Future = future::Ready<()>;

    fn retry(
        &mut self,
        _: &mut http::Request<()>,
        result: &mut Result<Res, BoxError>,
    ) -> Option<Self::Future> {
        if result.is_err() && self.0 > 0 {
            self.0 -= 1;
            Some(future::ready(()))
        } else {
            None
        }
    }

    fn clone_request(&mut self, req: &http::Request<()>) -> Option<http::Request<()>> {
        Some(req.clone())
    }
}

type Log = Arc<Mutex<Vec<(String, usize)>>>;

/// Four endpoints; only endpoint 3 succeeds. Returns, per request, the
/// endpoints it went to.
async fn run(with_tried: bool) -> HashMap<String, Vec<usize>> {
    let log: Log = Arc::default();
    let (tx, discover) = feed();
    for n in 0..4 {
        let log = log.clone();
        tx.send(Ok(Change::Insert(
            id(n),
            service_fn(move |req: http::Request<()>| {
                let rid = req.headers()["x-request"].to_str().unwrap().to_owned();
                log.lock().unwrap().push((rid, n));
                future::ready(if n == 3 {
                    Ok("ok")
                } else {
                    Err(BoxError::from("boom"))
                })
            }),
        )))
        .unwrap();
    }
    let balancer = LoadBalanceLayer::new(Strategy::Random)
        .seed(5)
        .context(HttpContext::new())
        .layer(discover);
    let mut client = ServiceBuilder::new()
        .layer(RetryLayer::new(RetryErrors(3)))
        .service(tower::buffer::Buffer::new(balancer, 16));
    for r in 0..200 {
        let mut req = http::Request::get("/")
            .header("x-request", r.to_string())
            .body(())
            .unwrap();
        if with_tried {
            req.extensions_mut().insert(TriedEndpoints::new());
        }
        let reply = client.ready().await.unwrap().call(req).await;
        if with_tried {
            assert_eq!(
                reply.unwrap(),
                "ok",
                "request {r}: four attempts over four endpoints must reach the good one"
            );
        }
    }
    drop(tx);
    let mut by_request: HashMap<String, Vec<usize>> = HashMap::new();
    for (rid, n) in log.lock().unwrap().iter() {
        by_request.entry(rid.clone()).or_default().push(*n);
    }
    by_request
}

#[tokio::test]
async fn retries_avoid_endpoints_already_tried() {
    for (rid, tried) in run(true).await {
        let mut unique = tried.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(
            unique.len(),
            tried.len(),
            "request {rid} went back to an endpoint: {tried:?}"
        );
    }
    // The control: without the extension random retries do repeat.
    let repeats = run(false)
        .await
        .values()
        .filter(|t| {
            let mut u = (*t).clone();
            u.sort();
            u.dedup();
            u.len() < t.len()
        })
        .count();
    assert!(
        repeats > 0,
        "without TriedEndpoints some retry should have repeated an endpoint"
    );
}
