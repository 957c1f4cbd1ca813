//! The ipvs mode: its settings, the preflight of its tools and of the kernel's IPVS, the
//! build, and its part of the cleanup of leftovers.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};

use kproxy_core::{
    ChangeSet, Dataplane, DataplaneError, Integrity, IpFamily, ProxyConfig, ProxyState, async_trait,
};
use kproxy_iptables::IptablesCommand;
use kproxy_ipvs::{
    DUMMY_LINK, IpvsConfig, IpvsDataplane, IpvsError, IpvsKernel, NetlinkIpvs, Scheduler,
    SyncReport, Timeouts,
};

use crate::error::Error;
use crate::iptables;
use crate::options::{Built, IptablesVariant, IpvsOptions, ModeOptions};
use crate::target::{Target, on_path, package_of};

/// The tools the IPVS backend runs besides the iptables ones: `ipset` for whole sets and
/// `sysctl` for the namespace's IPVS settings.
const TOOLS: [&str; 2] = ["ipset", "sysctl"];

/// The backend's settings from the facade's: the scheduler validated.
pub(crate) fn ipvs_config(options: &IpvsOptions) -> Result<IpvsConfig, Error> {
    let scheduler = Scheduler::parse(&options.scheduler)
        .map_err(|error| Error::IpvsSettings(error.to_string()))?;
    Ok(IpvsConfig {
        scheduler,
        strict_arp: options.strict_arp,
        timeouts: Timeouts {
            tcp: options.tcp_timeout,
            tcp_fin: options.tcp_fin_timeout,
            udp: options.udp_timeout,
        },
        exclude_cidrs: options.exclude_cidrs.clone(),
    })
}

/// The iptables mode's options as the helper rules need them: the variant forced or
/// detected, and no localhost node ports (an iptables-mode setting, whose `sysctl` need
/// this mode has anyway).
fn helper_rules_options(options: &ModeOptions) -> ModeOptions {
    ModeOptions {
        localhost_node_ports: false,
        ..options.clone()
    }
}

/// The real kernel of `target`.
fn kernel_of(target: &Target) -> NetlinkIpvs {
    match target {
        Target::Current => NetlinkIpvs::current_netns(),
        Target::Netns(name) => NetlinkIpvs::in_netns(name),
    }
}

/// An IPVS error with every cause under it, each said once.
fn chain(error: &IpvsError) -> String {
    kproxy_core::with_causes(error.to_string(), std::error::Error::source(error))
}

/// Runs `check` of a fresh kernel for `target` to completion on a thread of its own: the
/// build is synchronous and may be called from inside an async runtime, where blocking on
/// a future is refused. The thread is spawned by the caller's, so it is in the same network
/// namespace.
fn check_kernel(target: &Target) -> Result<(), IpvsError> {
    let mut kernel = kernel_of(target);
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|source| IpvsError::Spawn {
                        tool: "an async runtime for the IPVS check".to_owned(),
                        source,
                    })?;
                runtime.block_on(kernel.check())
            })
            .join()
            .unwrap_or_else(|_| {
                Err(IpvsError::Malformed(
                    "the IPVS kernel check panicked".to_owned(),
                ))
            })
    })
}

/// The facade's error for a failed kernel check: a tool that is not installed is
/// [`Error::MissingTool`], the rest (no IPVS first of all) [`Error::IpvsKernel`].
fn kernel_error(error: &IpvsError) -> Error {
    match error {
        IpvsError::Spawn { tool, source } if source.kind() == std::io::ErrorKind::NotFound => {
            Error::MissingTool {
                tool: tool.clone(),
                package: package_of(tool),
            }
        }
        other => Error::IpvsKernel(chain(other)),
    }
}

