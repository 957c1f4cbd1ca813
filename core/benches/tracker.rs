//! Tracker benchmarks at cluster scale: 10,000 Services × 10 endpoints.
//!
//! `cargo bench -p kproxy-core --bench tracker`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kproxy_core::convert::LABEL_SERVICE_NAME;
use kproxy_core::{ConversionOptions, NodeInfo, ServiceChangeTracker};

const SERVICES: usize = 10_000;
const ENDPOINTS: usize = 10;

fn service(i: usize) -> Service {
    Service {
        metadata: ObjectMeta {
            namespace: Some(format!("ns-{}", i % 100)),
            name: Some(format!("svc-{i}")),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some(format!("172.30.{}.{}", i / 250, i % 250 + 1)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

/// The slice of Service `i`; `ready_mask` bit `e` says whether endpoint `e` is ready.
fn slice(i: usize, ready_mask: u32) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            namespace: Some(format!("ns-{}", i % 100)),
            name: Some(format!("svc-{i}-abcde")),
            labels: Some([(LABEL_SERVICE_NAME.to_string(), format!("svc-{i}"))].into()),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: (0..ENDPOINTS)
            .map(|e| {
                let n = i * ENDPOINTS + e;
                Endpoint {
                    addresses: vec![format!("10.{}.{}.{}", n >> 16, (n >> 8) & 255, n & 255)],
                    conditions: Some(EndpointConditions {
                        ready: Some(ready_mask & (1 << e) != 0),
                        serving: Some(true),
                        terminating: Some(false),
                    }),
                    node_name: Some(format!("node-{}", n % 50)),
                    ..Default::default()
                }
            })
            .collect(),
        ports: Some(vec![EndpointPort {
            name: Some("http".into()),
            port: Some(8080),
            ..Default::default()
        }]),
    }
}

struct Cluster {
    services: Vec<Service>,
    slices: Vec<EndpointSlice>,
}

fn cluster() -> Cluster {
    Cluster {
        services: (0..SERVICES).map(service).collect(),
        slices: (0..SERVICES).map(|i| slice(i, u32::MAX)).collect(),
    }
}

fn loaded(cluster: &Cluster) -> ServiceChangeTracker {
    let mut tracker =
        ServiceChangeTracker::new(NodeInfo::named("node-0"), ConversionOptions::default());
    for s in &cluster.services {
        tracker.upsert_service(s);
    }
    for s in &cluster.slices {
        tracker.upsert_endpoint_slice(s);
    }
    tracker.drain();
    tracker
}

fn benches(c: &mut Criterion) {
    let cluster = cluster();
    let mut group = c.benchmark_group("tracker_10k_services_x10");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));

    group.bench_function("initial_load_and_drain", |b| {
        b.iter_batched(
            || ServiceChangeTracker::new(NodeInfo::named("node-0"), ConversionOptions::default()),
            |mut tracker| {
                for s in &cluster.services {
                    tracker.upsert_service(s);
                }
                for s in &cluster.slices {
                    tracker.upsert_endpoint_slice(s);
                }
                black_box(tracker.drain());
                tracker
            },
            BatchSize::PerIteration,
        );
    });

    let mut tracker = loaded(&cluster);
    let flipped = slice(4_321, u32::MAX ^ 1);
    let original = slice(4_321, u32::MAX);
    let mut toggle = false;
    group
        .sample_size(100)
        .measurement_time(Duration::from_secs(5));
    group.bench_function("one_endpoint_changed_then_drain", |b| {
        b.iter(|| {
            toggle = !toggle;
            tracker.upsert_endpoint_slice(if toggle { &flipped } else { &original });
            let changes = tracker.drain();
            assert_eq!(changes.len(), 1);
            black_box(changes);
        });
    });

    // 100,000 slice updates over the whole cluster, queued before one drain.
    let updates: Vec<EndpointSlice> = (0..100_000)
        .map(|n| slice((n * 7_919) % SERVICES, u32::MAX ^ (1 << (n % ENDPOINTS))))
        .collect();
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    group.bench_function("drain_after_100k_queued_events", |b| {
        b.iter_custom(|iterations| {
            let mut measured = Duration::ZERO;
            for _ in 0..iterations {
                for update in &updates {
                    tracker.upsert_endpoint_slice(update);
                }
                let started = Instant::now();
                black_box(tracker.drain());
                measured += started.elapsed();
                for s in &cluster.slices {
                    tracker.upsert_endpoint_slice(s);
                }
                tracker.drain();
            }
            measured
        });
    });
    group.bench_function("queue_100k_events", |b| {
        b.iter_custom(|iterations| {
            let mut measured = Duration::ZERO;
            for _ in 0..iterations {
                let started = Instant::now();
                for update in &updates {
                    tracker.upsert_endpoint_slice(update);
                }
                measured += started.elapsed();
                tracker.drain();
            }
            measured
        });
    });
    group.finish();
}

criterion_group!(tracker, benches);
criterion_main!(tracker);
