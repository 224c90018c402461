//! The imperative face: `LoadBalancer::select_instance` over registry
//! instances.

use std::collections::HashMap;
use std::net::IpAddr;

use fluxor_registry::balance::StickyConfig;
use fluxor_registry::{
    InstanceId, LoadBalancer, Query, RequestContext, ServiceDefinition, ServiceInstance,
    ServiceRegistry, Strategy,
};

async fn instances(weights: &[u32]) -> (ServiceRegistry, Vec<ServiceInstance>) {
    let registry = ServiceRegistry::builder().build().await.unwrap();
    for (i, w) in weights.iter().enumerate() {
        registry
            .register(
                ServiceDefinition::new("svc", "127.0.0.1", 3000 + i as u16)
                    .id(InstanceId::new(format!("svc-{i:02}")).unwrap())
                    .weight(*w),
            )
            .await
            .unwrap();
    }
    let all = registry.find_services(&Query::name("svc"));
    (registry, all)
}

fn client(n: u32) -> RequestContext {
    RequestContext::default().client_ip(IpAddr::from([
        10,
        (n >> 16) as u8,
        (n >> 8) as u8,
        n as u8,
    ]))
}

#[tokio::test]
async fn ip_hash_moves_only_the_keys_of_the_endpoint_that_left() {
    let (_r, all) = instances(&[1; 10]).await;
    let lb = LoadBalancer::new(Strategy::IpHash);
    let before: Vec<InstanceId> = (0..10_000)
        .map(|c| lb.select_instance(&all, &client(c)).unwrap().id().clone())
        .collect();
    // Same answer again: deterministic.
    assert_eq!(
        lb.select_instance(&all, &client(17)).unwrap().id(),
        &before[17]
    );
    let gone = all[4].id().clone();
    let rest: Vec<ServiceInstance> = all.iter().filter(|i| i.id() != &gone).cloned().collect();
    let mut moved = 0;
    for (c, was) in before.iter().enumerate() {
        let now = lb.select_instance(&rest, &client(c as u32)).unwrap();
        if now.id() != was {
            moved += 1;
            assert_eq!(was, &gone, "client {c} moved though its endpoint stayed");
        }
    }
    assert!(
        moved as f64 <= 10_000.0 * (1.0 / 10.0 + 0.02),
        "moved {moved} of 10000"
    );
    assert!(moved > 0);
}

#[tokio::test]
async fn ip_hash_honours_weights() {
    let (_r, all) = instances(&[1, 3]).await;
    let lb = LoadBalancer::new(Strategy::IpHash);
    let heavy = (0..20_000)
        .filter(|&c| lb.select_instance(&all, &client(c)).unwrap().id() == all[1].id())
        .count();
    assert!(
        (13_500..16_500).contains(&heavy),
        "weight 3 of 4 got {heavy} of 20000"
    );
}

#[tokio::test]
async fn least_connections_follows_update_connections() {
    let (_r, all) = instances(&[1, 1, 1]).await;
    let lb = LoadBalancer::new(Strategy::LeastConnections);
    lb.update_connections(all[0].id(), 2);
    lb.update_connections(all[1].id(), 1);
    assert_eq!(
        lb.select_instance(&all, &RequestContext::default())
            .unwrap()
            .id(),
        all[2].id()
    );
    lb.update_connections(all[2].id(), 5);
    assert_eq!(
        lb.select_instance(&all, &RequestContext::default())
            .unwrap()
            .id(),
        all[1].id()
    );
    lb.update_connections(all[0].id(), -10);
    assert_eq!(lb.connections(all[0].id()), 0, "never below zero");
    // Ties rotate.
    let (_r, equal) = instances(&[1, 1, 1]).await;
    let lb = LoadBalancer::new(Strategy::LeastConnections);
    let mut seen: HashMap<InstanceId, usize> = HashMap::new();
    for _ in 0..30 {
        *seen
            .entry(
                lb.select_instance(&equal, &RequestContext::default())
                    .unwrap()
                    .id()
                    .clone(),
            )
            .or_default() += 1;
    }
    assert_eq!(seen.values().copied().collect::<Vec<_>>(), vec![10; 3]);
}