/// The preflight: the helper rules' iptables variant picked and its tools checked (for
/// `families`), `ipset` answering and `sysctl` installed, then the kernel's IPVS. Returns the
/// variant and why it was picked.
pub(crate) fn preflight(
    options: &ModeOptions,
    families: &[IpFamily],
    target: &Target,
) -> Result<(IptablesVariant, String), Error> {
    let picked = iptables::preflight(&helper_rules_options(options), families, target)?;
    target.run("ipset", &["version"])?;
    if !on_path("sysctl") {
        return Err(Error::MissingTool {
            tool: "sysctl".to_owned(),
            package: package_of("sysctl"),
        });
    }
    check_kernel(target).map_err(|error| kernel_error(&error))?;
    Ok(picked)
}

/// Checks that the kernel of `target` has IPVS. The backend's check then runs `ipset
/// version`, which changes nothing; its failure is the build's preflight to report.
pub(crate) fn require_kernel(target: &Target) -> Result<(), Error> {
    match check_kernel(target) {
        Ok(()) => Ok(()),
        Err(error @ IpvsError::NoIpvs(_)) => Err(Error::IpvsKernel(chain(&error))),
        // Whatever else failed is the tools' to say (the preflight of the build).
        Err(_) => Ok(()),
    }
}

/// Checks that the tools are installed, running none of them (nor asking the kernel).
pub(crate) fn require_tools(options: &ModeOptions) -> Result<(), Error> {
    iptables::require_tools(&helper_rules_options(options))?;
    match TOOLS.into_iter().find(|tool| !on_path(tool)) {
        None => Ok(()),
        Some(tool) => Err(Error::MissingTool {
            tool: tool.to_owned(),
            package: package_of(tool),
        }),
    }
}

/// Builds the IPVS dataplane for `target`. The settings are checked first (an unknown
/// scheduler, a masquerade bit the mode's marks use), so they are refused on any host, then
/// the preflight; the helper rules' variant is logged as the iptables mode logs it.
pub(crate) fn build(
    config: &ProxyConfig,
    options: &ModeOptions,
    target: &Target,
) -> Result<Built, Error> {
    let settings = ipvs_config(&options.ipvs)?;
    // The variant is not known before the preflight, nor needed to check the settings: the
    // dataplane is made again with the right one below, touching nothing either time.
    let placeholder = IptablesCommand::in_netns(kproxy_iptables::Variant::Nft, "unused");
    IpvsDataplane::new(
        config.clone(),
        settings.clone(),
        Box::new(kernel_of(target)),
        Box::new(placeholder),
    )
    .map_err(|error| Error::IpvsSettings(chain(&error)))?;
    let (variant, reason) = preflight(options, &config.ip_families, target)?;
    tracing::info!(
        variant = variant.name(),
        "ipvs mode: helper rules with the iptables-{variant} tools ({reason})"
    );
    let iptables = match target {
        Target::Current => IptablesCommand::current_netns(variant.into()),
        Target::Netns(name) => IptablesCommand::in_netns(variant.into(), name),
    };
    let dataplane = IpvsDataplane::new(
        config.clone(),
        settings,
        Box::new(kernel_of(target)),
        Box::new(iptables),
    )
    .map_err(|error| Error::IpvsSettings(chain(&error)))?;
    let reports = IpvsReports::default();
    let mut built = Built::plain(Box::new(Reporting {
        inner: dataplane,
        reports: reports.clone(),
    }));
    built.iptables_variant = Some(variant);
    built.ipvs_reports = Some(reports);
    Ok(built)
}

/// What the last successful sync of an IPVS dataplane sent to the kernel, shared with the
/// caller of the build (the dataplane itself is handed over as a `Box<dyn Dataplane>`).
#[derive(Debug, Clone, Default)]
pub struct IpvsReports {
    last: Arc<Mutex<Option<SyncReport>>>,
}

impl IpvsReports {
    /// The report of the last sync, `None` before the first and after a failed one.
    pub fn last(&self) -> Option<SyncReport> {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, report: Option<SyncReport>) {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = report;
    }
}

