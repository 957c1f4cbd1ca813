//! What the last syncs programmed, port by port, with reference counts for what ports share
//! (an address two Services use, a hairpin entry of an endpoint two Services select), and the
//! difference a port's new objects make.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use kproxy_core::{IpFamily, ServicePortName};

use crate::model::{ServiceKey, SetEntry};
use crate::render::{DesiredService, PortObjects};
use crate::sets::SetId;

/// An ipset entry of one family.
pub(crate) type FamilyEntry = (IpFamily, SetId, SetEntry);

/// The key of one port's objects in one family.
pub(crate) type PortKey = (ServicePortName, IpFamily);

/// What is programmed.
#[derive(Debug, Default)]
pub(crate) struct Programmed {
    ports: HashMap<PortKey, PortObjects>,
    services: HashMap<ServiceKey, (DesiredService, usize)>,
    addresses: HashMap<IpAddr, usize>,
    entries: HashMap<FamilyEntry, usize>,
    /// The node-port addresses the objects were rendered with, per family.
    pub(crate) node_port_addresses: BTreeMap<IpFamily, Vec<IpAddr>>,
}

/// What replacing ports' objects changed: each touched object with its state before.
#[derive(Debug, Default)]
pub(crate) struct Delta {
    /// Whether anything is recorded: a full sync compares with the kernel instead, and
    /// recording every object of the cluster would only cost memory.
    ignore: bool,
    services: BTreeMap<ServiceKey, Option<DesiredService>>,
    addresses: BTreeMap<IpAddr, bool>,
    entries: BTreeMap<FamilyEntry, bool>,
    /// Families whose short-circuit rules changed.
    pub(crate) short_circuit: BTreeSet<IpFamily>,
}

/// A touched virtual server: (key, before, after).
pub(crate) type ServiceChange<'a> = (
    ServiceKey,
    Option<&'a DesiredService>,
    Option<&'a DesiredService>,
);

impl Delta {
    /// One of the delta's records, unless it ignores everything.
    fn record<K>(
        &mut self,
        which: fn(&mut Delta) -> &mut BTreeMap<K, bool>,
    ) -> Option<&mut BTreeMap<K, bool>> {
        if self.ignore { None } else { Some(which(self)) }
    }

    fn addresses(&mut self) -> &mut BTreeMap<IpAddr, bool> {
        &mut self.addresses
    }

    fn entries(&mut self) -> &mut BTreeMap<FamilyEntry, bool> {
        &mut self.entries
    }

    /// A delta that records nothing (full syncs).
    pub(crate) fn ignoring() -> Self {
        Self {
            ignore: true,
            ..Self::default()
        }
    }
}

impl Programmed {
    /// Room for the objects of `ports` service ports in each family, so that a full sync
    /// does not grow the tables step by step (each step touches fresh memory, costly where a
    /// page fault is, as in a User-Mode Linux guest).
    pub(crate) fn with_capacity(ports: usize) -> Self {
        Self {
            ports: HashMap::with_capacity(ports),
            services: HashMap::with_capacity(ports),
            addresses: HashMap::with_capacity(ports),
            entries: HashMap::with_capacity(ports * 3),
            node_port_addresses: BTreeMap::new(),
        }
    }

    /// Every virtual server wanted.
    pub(crate) fn services(&self) -> impl Iterator<Item = (&ServiceKey, &DesiredService)> {
        self.services
            .iter()
            .map(|(key, (service, _))| (key, service))
    }

    /// The virtual server `key`, when wanted.
    pub(crate) fn service(&self, key: &ServiceKey) -> Option<&DesiredService> {
        self.services.get(key).map(|(service, _)| service)
    }

