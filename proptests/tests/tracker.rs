//! Properties of the change tracker against the reference model:
//! (1) applying every drained ChangeSet reproduces the recomputed state;
//! (2) every ChangeSet is minimal: exactly the ports whose state differs, with the right
//!     before and after.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kproxy_core::{
    ChangeSet, ConversionOptions, NamespacedName, NodeInfo, ProxyState, ServiceChangeTracker,
    ServicePortName, ServicePortState,
};
use kproxy_proptests::objects::{Event, events};
use kproxy_proptests::reference::{ObjectStore, expected_state};
use proptest::prelude::*;

use kproxy_proptests::config;

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> NamespacedName {
    NamespacedName::new(
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

fn as_map(state: &ProxyState) -> BTreeMap<ServicePortName, ServicePortState> {
    state
        .iter()
        .map(|(k, v)| (k.clone(), ServicePortState::clone(v)))
        .collect()
}

/// Feeds `events` to a tracker and a store side by side; calls `check` at every drain with
/// the change set, the expected state before it and the expected state after it.
fn replay(
    events: &[Event],
    mut check: impl FnMut(
        &ChangeSet,
        &BTreeMap<ServicePortName, ServicePortState>,
        &BTreeMap<ServicePortName, ServicePortState>,
        &ServiceChangeTracker,
    ),
) {
    let node = NodeInfo::named("node-a");
    let options = ConversionOptions::default();
    let mut tracker = ServiceChangeTracker::new(node.clone(), options.clone());
    let mut store = ObjectStore::default();
    let mut before = BTreeMap::new();
    for event in events {
        match event {
            Event::UpsertService(service) => {
                store
                    .services
                    .insert(key_of(&service.metadata), Service::clone(service));
                tracker.upsert_service(service);
            }
            Event::DeleteService(ns, name) => {
                store.services.remove(&NamespacedName::new(ns, name));
                tracker.delete_service(ns, name);
            }
            Event::UpsertSlice(slice) => {
                store
                    .slices
                    .insert(key_of(&slice.metadata), EndpointSlice::clone(slice));
                tracker.upsert_endpoint_slice(slice);
            }
            Event::DeleteSlice(ns, name) => {
                store.slices.remove(&NamespacedName::new(ns, name));
                tracker.delete_endpoint_slice(ns, name);
            }
            Event::Drain => {
                let changes = tracker.drain();
                let after = expected_state(&store, &node, &options);
                check(&changes, &before, &after, &tracker);
                before = after;
            }
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn applying_drained_changes_reproduces_the_reference_state(events in events()) {
        let mut applied = ProxyState::default();
        replay(&events, |changes, _, after, tracker| {
            applied.apply(changes);
            assert_eq!(&as_map(&applied), after, "applied change sets diverge from the reference");
            assert_eq!(&as_map(&tracker.state()), after, "tracker state diverges from the reference");
        });
    }

    #[test]
    fn every_change_set_is_minimal(events in events()) {
        replay(&events, |changes, before, after, _| {
            let differing: BTreeSet<&ServicePortName> = before
                .keys()
                .chain(after.keys())
                .filter(|key| before.get(*key) != after.get(*key))
                .collect();
            let reported: BTreeSet<&ServicePortName> = changes.iter().map(|(key, _)| key).collect();
            assert_eq!(reported, differing, "a change set must name exactly the ports that changed");
            for (key, change) in changes.iter() {
                assert_ne!(change.previous, change.current, "{key}: reported without a change");
                assert_eq!(change.previous.as_deref(), before.get(key), "{key}: wrong previous state");
                assert_eq!(change.current.as_deref(), after.get(key), "{key}: wrong current state");
            }
        });
    }

    #[test]
    fn replaying_everything_at_once_equals_draining_along_the_way(events in events()) {
        let mut last = BTreeMap::new();
        replay(&events, |_, _, after, _| last = after.clone());
        let mut fresh = ServiceChangeTracker::new(NodeInfo::named("node-a"), ConversionOptions::default());
        let mut store = ObjectStore::default();
        for event in &events {
            match event {
                Event::UpsertService(s) => { store.services.insert(key_of(&s.metadata), Service::clone(s)); }
                Event::DeleteService(ns, n) => { store.services.remove(&NamespacedName::new(ns, n)); }
                Event::UpsertSlice(s) => { store.slices.insert(key_of(&s.metadata), EndpointSlice::clone(s)); }
                Event::DeleteSlice(ns, n) => { store.slices.remove(&NamespacedName::new(ns, n)); }
                Event::Drain => {}
            }
        }
        for service in store.services.values() { fresh.upsert_service(service); }
        for slice in store.slices.values() { fresh.upsert_endpoint_slice(slice); }
        fresh.drain();
        assert_eq!(as_map(&fresh.state()), last);
    }
}