/// The IPVS dataplane, publishing each sync's report to [`IpvsReports`].
struct Reporting {
    inner: IpvsDataplane,
    reports: IpvsReports,
}

impl Reporting {
    fn record<T>(&self, result: Result<T, DataplaneError>) -> Result<T, DataplaneError> {
        self.reports
            .set(result.is_ok().then(|| self.inner.last_sync()));
        result
    }
}

#[async_trait]
impl Dataplane for Reporting {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn sync(
        &mut self,
        state: &ProxyState,
        changes: &ChangeSet,
    ) -> Result<(), DataplaneError> {
        let result = self.inner.sync(state, changes).await;
        self.record(result)
    }

    async fn full_sync(&mut self, state: &ProxyState) -> Result<(), DataplaneError> {
        let result = self.inner.full_sync(state).await;
        self.record(result)
    }

    async fn verify(&mut self) -> Result<Integrity, DataplaneError> {
        self.inner.verify().await
    }

    async fn cleanup(&mut self) -> Result<(), DataplaneError> {
        self.inner.cleanup().await
    }
}

/// What of this mode a namespace holds: for the cleanup's report.
#[derive(Debug, Default, PartialEq, Eq)]
struct Inventory {
    virtual_servers: usize,
    link: bool,
    sets: BTreeSet<String>,
}

async fn inventory(kernel: &mut NetlinkIpvs) -> Result<Inventory, IpvsError> {
    Ok(Inventory {
        virtual_servers: kernel.virtual_servers().await?.len(),
        link: kernel.link_addresses(DUMMY_LINK).await?.is_some(),
        sets: kernel.list_sets().await?.into_keys().collect(),
    })
}

/// Removes the IPVS mode's leftovers from `target` with the dataplane's own cleanup (only
/// what this proxy made: its chains and jumps, its virtual servers, its sets, `kube-ipvs0`).
/// `None` when the kernel has no IPVS: then no virtual server can exist, and the sets and
/// link are the other parts' to remove.
///
/// Run after the iptables part, which removes every KUBE-* chain of both variants (so the
/// sets are no longer in use, whichever variant the rules were in), and before the ipset
/// part, since the node-port sets tell this mode's node-port virtual servers from another
/// agent's.
pub(crate) async fn cleanup(target: &Target) -> Result<Option<Vec<String>>, Error> {
    let mut kernel = kernel_of(target);
    match kernel.check().await {
        Ok(()) => {}
        Err(IpvsError::NoIpvs(error)) => {
            tracing::debug!(%error, "the kernel has no IPVS: no IPVS leftovers can exist");
            return Ok(None);
        }
        Err(error) => return Err(kernel_error(&error)),
    }
    let (variant, _) = iptables::pick_variant(None, target);
    let variant: kproxy_iptables::Variant = variant.into();
    for family in [IpFamily::V4, IpFamily::V6] {
        for tool in [kproxy_iptables::Tool::Save, kproxy_iptables::Tool::Restore] {
            let binary = variant.binary(family, tool);
            if !on_path(binary) {
                return Err(Error::MissingTool {
                    tool: binary.to_owned(),
                    package: package_of(binary),
                });
            }
        }
    }
    let failed = |error: &IpvsError| Error::Ipvs(chain(error));
    let before = inventory(&mut kernel).await.map_err(|e| failed(&e))?;
    let iptables = match target {
        Target::Current => IptablesCommand::current_netns(variant),
        Target::Netns(name) => IptablesCommand::in_netns(variant, name),
    };
    let config = ProxyConfig {
        ip_families: vec![IpFamily::V4, IpFamily::V6],
        ..ProxyConfig::default()
    };
    let mut dataplane = IpvsDataplane::new(
        config,
        IpvsConfig::default(),
        Box::new(kernel_of(target)),
        Box::new(iptables),
    )
    .map_err(|e| failed(&e))?;
    dataplane.cleanup().await.map_err(|error| {
        Error::Ipvs(kproxy_core::with_causes(
            error.to_string(),
            std::error::Error::source(&error),
        ))
    })?;
    let after = inventory(&mut kernel).await.map_err(|e| failed(&e))?;
    Ok(Some(removed(&before, &after)))
}

