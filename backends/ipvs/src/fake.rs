//! An in-memory IPVS kernel for unit tests: no root, no IPVS.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use crate::config::Timeouts;
use crate::error::IpvsError;
use crate::kernel::{ApplyError, IpvsKernel, LocalAddress};
use crate::model::{IpvsOp, RealServer, RealServerStatus, ServiceKey, SetOp, VirtualServer};

/// A virtual server and its real servers by address and port.
type Listed = (VirtualServer, BTreeMap<(IpAddr, u16), RealServerStatus>);

#[derive(Debug, Default)]
struct State {
    services: BTreeMap<ServiceKey, Listed>,
    links: BTreeMap<String, BTreeSet<IpAddr>>,
    other_addresses: Vec<LocalAddress>,
    sets: BTreeMap<String, BTreeSet<String>>,
    sysctls: BTreeMap<String, String>,
    timeouts: Timeouts,
    refuse_at: Option<usize>,
    requests: usize,
}

/// An in-memory IPVS kernel: virtual and real servers, links and addresses, ipsets (as
/// `ipset` prints their members), sysctls. Clones share one state, so a test keeps a handle
/// while the dataplane owns another.
#[derive(Debug, Clone, Default)]
pub struct FakeIpvs {
    state: Arc<Mutex<State>>,
}

fn refused(what: String) -> IpvsError {
    IpvsError::Refused {
        command: what,
        message: "refused by the fake kernel".to_owned(),
    }
}

impl FakeIpvs {
    /// A fake kernel whose namespace has `addresses` (link, address) besides the dummy link.
    pub fn with_addresses(addresses: &[(&str, IpAddr)]) -> Self {
        let fake = Self::default();
        fake.lock().other_addresses = addresses
            .iter()
            .map(|(link, addr)| LocalAddress {
                link: (*link).to_owned(),
                addr: *addr,
            })
            .collect();
        fake
    }

    /// Replaces the namespace's addresses besides the dummy link (a node that got a new one).
    pub fn set_addresses(&self, addresses: &[(&str, IpAddr)]) {
        self.lock().other_addresses = addresses
            .iter()
            .map(|(link, addr)| LocalAddress {
                link: (*link).to_owned(),
                addr: *addr,
            })
            .collect();
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The virtual servers with their real servers, as a normalized listing.
    pub fn listing(&self) -> BTreeMap<ServiceKey, (VirtualServer, BTreeSet<RealServer>)> {
        self.lock()
            .services
            .iter()
            .map(|(key, (vs, reals))| {
                (
                    *key,
                    (
                        vs.clone(),
                        reals.values().map(|status| status.server).collect(),
                    ),
                )
            })
            .collect()
    }

    /// The addresses of link `name`.
    pub fn link(&self, name: &str) -> Option<BTreeSet<IpAddr>> {
        self.lock().links.get(name).cloned()
    }

    /// The ipsets and their members.
    pub fn sets(&self) -> BTreeMap<String, BTreeSet<String>> {
        self.lock().sets.clone()
    }

    /// The sysctls written.
    pub fn sysctls(&self) -> BTreeMap<String, String> {
        self.lock().sysctls.clone()
    }

    /// The timeouts set.
    pub fn timeouts(&self) -> Timeouts {
        self.lock().timeouts
    }

    /// How many IPVS requests were applied so far.
    pub fn requests(&self) -> usize {
        self.lock().requests
    }

    /// Makes the `n`-th IPVS request from now (0: the next) fail.
    pub fn refuse_request(&self, n: usize) {
        let mut state = self.lock();
        state.refuse_at = Some(state.requests + n);
    }

    /// Sets the connection counters of a real server (a test's connections).
    pub fn set_connections(&self, key: &ServiceKey, server: (IpAddr, u16), active: u32) {
        if let Some((_, reals)) = self.lock().services.get_mut(key)
            && let Some(status) = reals.get_mut(&server)
        {
            status.active = active;
        }
    }

    /// Deletes every virtual server, as another agent's `ipvsadm -C` would.
    pub fn clear_services(&self) {
        self.lock().services.clear();
    }

    /// Adds a virtual server someone else made.
    pub fn add_foreign_service(&self, server: VirtualServer) {
        self.lock()
            .services
            .insert(server.key, (server, BTreeMap::new()));
    }

    fn apply_one(state: &mut State, op: &IpvsOp) -> Result<(), IpvsError> {
        match op {
            IpvsOp::AddService(vs) => {
                if state.services.contains_key(&vs.key) {
                    return Err(refused(op.to_string()));
                }
                state.services.insert(vs.key, (vs.clone(), BTreeMap::new()));
            }
            IpvsOp::EditService(vs) => {
                let entry = state
                    .services
                    .get_mut(&vs.key)
                    .ok_or_else(|| refused(op.to_string()))?;
                entry.0 = vs.clone();
            }
            IpvsOp::DeleteService(key) => {
                state
                    .services
                    .remove(key)
                    .ok_or_else(|| refused(op.to_string()))?;
            }
            IpvsOp::AddServer(key, rs) | IpvsOp::EditServer(key, rs) => {
                let (_, reals) = state
                    .services
                    .get_mut(key)
                    .ok_or_else(|| refused(op.to_string()))?;
                let exists = reals.contains_key(&rs.key());
                if exists == matches!(op, IpvsOp::AddServer(..)) {
                    return Err(refused(op.to_string()));
                }
                let status = reals.entry(rs.key()).or_insert(RealServerStatus {
                    server: *rs,
                    active: 0,
                    inactive: 0,
                });
                status.server = *rs;
            }
            IpvsOp::DeleteServer(key, rs) => {
                let (_, reals) = state
                    .services
                    .get_mut(key)
                    .ok_or_else(|| refused(op.to_string()))?;
                reals
                    .remove(&rs.key())
                    .ok_or_else(|| refused(op.to_string()))?;
            }
        }
        Ok(())
    }

    fn restore_line(state: &mut State, line: &str) -> Result<(), IpvsError> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let refuse = || refused(format!("ipset restore: {line}"));
        match words.as_slice() {
            [] => {}
            ["create", name, ..] => {
                state.sets.entry((*name).to_owned()).or_default();
            }
            ["add", name, entry, ..] => {
                state
                    .sets
                    .get_mut(*name)
                    .ok_or_else(refuse)?
                    .insert((*entry).to_owned());
            }
            ["del", name, entry, ..] => {
                state.sets.get_mut(*name).ok_or_else(refuse)?.remove(*entry);
            }
            ["flush", name] => state.sets.get_mut(*name).ok_or_else(refuse)?.clear(),
            ["destroy", name] => {
                state.sets.remove(*name).ok_or_else(refuse)?;
            }
            _ => return Err(refuse()),
        }
        Ok(())
    }
}