#[tokio::test]
async fn weighted_and_round_robin_proportions() {
    let (_r, all) = instances(&[3, 2, 1]).await;
    let lb = LoadBalancer::new(Strategy::Weighted);
    let mut counts = vec![0; 3];
    for _ in 0..600 {
        let pick = lb
            .select_instance(&all, &RequestContext::default())
            .unwrap();
        counts[all.iter().position(|i| i.id() == pick.id()).unwrap()] += 1;
    }
    assert_eq!(counts, [300, 200, 100]);
    let rr = LoadBalancer::new(Strategy::RoundRobin);
    let first: Vec<_> = (0..6)
        .map(|_| {
            rr.select_instance(&all, &RequestContext::default())
                .unwrap()
                .port()
        })
        .collect();
    assert_eq!(first, [3000, 3001, 3002, 3000, 3001, 3002]);
}

#[tokio::test]
async fn sticky_sessions_stick_fall_back_and_clear() {
    let (_r, all) = instances(&[1, 1, 1]).await;
    let lb = LoadBalancer::new(Strategy::RoundRobin).with_sticky_sessions(StickyConfig::default());
    let alice = RequestContext::default().session_id("alice");
    let first = lb.select_instance(&all, &alice).unwrap();
    for _ in 0..10 {
        assert_eq!(lb.select_instance(&all, &alice).unwrap().id(), first.id());
    }
    // Its instance gone: falls back and binds anew.
    let rest: Vec<_> = all
        .iter()
        .filter(|i| i.id() != first.id())
        .cloned()
        .collect();
    let second = lb.select_instance(&rest, &alice).unwrap();
    assert_ne!(second.id(), first.id());
    assert_eq!(
        lb.select_instance(&all, &alice).unwrap().id(),
        second.id(),
        "rebound"
    );
    assert!(lb.clear_sticky_session("alice"));
    assert!(!lb.clear_sticky_session("alice"));
}

#[tokio::test]
async fn p2c_avoids_a_slow_instance() {
    let (_r, all) = instances(&[1, 1, 1]).await;
    let lb = LoadBalancer::new(Strategy::P2cPeakEwma).with_seed(3);
    lb.record_response_time(all[0].id(), std::time::Duration::from_millis(500));
    for i in &all[1..] {
        lb.record_response_time(i.id(), std::time::Duration::from_millis(5));
    }
    let slow = (0..1_000)
        .filter(|_| {
            lb.select_instance(&all, &RequestContext::default())
                .unwrap()
                .id()
                == all[0].id()
        })
        .count();
    assert_eq!(
        slow, 0,
        "two choices always include a fast one when one of three is slow"
    );
    assert!(
        LoadBalancer::new(Strategy::Random)
            .select_instance(&[], &RequestContext::default())
            .is_none()
    );
}

#[tokio::test]
async fn each_set_of_instances_keeps_its_own_rotation() {
    // Two services called in turn through one balancer: each still
    // rotates over all of its instances.
    let (_a, first) = instances(&[1, 1]).await;
    let registry = ServiceRegistry::builder().build().await.unwrap();
    for port in [4000, 4001] {
        registry
            .register(ServiceDefinition::new("other", "127.0.0.1", port))
            .await
            .unwrap();
    }
    let second = registry.find_services(&Query::name("other"));
    let lb = LoadBalancer::new(Strategy::RoundRobin);
    let mut ports = Vec::new();
    for _ in 0..4 {
        ports.push(
            lb.select_instance(&first, &RequestContext::default())
                .unwrap()
                .port(),
        );
        lb.select_instance(&second, &RequestContext::default())
            .unwrap();
    }
    ports.sort();
    assert_eq!(
        ports,
        [3000, 3000, 3001, 3001],
        "one rotation shared by both sets would starve an instance"
    );
}
