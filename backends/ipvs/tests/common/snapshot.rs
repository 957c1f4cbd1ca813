//! One normalized text of everything an IPVS-mode namespace holds, to compare what partial
//! syncs made with what one full sync makes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use kproxy_iptables::normalize;
use kproxy_ipvs::model::{RealServer, ServiceKey, VirtualServer};

/// What a namespace holds.
pub struct Holdings {
    /// The virtual servers and their real servers.
    pub listing: BTreeMap<ServiceKey, (VirtualServer, BTreeSet<RealServer>)>,
    /// The addresses of `kube-ipvs0`.
    pub link: Option<BTreeSet<IpAddr>>,
    /// The ipsets and their members.
    pub sets: BTreeMap<String, BTreeSet<String>>,
    /// `iptables-save` of mangle, nat and filter.
    pub tables: [String; 3],
}

/// The holdings as text: short-circuit marks renumbered in the order their rules list them
/// (marks are handed out in the order ports appear, which differs between a full sync and a
/// history of partial ones), draining real servers (weight 0) left out.
pub fn normalized(holdings: &Holdings) -> String {
    let mangle = normalize(&holdings.tables[0]);

    let mut marks: Vec<u32> = Vec::new();
    for word in mangle.split_whitespace() {
        if let Some(value) = word
            .split('/')
            .next()
            .and_then(|v| v.strip_prefix("0x"))
            .and_then(|v| u32::from_str_radix(v, 16).ok())
        {
            let mark = value & 0xffff_0000;
            if mark != 0 && !marks.contains(&mark) {
                marks.push(mark);
            }
        }
    }
    let canonical = |mark: u32| {
        let high = mark & 0xffff_0000;
        marks
            .iter()
            .position(|m| *m == high)
            .map_or(mark, |i| ((i as u32 + 1) << 16) | (mark & 0xffff))
    };
    let mut out = String::new();
    let listing: BTreeMap<String, (VirtualServer, BTreeSet<RealServer>)> = holdings
        .listing
        .clone()
        .into_iter()
        .map(|(key, (vs, reals))| {
            let key = match key {
                ServiceKey::Fwmark { family, mark } => ServiceKey::Fwmark {
                    family,
                    mark: canonical(mark),
                },
                other => other,
            };
            let reals = reals.into_iter().filter(|r| r.weight > 0).collect();
            (key.to_string(), (VirtualServer { key, ..vs }, reals))
        })
        .collect();
    for (key, (vs, reals)) in listing {
        out.push_str(&format!(
            "{key} {} flags {:#x} timeout {}\n",
            vs.scheduler, vs.flags, vs.timeout
        ));
        for real in reals {
            out.push_str(&format!("  -> {real} weight {}\n", real.weight));
        }
    }
    out.push_str(&format!("link {:?}\n", holdings.link));
    for (name, members) in &holdings.sets {
        out.push_str(&format!("set {name}: {members:?}\n"));
    }
    let mut renumbered = mangle.clone();
    for (i, mark) in marks.iter().enumerate() {
        renumbered = renumbered.replace(&format!("{mark:#x}/"), &format!("MARK{}/", i + 1));
        renumbered = renumbered.replace(
            &format!("{:#x}/", mark | 0x4000),
            &format!("MARK{}+MASQ/", i + 1),
        );
    }
    out.push_str(&renumbered);
    for table in &holdings.tables[1..] {
        out.push_str(&normalize(table));
    }
    out
}