#[async_trait]
impl IpvsKernel for FakeIpvs {
    async fn check(&mut self) -> Result<(), IpvsError> {
        Ok(())
    }

    async fn virtual_servers(&mut self) -> Result<Vec<VirtualServer>, IpvsError> {
        Ok(self
            .lock()
            .services
            .values()
            .map(|(vs, _)| vs.clone())
            .collect())
    }

    async fn real_servers(&mut self, key: &ServiceKey) -> Result<Vec<RealServerStatus>, IpvsError> {
        let state = self.lock();
        let (_, reals) = state
            .services
            .get(key)
            .ok_or_else(|| refused(format!("list real servers of {key}")))?;
        Ok(reals.values().copied().collect())
    }

    async fn apply(&mut self, ops: &[IpvsOp]) -> Result<(), ApplyError> {
        let mut state = self.lock();
        for (applied, op) in ops.iter().enumerate() {
            let refuse = state.refuse_at == Some(state.requests);
            if refuse {
                state.refuse_at = None;
                return Err(ApplyError {
                    applied,
                    applied_after: Vec::new(),
                    error: refused(op.to_string()),
                });
            }
            Self::apply_one(&mut state, op).map_err(|error| ApplyError {
                applied,
                applied_after: Vec::new(),
                error,
            })?;
            state.requests += 1;
        }
        Ok(())
    }

    async fn link_addresses(&mut self, name: &str) -> Result<Option<Vec<IpAddr>>, IpvsError> {
        Ok(self
            .lock()
            .links
            .get(name)
            .map(|addrs| addrs.iter().copied().collect()))
    }

    async fn ensure_dummy_link(&mut self, name: &str) -> Result<(), IpvsError> {
        self.lock().links.entry(name.to_owned()).or_default();
        Ok(())
    }

    async fn delete_link(&mut self, name: &str) -> Result<bool, IpvsError> {
        Ok(self.lock().links.remove(name).is_some())
    }

    async fn change_link_addresses(
        &mut self,
        name: &str,
        add: &[IpAddr],
        remove: &[IpAddr],
    ) -> Result<(), IpvsError> {
        let mut state = self.lock();
        let link = state
            .links
            .get_mut(name)
            .ok_or_else(|| refused(format!("change addresses of {name}")))?;
        link.extend(add.iter().copied());
        for addr in remove {
            link.remove(addr);
        }
        Ok(())
    }

    async fn local_addresses(&mut self) -> Result<Vec<LocalAddress>, IpvsError> {
        let state = self.lock();
        let mut addresses = state.other_addresses.clone();
        for (link, addrs) in &state.links {
            addresses.extend(addrs.iter().map(|&addr| LocalAddress {
                link: link.clone(),
                addr,
            }));
        }
        Ok(addresses)
    }

    async fn list_sets(&mut self) -> Result<BTreeMap<String, Vec<String>>, IpvsError> {
        Ok(self
            .lock()
            .sets
            .iter()
            .map(|(name, members)| (name.clone(), members.iter().cloned().collect()))
            .collect())
    }

    async fn restore_sets(&mut self, script: &str) -> Result<(), IpvsError> {
        let mut state = self.lock();
        // `ipset restore` applies line by line; a refused line leaves the earlier ones.
        for line in script.lines() {
            Self::restore_line(&mut state, line)?;
        }
        Ok(())
    }

    async fn update_sets(&mut self, ops: &[SetOp]) -> Result<(), IpvsError> {
        let mut state = self.lock();
        for op in ops {
            let members = state
                .sets
                .get_mut(op.set.name)
                .ok_or_else(|| refused(format!("update set {}", op.set.name)))?;
            if op.add {
                members.insert(op.entry.to_string());
            } else {
                members.remove(&op.entry.to_string());
            }
        }
        Ok(())
    }

    async fn set_timeouts(&mut self, timeouts: &Timeouts) -> Result<(), IpvsError> {
        self.lock().timeouts = *timeouts;
        Ok(())
    }

    async fn set_sysctls(&mut self, settings: &[(&str, &str)]) -> Result<(), IpvsError> {
        let mut state = self.lock();
        for (key, value) in settings {
            state.sysctls.insert((*key).to_owned(), (*value).to_owned());
        }
        Ok(())
    }
}
