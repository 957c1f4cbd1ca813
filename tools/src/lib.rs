//! What the kube-proxy-rs developer tools share: picking the dataplane under test by name,
//! through the dataplanes facade (the only place that knows the backends).

use std::sync::Arc;

use kproxy_conformance::{DataplaneFactory, Recording};
use kproxy_core::{Balancing, Dataplane, ProxyConfig};
use kproxy_dataplanes::{Mode, Target};
use kproxy_rig::{Error, Result};

/// The names `--backend` takes, for help texts: every mode of the facade, and `none`.
pub fn backend_help() -> String {
    let modes: Vec<String> = Mode::ALL.iter().map(ToString::to_string).collect();
    format!("{} (or `none`: programs nothing)", modes.join(", "))
}

/// A facade mode as a conformance factory, with an optional balancing override.
#[derive(Debug, Clone, Copy)]
pub struct ModeFactory {
    /// The mode.
    pub mode: Mode,
    /// Replaces the scenario's balancing when set.
    pub balancing: Option<Balancing>,
}

impl DataplaneFactory for ModeFactory {
    fn mode(&self) -> &str {
        self.mode.name()
    }

    fn preflight(&self) -> Result<()> {
        kproxy_dataplanes::preflight(self.mode, &Target::Current)
            .map_err(|error| Error::Backend(error.to_string()))
    }

    fn build(&self, config: &ProxyConfig, node_netns: &str) -> Result<Box<dyn Dataplane>> {
        let mut config = config.clone();
        if let Some(balancing) = self.balancing {
            config.balancing = balancing;
        }
        kproxy_dataplanes::build(self.mode, &config, &Target::Netns(node_netns.to_owned()))
            .map_err(|error| Error::Backend(error.to_string()))
    }
}

/// The factory a `--backend` name selects: `none` (alias `recording`) or a facade mode.
///
/// # Errors
///
/// [`Error::Backend`] naming the known backends.
pub fn factory(name: &str, balancing: Option<Balancing>) -> Result<Arc<dyn DataplaneFactory>> {
    match name {
        "none" | "recording" => Ok(Arc::new(Recording)),
        other => other
            .parse::<Mode>()
            .map(|mode| Arc::new(ModeFactory { mode, balancing }) as Arc<dyn DataplaneFactory>)
            .map_err(|error| Error::Backend(format!("{error}; known: {}", backend_help()))),
    }
}
