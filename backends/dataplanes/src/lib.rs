//! The dataplane facade of kube-proxy-rs: the one place that knows the backends. It names the
//! proxy modes ([`Mode`]), builds a mode's [`Dataplane`] after a [`preflight`] check that
//! fails before anything is programmed, and removes every mode's leftovers ([`cleanup`]), as
//! upstream kube-proxy does with `--cleanup` and when it switches modes.
//!
//! Each backend is a Cargo feature (`nftables`, `iptables` and `ipvs`, all on by default).
//! Cleanup knows every mode's objects whatever the features, so a node can always be cleaned
//! (the IPVS mode's own cleanup, which tells its virtual servers from another agent's, needs
//! the `ipvs` feature; without it, the services on `kube-ipvs0`'s addresses go).
//!
//! [`build`] takes what every mode reads ([`ProxyConfig`]); [`build_with`] also takes the
//! settings of one mode only ([`ModeOptions`]: localhost node ports, the iptables variant, the
//! IPVS settings) and hands back what the caller may read besides the dataplane ([`Built`]:
//! the iptables mode's rule counts for its metrics, the variant it picked, the IPVS mode's
//! sync reports).
//!
//! ```no_run
//! # async fn demo() -> Result<(), kproxy_dataplanes::Error> {
//! use kproxy_core::ProxyConfig;
//! use kproxy_dataplanes::{IptablesVariant, Mode, ModeOptions, Target};
//!
//! let mode: Mode = "nftables".parse()?;
//! let dataplane = kproxy_dataplanes::build(mode, &ProxyConfig::default(), &Target::Current)?;
//! # drop(dataplane);
//! let options = ModeOptions {
//!     iptables_variant: Some(IptablesVariant::Legacy),
//!     ..ModeOptions::default()
//! };
//! let built = kproxy_dataplanes::build_with(
//!     Mode::Iptables,
//!     &ProxyConfig::default(),
//!     &options,
//!     &Target::Netns("node-a".into()),
//! )?;
//! # drop(built);
//! let report = kproxy_dataplanes::cleanup(&Target::Netns("node-a".into())).await?;
//! println!("{report}");
//! # Ok(()) }
//! ```

mod error;
#[cfg(any(feature = "iptables", feature = "ipvs"))]
mod iptables;
#[cfg(feature = "ipvs")]
mod ipvs;
mod leftovers;
mod mode;
mod options;
mod target;

pub use error::Error;
#[cfg(feature = "ipvs")]
pub use ipvs::IpvsReports;
#[cfg(feature = "iptables")]
pub use kproxy_iptables::{IptablesStats, Table as IptablesTable};
#[cfg(feature = "ipvs")]
pub use kproxy_ipvs::SyncReport as IpvsSyncReport;
pub use leftovers::{CleanupReport, cleanup};
pub use mode::Mode;
pub use options::{Built, IptablesVariant, IpvsOptions, ModeOptions};
pub use target::Target;

use kproxy_core::{Dataplane, IpFamily, ProxyConfig};

/// Checks that what `mode` needs is there, with the default [`ModeOptions`]: see
/// [`preflight_with`].
///
/// # Errors
///
/// As [`preflight_with`].
pub fn preflight(mode: Mode, target: &Target) -> Result<(), Error> {
    preflight_with(mode, &ModeOptions::default(), target)
}

/// Checks that what `mode` needs is there: its tools on `PATH` and a kernel that answers in
/// `target`. Nothing is programmed.
///
/// nftables: `nft list tables`. iptables: the variant is picked as [`build_with`] picks it
/// (detecting it runs the save tools of both variants), then that variant's save, restore
/// and `iptables` tools of both families must answer (`*-save -t nat`, `--version`), and
/// `sysctl` be installed when node ports answer on localhost. ipvs: the settings are valid,
/// the iptables tools of its helper rules answer as in iptables mode, `ipset version`
/// answers, `sysctl` is installed, and the kernel has IPVS (the generic netlink family
/// `IPVS` resolves).
///
/// # Errors
///
/// [`Error::MissingTool`] naming the tool and its package, [`Error::Kernel`] with the tool's
/// own message, [`Error::IpvsSettings`], [`Error::IpvsKernel`] (a kernel without IPVS), or
/// [`Error::NotBuilt`] for a mode this build lacks.
pub fn preflight_with(mode: Mode, options: &ModeOptions, target: &Target) -> Result<(), Error> {
    match mode {
        Mode::Nftables => target.run("nft", &["list", "tables"]).map(drop),
        #[cfg(feature = "iptables")]
        Mode::Iptables => {
            iptables::preflight(options, &[IpFamily::V4, IpFamily::V6], target).map(drop)
        }
        #[cfg(not(feature = "iptables"))]
        Mode::Iptables => {
            let _ = (options, IpFamily::V4);
            Err(Error::NotBuilt(mode.name().to_owned()))
        }
        #[cfg(feature = "ipvs")]
        Mode::Ipvs => {
            options.ipvs.check()?;
            ipvs::preflight(options, &[IpFamily::V4, IpFamily::V6], target).map(drop)
        }
        #[cfg(not(feature = "ipvs"))]
        Mode::Ipvs => Err(Error::NotBuilt(mode.name().to_owned())),
    }
}

