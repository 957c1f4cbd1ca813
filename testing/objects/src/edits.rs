//! Random changes to a small cluster, for the backends' incremental-equals-full checks: a
//! proptest strategy of edits (Services of each kind, with and without affinity and Local
//! policy; endpoint sets; deletions) and their application to a tracker.

use std::collections::BTreeSet;

use kproxy_core::ServiceChangeTracker;
use proptest::prelude::*;

/// The node's name in these clusters.
pub const NODE: &str = "test-hostname";

/// One change to the cluster.
#[derive(Debug, Clone)]
pub enum Edit {
    /// Creates or replaces Service `svc{index}` (cluster IP `172.30.0.{10 + index}`, port 80).
    Service {
        /// Which of four Services.
        index: usize,
        /// 0 ClusterIP, 1 NodePort, 2 LoadBalancer with a source range, 3 external IP.
        kind: u8,
        /// ClientIP affinity (60 s).
        affinity: bool,
        /// `externalTrafficPolicy: Local` (kinds 1 to 3).
        local: bool,
    },
    /// Deletes Service `svc{index}`.
    DeleteService(usize),
    /// Replaces the endpoints of `svc{index}`'s slice: (host byte, ready, on this node).
    Endpoints {
        /// Which Service.
        index: usize,
        /// The endpoints (a repeated host byte counts once; not ready means terminating).
        endpoints: Vec<(u8, bool, bool)>,
    },
    /// Deletes `svc{index}`'s slice.
    DeleteSlice(usize),
}

/// Any [`Edit`].
pub fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (0..4usize, 0..4u8, any::<bool>(), any::<bool>()).prop_map(
            |(index, kind, affinity, local)| Edit::Service {
                index,
                kind,
                affinity,
                local,
            }
        ),
        (0..4usize).prop_map(Edit::DeleteService),
        (
            0..4usize,
            proptest::collection::vec((0..6u8, any::<bool>(), any::<bool>()), 0..5)
        )
            .prop_map(|(index, endpoints)| Edit::Endpoints { index, endpoints }),
        (0..4usize).prop_map(Edit::DeleteSlice),
    ]
}

/// Applies `edit` to `tracker`.
pub fn apply_edit(tracker: &mut ServiceChangeTracker, edit: &Edit) {
    let name = |index: usize| format!("svc{index}");
    match edit {
        Edit::Service {
            index,
            kind,
            affinity,
            local,
        } => {
            let mut service = crate::service("ns", &name(*index))
                .cluster_ip(&format!("172.30.0.{}", 10 + index))
                .port("p80", 80, "TCP");
            service = match kind {
                0 => service,
                1 => service.type_("NodePort").node_port(30000 + *index as i32),
                2 => service
                    .type_("LoadBalancer")
                    .node_port(30000 + *index as i32)
                    .load_balancer_ip(&format!("5.6.7.{index}"))
                    .source_range("203.0.113.0/25"),
                _ => service.external_ip(&format!("192.168.99.{index}")),
            };
            if *local && *kind != 0 {
                service = service.external_policy_local();
            }
            if *affinity {
                service = service.client_ip_affinity(Some(60));
            }
            tracker.upsert_service(&service.build());
        }
        Edit::DeleteService(index) => tracker.delete_service("ns", &name(*index)),
        Edit::Endpoints { index, endpoints } => {
            let mut slice = crate::slice("ns", &name(*index), &format!("{}-1", name(*index)))
                .port("p80", 80, "TCP");
            let mut seen = BTreeSet::new();
            for (host, ready, local) in endpoints {
                if !seen.insert(*host) {
                    continue;
                }
                let endpoint = crate::endpoint(&format!("10.180.{index}.{host}")).node(if *local {
                    NODE
                } else {
                    "other-node"
                });
                slice = slice.endpoint(if *ready {
                    endpoint
                } else {
                    endpoint.terminating()
                });
            }
            tracker.upsert_endpoint_slice(&slice.build());
        }
        Edit::DeleteSlice(index) => {
            tracker.delete_endpoint_slice("ns", &format!("{}-1", name(*index)))
        }
    }
}