/// The report lines for what went between two inventories.
fn removed(before: &Inventory, after: &Inventory) -> Vec<String> {
    let mut lines = Vec::new();
    let servers = before.virtual_servers.saturating_sub(after.virtual_servers);
    if servers > 0 {
        lines.push(format!("{servers} IPVS virtual server(s)"));
    }
    lines.extend(
        before
            .sets
            .difference(&after.sets)
            .map(|set| format!("ipset {set}")),
    );
    if before.link && !after.link {
        lines.push(format!("link {DUMMY_LINK}"));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_settings_map_onto_the_backends_and_an_unknown_scheduler_names_the_valid_ones() {
        let options = IpvsOptions {
            scheduler: "wlc".to_owned(),
            strict_arp: true,
            tcp_timeout: Some(std::time::Duration::from_secs(900)),
            tcp_fin_timeout: None,
            udp_timeout: Some(std::time::Duration::from_secs(30)),
            exclude_cidrs: vec!["10.9.0.0/16".parse().unwrap()],
        };
        let config = ipvs_config(&options).unwrap();
        assert_eq!(config.scheduler.name(), "wlc");
        assert!(config.strict_arp);
        assert_eq!(config.timeouts.tcp, options.tcp_timeout);
        assert_eq!(config.timeouts.tcp_fin, None);
        assert_eq!(config.timeouts.udp, options.udp_timeout);
        assert_eq!(config.exclude_cidrs, options.exclude_cidrs);
        assert_eq!(
            ipvs_config(&IpvsOptions::default())
                .unwrap()
                .scheduler
                .name(),
            "rr"
        );
        let bad = IpvsOptions {
            scheduler: "fastest".to_owned(),
            ..IpvsOptions::default()
        };
        let error = ipvs_config(&bad).unwrap_err().to_string();
        assert!(error.contains("\"fastest\""), "{error}");
        assert!(error.contains("rr, wrr, lc"), "{error}");
        assert_eq!(bad.check().unwrap_err().to_string(), error);
    }

    #[test]
    fn settings_are_refused_before_any_kernel_is_asked() {
        // A namespace that does not exist: any tool run or socket opened there would fail
        // with another message.
        let target = Target::Netns("kpt-no-such-namespace".into());
        let options = ModeOptions {
            ipvs: IpvsOptions {
                scheduler: "fastest".to_owned(),
                ..IpvsOptions::default()
            },
            ..ModeOptions::default()
        };
        let error = build(&ProxyConfig::default(), &options, &target).unwrap_err();
        assert!(matches!(error, Error::IpvsSettings(_)), "{error}");
        let config = ProxyConfig {
            masquerade_bit: 16,
            ..ProxyConfig::default()
        };
        let error = build(&config, &ModeOptions::default(), &target).unwrap_err();
        assert!(matches!(error, Error::IpvsSettings(_)), "{error}");
        assert!(error.to_string().contains("masqueradeBit 16"), "{error}");
    }

    #[test]
    fn the_cleanup_report_names_what_went() {
        let before = Inventory {
            virtual_servers: 5,
            link: true,
            sets: ["KUBE-CLUSTER-IP".to_owned(), "USER".to_owned()].into(),
        };
        let after = Inventory {
            virtual_servers: 1,
            link: false,
            sets: ["USER".to_owned()].into(),
        };
        assert_eq!(
            removed(&before, &after),
            [
                "4 IPVS virtual server(s)",
                "ipset KUBE-CLUSTER-IP",
                "link kube-ipvs0"
            ]
        );
        assert!(removed(&after, &after).is_empty());
    }
}
