//! The dataplane facade of kube-proxy-rs: the one place that knows the backends. It names the
//! proxy modes ([`Mode`]), builds a mode's [`Dataplane`] after a [`preflight`] check that
//! fails before anything is programmed, and removes every mode's leftovers ([`cleanup`]), as
//! upstream kube-proxy does with `--cleanup` and when it switches modes.
//!
//! Each backend is a Cargo feature (`nftables`, on by default). Cleanup knows every mode's
//! objects whatever the features, so a node can always be cleaned.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kproxy_dataplanes::Error> {
//! use kproxy_core::ProxyConfig;
//! use kproxy_dataplanes::{Mode, Target};
//!
//! let mode: Mode = "nftables".parse()?;
//! let dataplane = kproxy_dataplanes::build(mode, &ProxyConfig::default(), &Target::Current)?;
//! # drop(dataplane);
//! let report = kproxy_dataplanes::cleanup(&Target::Netns("node-a".into())).await?;
//! println!("{report}");
//! # Ok(()) }
//! ```

mod error;
mod leftovers;
mod mode;
mod target;

pub use error::Error;
pub use leftovers::{CleanupReport, cleanup};
pub use mode::Mode;
pub use target::Target;

use kproxy_core::{Dataplane, ProxyConfig};

/// Checks that what `mode` needs is there: its tools on `PATH` and a kernel that answers in
/// `target`. Nothing is programmed.
///
/// # Errors
///
/// [`Error::MissingTool`] naming the tool and its package, [`Error::Kernel`] with the tool's
/// own message, or [`Error::NotBuilt`] for a mode this build or this project lacks.
pub fn preflight(mode: Mode, target: &Target) -> Result<(), Error> {
    match mode {
        Mode::Nftables => target.run("nft", &["list", "tables"]).map(drop),
    }
}

/// Builds the dataplane of `mode` programming `target`, after [`preflight`].
///
/// # Errors
///
/// As [`preflight`].
pub fn build(
    mode: Mode,
    config: &ProxyConfig,
    target: &Target,
) -> Result<Box<dyn Dataplane>, Error> {
    preflight(mode, target)?;
    match mode {
        #[cfg(feature = "nftables")]
        Mode::Nftables => {
            let kernel = match target {
                Target::Current => kproxy_nft::NftCommand::current_netns(),
                Target::Netns(name) => kproxy_nft::NftCommand::in_netns(name),
            };
            Ok(Box::new(kproxy_nft::NftDataplane::new(
                config.clone(),
                Box::new(kernel),
            )))
        }
        #[cfg(not(feature = "nftables"))]
        Mode::Nftables => {
            let _ = config;
            Err(Error::NotBuilt(mode.name().to_owned()))
        }
    }
}
