//! `find_services` equals a brute-force filter written independently of
//! `Query::matches`, for random instances and queries.

use fluxor_registry::{
    HealthStatus, Protocol, Query, ServiceDefinition, ServiceInstance, ServiceRegistry,
};
use proptest::prelude::*;

const NAMES: [&str; 3] = ["a", "b", "c"];
const VERSIONS: [Option<&str>; 4] = [None, Some("1.0.0"), Some("1.4.2"), Some("2.0.0")];
const REQS: [&str; 4] = ["^1", ">=1.2", "<2.0.0", "=2.0.0"];
const TAGS: [&str; 3] = ["x", "y", "z"];
const REGIONS: [&str; 2] = ["eu", "us"];
const PROTOCOLS: [Protocol; 2] = [Protocol::Http, Protocol::Grpc];
const HEALTH: [HealthStatus; 4] = [
    HealthStatus::Passing,
    HealthStatus::Warning,
    HealthStatus::Critical,
    HealthStatus::Unknown,
];

#[derive(Debug, Clone)]
struct Def {
    name: usize,
    version: usize,
    tags: Vec<bool>,
    region: Option<usize>,
    protocol: usize,
    health: usize,
}

#[derive(Debug, Clone)]
struct Q {
    name: Option<usize>,
    req: Option<usize>,
    tags: Vec<bool>,
    region: Option<usize>,
    protocol: Option<usize>,
    healthy_only: bool,
}

fn def() -> impl Strategy<Value = Def> {
    (
        0..3usize,
        0..4usize,
        proptest::collection::vec(any::<bool>(), 3),
        proptest::option::of(0..2usize),
        0..2usize,
        0..4usize,
    )
        .prop_map(|(name, version, tags, region, protocol, health)| Def {
            name,
            version,
            tags,
            region,
            protocol,
            health,
        })
}

fn query() -> impl Strategy<Value = Q> {
    (
        proptest::option::of(0..3usize),
        proptest::option::of(0..4usize),
        proptest::collection::vec(prop::bool::weighted(0.3), 3),
        proptest::option::of(0..2usize),
        proptest::option::of(0..2usize),
        any::<bool>(),
    )
        .prop_map(|(name, req, tags, region, protocol, healthy_only)| Q {
            name,
            req,
            tags,
            region,
            protocol,
            healthy_only,
        })
}

fn brute_force(q: &Q, d: &Def) -> bool {
    if q.name.is_some_and(|n| n != d.name) {
        return false;
    }
    if let Some(r) = q.req {
        let req = semver::VersionReq::parse(REQS[r]).unwrap();
        match VERSIONS[d.version] {
            Some(v) if req.matches(&semver::Version::parse(v).unwrap()) => {}
            _ => return false,
        }
    }
    if q.tags.iter().zip(&d.tags).any(|(want, has)| *want && !*has) {
        return false;
    }
    if q.region.is_some() && q.region != d.region {
        return false;
    }
    if q.protocol.is_some_and(|p| p != d.protocol) {
        return false;
    }
    !q.healthy_only
        || matches!(
            HEALTH[d.health],
            HealthStatus::Passing | HealthStatus::Warning
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn find_services_equals_brute_force(defs in proptest::collection::vec(def(), 0..40), queries in proptest::collection::vec(query(), 1..20)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let registry = ServiceRegistry::builder().build().await.unwrap();
            let mut registered: Vec<(ServiceInstance, Def)> = Vec::new();
            for (i, d) in defs.iter().enumerate() {
                let mut sd = ServiceDefinition::new(NAMES[d.name], "localhost", 1 + i as u16).protocol(PROTOCOLS[d.protocol]);
                if let Some(v) = VERSIONS[d.version] {
                    sd = sd.version(v);
                }
                for (t, on) in TAGS.iter().zip(&d.tags) {
                    if *on {
                        sd = sd.tag(*t);
                    }
                }
                if let Some(r) = d.region {
                    sd = sd.metadata("region", REGIONS[r]);
                }
                let instance = registry.register(sd).await.unwrap();
                registry.set_health_status(instance.id(), HEALTH[d.health]).unwrap();
                registered.push((instance, d.clone()));
            }
            for q in &queries {
                let mut query = match q.name {
                    Some(n) => Query::name(NAMES[n]),
                    None => Query::any(),
                };
                if let Some(r) = q.req {
                    query = query.version(REQS[r]).unwrap();
                }
                for (t, on) in TAGS.iter().zip(&q.tags) {
                    if *on {
                        query = query.tag(*t);
                    }
                }
                if let Some(r) = q.region {
                    query = query.metadata("region", REGIONS[r]);
                }
                if let Some(p) = q.protocol {
                    query = query.protocol(PROTOCOLS[p]);
                }
                if q.healthy_only {
                    query = query.healthy_only();
                }
                let got: Vec<String> = registry.find_services(&query).iter().map(|i| i.id().to_string()).collect();
                let mut want: Vec<String> = registered
                    .iter()
                    .filter(|(_, d)| brute_force(q, d))
                    .map(|(i, _)| i.id().to_string())
                    .collect();
                want.sort();
                prop_assert_eq!(got, want, "query {:?}", q);
            }
            Ok(())
        })?;
    }
}