/// Checks only that the tools `mode` runs are installed (on `PATH`), running none of them:
/// for callers that must not touch the kernel of the namespace they run in (the developer
/// tools, whose dataplanes program namespaces of their own; [`build_with`] checks those).
/// For iptables with the variant to detect, the tools of either variant do; ipvs needs those
/// of its helper rules, `ipset` and `sysctl` (whether the kernel has IPVS is for the build
/// to find out).
///
/// # Errors
///
/// [`Error::MissingTool`] naming the first tool missing and its package, or
/// [`Error::NotBuilt`].
pub fn require_tools(mode: Mode, options: &ModeOptions) -> Result<(), Error> {
    match mode {
        Mode::Nftables if target::on_path("nft") => Ok(()),
        Mode::Nftables => Err(Error::MissingTool {
            tool: "nft".to_owned(),
            package: target::package_of("nft"),
        }),
        #[cfg(feature = "iptables")]
        Mode::Iptables => iptables::require_tools(options),
        #[cfg(not(feature = "iptables"))]
        Mode::Iptables => {
            let _ = options;
            Err(Error::NotBuilt(mode.name().to_owned()))
        }
        #[cfg(feature = "ipvs")]
        Mode::Ipvs => ipvs::require_tools(options),
        #[cfg(not(feature = "ipvs"))]
        Mode::Ipvs => Err(Error::NotBuilt(mode.name().to_owned())),
    }
}

/// Checks only what `mode` needs of the kernel beyond its tools, changing nothing: for
/// callers that must not run the mode's preflight in the namespace they check (the developer
/// tools, in the machine's own namespace, where the legacy iptables tools would create
/// tables); at most `ipset version` runs. ipvs: the kernel has IPVS (the generic
/// netlink family `IPVS` resolves; IPVS is one kernel-wide module, so any namespace answers
/// for all). The other modes need nothing beyond their tools.
///
/// # Errors
///
/// [`Error::IpvsKernel`] for a kernel without IPVS, or [`Error::NotBuilt`].
pub fn require_kernel(mode: Mode, target: &Target) -> Result<(), Error> {
    match mode {
        #[cfg(feature = "ipvs")]
        Mode::Ipvs => ipvs::require_kernel(target),
        #[cfg(not(feature = "ipvs"))]
        Mode::Ipvs => {
            let _ = target;
            Err(Error::NotBuilt(mode.name().to_owned()))
        }
        Mode::Nftables | Mode::Iptables => Ok(()),
    }
}

/// Builds the dataplane of `mode` programming `target`, with the default [`ModeOptions`]
/// (upstream's defaults), after its preflight.
///
/// # Errors
///
/// As [`build_with`].
pub fn build(
    mode: Mode,
    config: &ProxyConfig,
    target: &Target,
) -> Result<Box<dyn Dataplane>, Error> {
    build_with(mode, config, &ModeOptions::default(), target).map(|built| built.dataplane)
}

/// Builds the dataplane of `mode` programming `target` with `options`, after its preflight
/// (for iptables, of the families in `config`), and hands it back with what else the caller
/// may read of it ([`Built`]).
///
/// iptables: the variant is `options.iptables_variant` or, when `None`, detected in `target`
/// as upstream's image does; the choice and its reason are logged at info level. ipvs: the
/// settings are checked first (an unknown scheduler, a masquerade bit of 16 or more, which
/// the mode's marks use), then its preflight; its helper rules' variant is picked and logged
/// as in iptables mode, and [`Built::ipvs_reports`] follows its syncs.
///
/// # Errors
///
/// As [`preflight_with`].
pub fn build_with(
    mode: Mode,
    config: &ProxyConfig,
    options: &ModeOptions,
    target: &Target,
) -> Result<Built, Error> {
    match mode {
        #[cfg(feature = "nftables")]
        Mode::Nftables => {
            preflight_with(mode, options, target)?;
            let kernel = match target {
                Target::Current => kproxy_nft::NftCommand::current_netns(),
                Target::Netns(name) => kproxy_nft::NftCommand::in_netns(name),
            };
            Ok(Built::plain(Box::new(kproxy_nft::NftDataplane::new(
                config.clone(),
                Box::new(kernel),
            ))))
        }
        #[cfg(not(feature = "nftables"))]
        Mode::Nftables => {
            preflight_with(mode, options, target)?;
            let _ = config;
            Err(Error::NotBuilt(mode.name().to_owned()))
        }
        #[cfg(feature = "iptables")]
        Mode::Iptables => iptables::build(config, options, target),
        #[cfg(not(feature = "iptables"))]
        Mode::Iptables => {
            let _ = (config, options, target);
            Err(Error::NotBuilt(mode.name().to_owned()))
        }
        #[cfg(feature = "ipvs")]
        Mode::Ipvs => ipvs::build(config, options, target),
        #[cfg(not(feature = "ipvs"))]
        Mode::Ipvs => {
            let _ = (config, options, target);
            Err(Error::NotBuilt(mode.name().to_owned()))
        }
    }
}
