//! IPVS requests from a difference, each with the requests that undo it: IPVS has no
//! transactions, so a refused request is answered by undoing those before it, which keeps
//! the previous state as the `Dataplane` contract asks.
//!
//! Graceful termination is decided here: a real server that leaves a TCP virtual server gets
//! weight 0 and drains (its connections go on, new ones go elsewhere); it is deleted once the
//! kernel counts no connection ([`Draining`]). UDP and SCTP real servers go at once, as
//! upstream.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use kproxy_core::Protocol;

use crate::model::{IpvsOp, RealServer, RealServerStatus, ServiceKey};
use crate::render::DesiredService;

/// Real servers at weight 0 waiting for their connections to end, per virtual server.
pub(crate) type Draining = BTreeMap<ServiceKey, BTreeSet<(IpAddr, u16)>>;

/// Requests in order, each with its undo.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub(crate) ops: Vec<IpvsOp>,
    undo: Vec<Vec<IpvsOp>>,
}

impl Plan {
    fn push(&mut self, op: IpvsOp, undo: Vec<IpvsOp>) {
        self.ops.push(op);
        self.undo.push(undo);
    }

    /// The requests that undo the first `applied` ones and those of `also`, latest first.
    pub(crate) fn undo(&self, applied: usize, also: &[usize]) -> Vec<IpvsOp> {
        let mut indices: Vec<usize> = (0..applied.min(self.undo.len())).collect();
        indices.extend(also.iter().copied().filter(|i| *i < self.undo.len()));
        indices.sort_unstable();
        indices.dedup();
        indices
            .into_iter()
            .rev()
            .flat_map(|i| self.undo[i].iter().cloned())
            .collect()
    }

    fn add_service(&mut self, wanted: &DesiredService) {
        let key = wanted.server.key;
        self.push(
            IpvsOp::AddService(wanted.server.clone()),
            vec![IpvsOp::DeleteService(key)],
        );
        for real in &wanted.reals {
            self.push(
                IpvsOp::AddServer(key, *real),
                vec![IpvsOp::DeleteServer(key, *real)],
            );
        }
    }

    /// Deletes a virtual server whose real servers are `reals` (to restore it on undo).
    pub(crate) fn delete_service(
        &mut self,
        server: &crate::model::VirtualServer,
        reals: &[RealServer],
    ) {
        let mut undo = vec![IpvsOp::AddService(server.clone())];
        undo.extend(reals.iter().map(|r| IpvsOp::AddServer(server.key, *r)));
        self.push(IpvsOp::DeleteService(server.key), undo);
    }

    fn set_weight(&mut self, key: ServiceKey, real: RealServer, weight: u32) {
        self.push(
            IpvsOp::EditServer(key, RealServer { weight, ..real }),
            vec![IpvsOp::EditServer(key, real)],
        );
    }

    fn delete_server(&mut self, key: ServiceKey, real: RealServer) {
        self.push(
            IpvsOp::DeleteServer(key, real),
            vec![IpvsOp::AddServer(key, real)],
        );
    }

    /// Makes the real servers of `wanted` (an existing virtual server) equal its wish, from
    /// what the kernel holds (`current`, weights included).
    fn converge_servers(
        &mut self,
        wanted: &DesiredService,
        current: &[RealServer],
        draining: &mut Draining,
    ) {
        let key = wanted.server.key;
        let current: BTreeMap<(IpAddr, u16), RealServer> =
            current.iter().map(|r| (r.key(), *r)).collect();
        for real in &wanted.reals {
            match current.get(&real.key()) {
                None => self.push(
                    IpvsOp::AddServer(key, *real),
                    vec![IpvsOp::DeleteServer(key, *real)],
                ),
                Some(have) if have.weight != real.weight => {
                    self.set_weight(key, *have, real.weight);
                }
                Some(_) => {}
            }
            if let Some(set) = draining.get_mut(&key) {
                set.remove(&real.key());
            }
        }
        let wanted_keys: BTreeSet<(IpAddr, u16)> = wanted.reals.iter().map(|r| r.key()).collect();
        for (server, have) in &current {
            if wanted_keys.contains(server) {
                continue;
            }
            if wanted.protocol == Protocol::Tcp {
                if have.weight != 0 {
                    self.set_weight(key, *have, 0);
                }
                draining.entry(key).or_default().insert(*server);
            } else {
                self.delete_server(key, *have);
            }
        }
        if draining.get(&key).is_some_and(BTreeSet::is_empty) {
            draining.remove(&key);
        }
    }
}

/// The requests that take one virtual server from `before` to `after` (what the last sync
/// programmed and what is wanted now), given the real servers draining.
pub(crate) fn change_service(
    plan: &mut Plan,
    key: ServiceKey,
    before: Option<&DesiredService>,
    after: Option<&DesiredService>,
    draining: &mut Draining,
) {
    match (before, after) {
        (None, None) => {}
        (None, Some(after)) => plan.add_service(after),
        (Some(before), None) => {
            let mut reals: Vec<RealServer> = before.reals.iter().copied().collect();
            reals.extend(
                draining
                    .remove(&key)
                    .into_iter()
                    .flatten()
                    .map(|(addr, port)| RealServer {
                        addr,
                        port,
                        weight: 0,
                    }),
            );
            plan.delete_service(&before.server, &reals);
        }
        (Some(before), Some(after)) => {
            if before.server != after.server {
                plan.push(
                    IpvsOp::EditService(after.server.clone()),
                    vec![IpvsOp::EditService(before.server.clone())],
                );
            }
            let mut current: Vec<RealServer> = before.reals.iter().copied().collect();
            if let Some(set) = draining.get(&key) {
                current.extend(set.iter().map(|&(addr, port)| RealServer {
                    addr,
                    port,
                    weight: 0,
                }));
            }
            plan.converge_servers(after, &current, draining);
        }
    }
}

/// The requests that make an existing virtual server (as the kernel lists it, with its real
/// servers) equal `wanted`, at a full sync.
pub(crate) fn converge_existing(
    plan: &mut Plan,
    existing: &crate::model::VirtualServer,
    current: &[RealServerStatus],
    wanted: &DesiredService,
    draining: &mut Draining,
) {
    if *existing != wanted.server {
        plan.push(
            IpvsOp::EditService(wanted.server.clone()),
            vec![IpvsOp::EditService(existing.clone())],
        );
    }
    let current: Vec<RealServer> = current.iter().map(|status| status.server).collect();
    plan.converge_servers(wanted, &current, draining);
}

/// Adds a virtual server that the kernel lacks, at a full sync.
pub(crate) fn add_missing(plan: &mut Plan, wanted: &DesiredService) {
    plan.add_service(wanted);
}

/// The deletions of drained real servers: those of `draining` the kernel counts no
/// connection for. Real servers the kernel no longer lists are forgotten.
pub(crate) fn reap(
    plan: &mut Plan,
    key: ServiceKey,
    listed: &[RealServerStatus],
    draining: &mut Draining,
) {
    let Some(set) = draining.get_mut(&key) else {
        return;
    };
    let listed: BTreeMap<(IpAddr, u16), &RealServerStatus> =
        listed.iter().map(|s| (s.server.key(), s)).collect();
    set.retain(|server| match listed.get(server) {
        None => false,
        Some(status) if status.active == 0 && status.inactive == 0 => {
            plan.delete_server(key, status.server);
            false
        }
        Some(_) => true,
    });
    if set.is_empty() {
        draining.remove(&key);
    }
}