    /// Every address wanted on `kube-ipvs0`.
    pub(crate) fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.addresses.keys().copied()
    }

    /// Every ipset entry wanted.
    pub(crate) fn entries(&self) -> impl Iterator<Item = &FamilyEntry> {
        self.entries.keys()
    }

    /// The short-circuit rules of `family`, in port order.
    pub(crate) fn short_circuit_rules(&self, family: IpFamily) -> Vec<&String> {
        let mut ports: Vec<(&PortKey, &PortObjects)> = self
            .ports
            .iter()
            .filter(|((_, f), objects)| *f == family && !objects.short_circuit.is_empty())
            .collect();
        ports.sort_by(|a, b| a.0.cmp(b.0));
        ports
            .into_iter()
            .flat_map(|(_, objects)| &objects.short_circuit)
            .collect()
    }

    /// Replaces the objects of `key` (none: the port is gone), recording what changed.
    pub(crate) fn replace(&mut self, key: PortKey, objects: PortObjects, delta: &mut Delta) {
        let family = key.1;
        let old = self.ports.remove(&key).unwrap_or_default();
        if old.short_circuit != objects.short_circuit && !delta.ignore {
            delta.short_circuit.insert(family);
        }
        for service_key in old.services.keys() {
            self.touch_service(*service_key, delta);
            if let Some((_, count)) = self.services.get_mut(service_key) {
                *count -= 1;
                if *count == 0 {
                    self.services.remove(service_key);
                }
            }
        }
        for (service_key, service) in &objects.services {
            self.touch_service(*service_key, delta);
            let entry = self
                .services
                .entry(*service_key)
                .or_insert_with(|| (service.clone(), 0));
            // Two ports claiming one virtual server (two Services with one external IP and
            // port) is a conflict the API allows; the port written last wins.
            entry.0 = service.clone();
            entry.1 += 1;
        }
        for addr in &old.addresses {
            touch(
                &mut self.addresses,
                delta.record(Delta::addresses),
                *addr,
                false,
            );
        }
        for addr in &objects.addresses {
            touch(
                &mut self.addresses,
                delta.record(Delta::addresses),
                *addr,
                true,
            );
        }
        for (set, entry) in &old.entries {
            touch(
                &mut self.entries,
                delta.record(Delta::entries),
                (family, *set, *entry),
                false,
            );
        }
        for (set, entry) in &objects.entries {
            touch(
                &mut self.entries,
                delta.record(Delta::entries),
                (family, *set, *entry),
                true,
            );
        }
        if objects != PortObjects::default() {
            self.ports.insert(key, objects);
        }
    }

    fn touch_service(&self, key: ServiceKey, delta: &mut Delta) {
        if delta.ignore {
            return;
        }
        delta
            .services
            .entry(key)
            .or_insert_with(|| self.services.get(&key).map(|(service, _)| service.clone()));
    }

    /// The virtual servers `delta` touched, with their state before and now, where they
    /// differ.
    pub(crate) fn service_changes<'a>(&'a self, delta: &'a Delta) -> Vec<ServiceChange<'a>> {
        delta
            .services
            .iter()
            .filter_map(|(key, before)| {
                let after = self.services.get(key).map(|(service, _)| service);
                (before.as_ref() != after).then_some((*key, before.as_ref(), after))
            })
            .collect()
    }

    /// The addresses `delta` made wanted (`true`) or unwanted.
    pub(crate) fn address_changes(&self, delta: &Delta) -> (Vec<IpAddr>, Vec<IpAddr>) {
        changes(&self.addresses, &delta.addresses)
    }

    /// The entries `delta` made wanted or unwanted.
    pub(crate) fn entry_changes(&self, delta: &Delta) -> (Vec<FamilyEntry>, Vec<FamilyEntry>) {
        changes(&self.entries, &delta.entries)
    }
}

/// Counts `key` up or down, remembering in `touched` (unless ignored) whether it was wanted
/// before.
fn touch<K: Copy + Eq + std::hash::Hash + Ord>(
    counts: &mut HashMap<K, usize>,
    touched: Option<&mut BTreeMap<K, bool>>,
    key: K,
    up: bool,
) {
    if let Some(touched) = touched {
        touched
            .entry(key)
            .or_insert_with(|| counts.contains_key(&key));
    }
    if up {
        *counts.entry(key).or_default() += 1;
    } else if let Some(count) = counts.get_mut(&key) {
        *count -= 1;
        if *count == 0 {
            counts.remove(&key);
        }
    }
}

fn changes<K: Copy + Eq + std::hash::Hash + Ord>(
    counts: &HashMap<K, usize>,
    touched: &BTreeMap<K, bool>,
) -> (Vec<K>, Vec<K>) {
    let mut added = Vec::new();
    let mut removed = Vec::new();
    for (key, before) in touched {
        match (*before, counts.contains_key(key)) {
            (false, true) => added.push(*key),
            (true, false) => removed.push(*key),
            _ => {}
        }
    }
    (added, removed)
}
