//! Removing what any mode of this proxy (or upstream kube-proxy in that mode) left in a
//! namespace: our nftables tables, the KUBE-* chains of both iptables variants, KUBE-* ipsets,
//! and the IPVS services on `kube-ipvs0` with the link itself. Upstream does this with
//! `--cleanup` and when it starts in another mode than before.
//!
//! The iptables, ipset and `kube-ipvs0` parts live here (they also remove upstream's
//! leftovers, whose names differ in detail); the IPVS mode's own objects are removed by its
//! dataplane's cleanup (feature `ipvs`), which tells its virtual servers from another
//! agent's, and only when the kernel has IPVS (without it none can exist). A tool that is not
//! installed means that kind of leftover cannot have been made through it: that part is
//! skipped (logged at debug), never an error.

mod iptables;
mod ipvs;

use std::fmt;

use crate::error::Error;
use crate::target::Target;

/// What [`cleanup`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanupReport {
    /// One line per object or group of objects removed, e.g. `nftables table ip kube-proxy`.
    pub removed: Vec<String>,
    /// Kinds of leftovers skipped because their tool is not installed, with the tool.
    pub skipped: Vec<String>,
}

impl fmt::Display for CleanupReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.removed.is_empty() {
            f.write_str("nothing to remove")
        } else {
            write!(f, "removed {}", self.removed.join("; "))
        }
    }
}

impl CleanupReport {
    /// Records a part's result: a missing tool is a skip, anything else an error.
    fn part(&mut self, what: &str, result: Result<Vec<String>, Error>) -> Result<(), Error> {
        match result {
            Ok(removed) => {
                self.removed.extend(removed);
                Ok(())
            }
            Err(error) if error.is_missing_tool() => {
                tracing::debug!(%error, "skipping {what} leftovers");
                self.skipped.push(format!("{what}: {error}"));
                Ok(())
            }
            Err(error) => Err(error),
        }
    }
}

/// Removes every mode's leftovers from `target`.
///
/// # Errors
///
/// The first tool that failed, with its own message; the parts before it are removed.
pub async fn cleanup(target: &Target) -> Result<CleanupReport, Error> {
    let mut report = CleanupReport::default();
    let tables = nftables_tables(target).await;
    report.part("nftables", tables)?;
    // Rules first: they reference the ipsets, which cannot be destroyed while in use.
    for variant in iptables::VARIANTS {
        report.part(variant.save, iptables::cleanup(target, variant))?;
    }
    // After the chains (the sets are then unused), before the sets (the node-port sets tell
    // this mode's node-port virtual servers from another agent's).
    ipvs_mode(target, &mut report).await?;
    report.part("ipset", ipset(target))?;
    report.part("ipvs", ipvs::cleanup(target))?;
    Ok(report)
}

/// The IPVS mode's own leftovers, through its dataplane's cleanup, when the kernel has IPVS.
#[cfg(feature = "ipvs")]
async fn ipvs_mode(target: &Target, report: &mut CleanupReport) -> Result<(), Error> {
    match crate::ipvs::cleanup(target).await {
        Ok(None) => {
            report
                .skipped
                .push("ipvs mode: the kernel has no IPVS".to_owned());
            Ok(())
        }
        Ok(Some(removed)) => report.part("ipvs mode", Ok(removed)),
        Err(error) => report.part("ipvs mode", Err(error)),
    }
}

/// Without the IPVS backend only the services on `kube-ipvs0`'s addresses are removed (the
/// last part).
#[cfg(not(feature = "ipvs"))]
async fn ipvs_mode(_: &Target, _: &mut CleanupReport) -> Result<(), Error> {
    Ok(())
}

/// Our `ip`/`ip6 kube-proxy` tables.
async fn nftables_tables(target: &Target) -> Result<Vec<String>, Error> {
    let listing = target.run("nft", &["list", "tables"])?;
    let ours: Vec<String> = listing
        .lines()
        .filter(|line| matches!(line.trim(), "table ip kube-proxy" | "table ip6 kube-proxy"))
        .map(|line| format!("nftables {}", line.trim()))
        .collect();
    if ours.is_empty() {
        return Ok(ours);
    }
    delete_nftables_tables(target).await?;
    Ok(ours)
}

#[cfg(feature = "nftables")]
async fn delete_nftables_tables(target: &Target) -> Result<(), Error> {
    use kproxy_core::{Dataplane, ProxyConfig};
    let kernel = match target {
        Target::Current => kproxy_nft::NftCommand::current_netns(),
        Target::Netns(name) => kproxy_nft::NftCommand::in_netns(name),
    };
    kproxy_nft::NftDataplane::new(ProxyConfig::default(), Box::new(kernel))
        .cleanup()
        .await
        .map_err(|error| Error::Nftables(format!("{error}: {error:?}")))
}

#[cfg(not(feature = "nftables"))]
async fn delete_nftables_tables(target: &Target) -> Result<(), Error> {
    for family in ["ip", "ip6"] {
        target
            .run("nft", &["delete", "table", family, "kube-proxy"])
            .ok();
    }
    Ok(())
}

/// ipsets named `KUBE-*` (upstream's IPVS mode makes them).
fn ipset(target: &Target) -> Result<Vec<String>, Error> {
    let names = target.run("ipset", &["list", "-n"])?;
    let mut removed = Vec::new();
    for name in names
        .lines()
        .map(str::trim)
        .filter(|n| n.starts_with("KUBE-"))
    {
        target.run("ipset", &["destroy", name])?;
        removed.push(format!("ipset {name}"));
    }
    Ok(removed)
}
