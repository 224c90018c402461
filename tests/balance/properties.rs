//! The strategies' defining properties, through the tower face.

use std::convert::Infallible;

use fluxor_registry::{InstanceId, LoadBalanceLayer, Strategy};
use futures_util::future::{Ready, ready};
use proptest::prelude::*;
use tower::discover::Change;
use tower::{Layer, Service, ServiceExt, service_fn};

use crate::{feed, id};

type Endpoint =
    tower::util::ServiceFn<Box<dyn FnMut(()) -> Ready<Result<usize, Infallible>> + Send>>;

fn endpoint(n: usize) -> Endpoint {
    service_fn(Box::new(move |()| ready(Ok(n))))
}

/// A balancer over endpoints 0..weights.len() answering their own number.
fn balancer<W>(
    layer: LoadBalanceLayer<fluxor_registry::balance::NoContext, W>,
    n: usize,
) -> impl Service<(), Response = usize, Error = tower::BoxError>
where
    W: fluxor_registry::balance::Weigh<InstanceId> + Clone,
{
    let (tx, discover) = feed();
    for i in 0..n {
        tx.send(Ok(Change::Insert(id(i), endpoint(i)))).unwrap();
    }
    std::mem::forget(tx); // the set stays open
    layer.layer(discover)
}

fn weights_of(weights: Vec<u32>) -> impl Fn(&InstanceId) -> u32 + Clone {
    let weights = std::sync::Arc::new(weights);
    move |key: &InstanceId| {
        let n: usize = key.as_str().trim_start_matches("ep-").parse().unwrap();
        weights[n]
    }
}

async fn picks(
    svc: &mut impl Service<(), Response = usize, Error = tower::BoxError>,
    count: usize,
) -> Vec<usize> {
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        out.push(svc.ready().await.unwrap().call(()).await.unwrap());
    }
    out
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn round_robin_visits_each_endpoint_once_per_cycle(n in 1usize..40, cycles in 1usize..5) {
        rt().block_on(async {
            let layer = LoadBalanceLayer::new(Strategy::RoundRobin).weights(weights_of(vec![1; n]));
            let mut svc = balancer(layer, n);
            let seen = picks(&mut svc, n * cycles).await;
            for cycle in seen.chunks(n) {
                let mut c = cycle.to_vec();
                c.sort();
                prop_assert_eq!(c, (0..n).collect::<Vec<_>>());
            }
            Ok(())
        })?;
    }

    #[test]
    fn weighted_gives_exact_proportions_in_every_cycle(weights in proptest::collection::vec(1u32..8, 1..8)) {
        rt().block_on(async {
            let g = weights.iter().copied().fold(0, gcd);
            let cycle: usize = weights.iter().map(|w| (w / g) as usize).sum();
            let layer = LoadBalanceLayer::new(Strategy::Weighted).weights(weights_of(weights.clone()));
            let mut svc = balancer(layer, weights.len());
            let seen = picks(&mut svc, cycle * 3).await;
            for chunk in seen.chunks(cycle) {
                let mut counts = vec![0u32; weights.len()];
                for &i in chunk {
                    counts[i] += 1;
                }
                let want: Vec<u32> = weights.iter().map(|w| w / g).collect();
                prop_assert_eq!(counts, want);
            }
            Ok(())
        })?;
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[tokio::test]
async fn random_passes_chi_square_at_a_fixed_seed() {
    let n = 10;
    let draws = 100_000;
    let layer = LoadBalanceLayer::new(Strategy::Random)
        .seed(7)
        .weights(weights_of(vec![1; n]));
    let mut svc = balancer(layer, n);
    let mut counts = vec![0f64; n];
    for i in picks(&mut svc, draws).await {
        counts[i] += 1.0;
    }
    let expected = draws as f64 / n as f64;
    let chi2: f64 = counts
        .iter()
        .map(|c| (c - expected).powi(2) / expected)
        .sum();
    // 9 degrees of freedom: the 0.1% critical value is 27.88.
    assert!(chi2 < 27.88, "chi-square {chi2} for {counts:?}");
    assert!(counts.iter().all(|&c| c > 0.0));
}

#[tokio::test]
async fn smooth_weighted_spreads_a_heavy_endpoint() {
    // nginx's example: 5, 1, 1 -> a a b a c a a, no five in a row.
    let layer = LoadBalanceLayer::new(Strategy::Weighted).weights(weights_of(vec![5, 1, 1]));
    let mut svc = balancer(layer, 3);
    assert_eq!(picks(&mut svc, 7).await, [0, 0, 1, 0, 2, 0, 0]);
}

#[tokio::test]
async fn least_connections_prefers_idle_endpoints_and_follows_completions() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    // Endpoints whose responses never complete: each call stays in flight.
    let calls: Arc<Vec<AtomicUsize>> = Arc::new((0..3).map(|_| AtomicUsize::new(0)).collect());
    let (tx, discover) = feed();
    for i in 0..3 {
        let calls = calls.clone();
        tx.send(Ok(Change::Insert(
            id(i),
            service_fn(move |()| {
                calls[i].fetch_add(1, Ordering::SeqCst);
                futures_util::future::pending::<Result<usize, Infallible>>()
            }),
        )))
        .unwrap();
    }
    let mut svc = LoadBalanceLayer::new(Strategy::LeastConnections).layer(discover);
    let snapshot = |calls: &Vec<AtomicUsize>| {
        calls
            .iter()
            .map(|c| c.load(Ordering::SeqCst))
            .collect::<Vec<_>>()
    };
    let mut held: Vec<(usize, _)> = Vec::new();
    for round in 1..=3 {
        for _ in 0..3 {
            let before = snapshot(&calls);
            svc.ready().await.unwrap();
            let fut = svc.call(());
            let after = snapshot(&calls);
            let which = (0..3).find(|&i| after[i] != before[i]).unwrap();
            held.push((which, fut));
        }
        assert_eq!(
            snapshot(&calls),
            vec![round; 3],
            "never doubled up while another had fewer"
        );
    }
    // Endpoint 2's requests end (dropped = cancelled): it is now the least loaded.
    held.retain(|(which, _)| *which != 2);
    for _ in 0..3 {
        svc.ready().await.unwrap();
        let before = snapshot(&calls);
        held.push((9, svc.call(())));
        assert_eq!(
            snapshot(&calls)[2],
            before[2] + 1,
            "the idle endpoint gets the next requests"
        );
    }
    drop(tx);
}
