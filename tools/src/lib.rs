//! What the kube-proxy-rs developer tools share: picking the dataplane under test by name,
//! through the dataplanes facade (the only place that knows the backends).
//!
//! A backend name is a facade mode (`nftables`, alias `nft`; `iptables`, its variant
//! detected in the node namespace, which on a fresh one is nft; `ipvs`, which needs a kernel
//! with IPVS, as the UML guest's), an iptables mode with its variant forced (`iptables-nft`,
//! `iptables-legacy`), or `none`.

use std::sync::Arc;

use kproxy_conformance::{DataplaneFactory, ModeSettings, Recording};
use kproxy_core::{Balancing, Dataplane, ProxyConfig};
use kproxy_dataplanes::{Built, IptablesVariant, Mode, ModeOptions, Target};
use kproxy_rig::{Error, Result};

/// The names `--backend` takes, for help texts: every mode of the facade, the iptables
/// variants, and `none`.
pub fn backend_help() -> String {
    let modes: Vec<String> = Mode::ALL.iter().map(ToString::to_string).collect();
    let variants: Vec<String> = ["iptables", "ipvs"]
        .iter()
        .flat_map(|mode| {
            IptablesVariant::ALL
                .iter()
                .map(move |variant| format!("{mode}-{variant}"))
        })
        .collect();
    format!(
        "{} ({} force the iptables variant; plain iptables and ipvs detect it), or `none` \
         (programs nothing)",
        modes.join(", "),
        variants.join(", ")
    )
}

/// A facade mode as a conformance factory, with an optional balancing override and, in
/// iptables mode, an optional forced variant.
#[derive(Debug, Clone, Copy)]
pub struct ModeFactory {
    /// The mode.
    pub mode: Mode,
    /// Replaces the scenario's balancing when set.
    pub balancing: Option<Balancing>,
    /// iptables mode: the variant to drive; `None` detects it in the node namespace.
    pub iptables_variant: Option<IptablesVariant>,
}

impl ModeFactory {
    /// The factory a facade backend name selects: a mode (`nftables`, `nft`, `iptables`) or
    /// `iptables-nft` / `iptables-legacy`.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] naming the known backends.
    pub fn from_name(name: &str, balancing: Option<Balancing>) -> Result<Self> {
        // `iptables-VARIANT` and `ipvs-VARIANT` force the variant of the iptables rules (the
        // IPVS mode's helper rules): a kernel without nf_tables' ip family, as the test
        // guest's, looks like a fresh nft node to the detection.
        let forced = [("iptables-", Mode::Iptables), ("ipvs-", Mode::Ipvs)]
            .into_iter()
            .find_map(|(prefix, mode)| name.strip_prefix(prefix).map(|variant| (mode, variant)));
        let (mode, iptables_variant) = match forced {
            Some((mode, variant)) => {
                let variant = variant.parse::<IptablesVariant>().map_err(|error| {
                    Error::Backend(format!("{error}; known: {}", backend_help()))
                })?;
                (mode, Some(variant))
            }
            None => (
                name.parse::<Mode>().map_err(|error| {
                    Error::Backend(format!("{error}; known: {}", backend_help()))
                })?,
                None,
            ),
        };
        Ok(Self {
            mode,
            balancing,
            iptables_variant,
        })
    }

    /// The facade's options for a scenario's mode-only `settings` (an unset
    /// `localhostNodePorts` is upstream's `true`).
    pub fn options(&self, settings: &ModeSettings) -> ModeOptions {
        ModeOptions {
            localhost_node_ports: settings.localhost_node_ports.unwrap_or(true),
            iptables_variant: self.iptables_variant,
            ..ModeOptions::default()
        }
    }

    /// Builds the dataplane for `node_netns` through the facade, with what the facade
    /// reports besides (the iptables variant it picked, the iptables stats).
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] with the facade's message.
    pub fn build_reporting(
        &self,
        config: &ProxyConfig,
        settings: &ModeSettings,
        node_netns: &str,
    ) -> Result<Built> {
        let mut config = config.clone();
        if let Some(balancing) = self.balancing {
            config.balancing = balancing;
        }
        kproxy_dataplanes::build_with(
            self.mode,
            &config,
            &self.options(settings),
            &Target::Netns(node_netns.to_owned()),
        )
        .map_err(|error| Error::Backend(error.to_string()))
    }
}

impl DataplaneFactory for ModeFactory {
    /// The mode's name (`iptables` whatever the variant, `ipvs`): scenario expectations are
    /// per mode.
    fn mode(&self) -> &str {
        self.mode.name()
    }

    /// nftables: `nft` answers here. iptables: only that the tools are installed, since the
    /// tools run in this (the machine's own) namespace, where running the legacy variant's
    /// tools would create its tables; each build checks them in its node namespace. ipvs:
    /// the same for its tools, and that the kernel has IPVS (asked, changing nothing), so
    /// that a kernel without it stops the run at once with that message.
    fn preflight(&self) -> Result<()> {
        let options = self.options(&ModeSettings::default());
        let result = match self.mode {
            Mode::Iptables => kproxy_dataplanes::require_tools(self.mode, &options),
            Mode::Ipvs => kproxy_dataplanes::require_tools(self.mode, &options)
                .and_then(|()| kproxy_dataplanes::require_kernel(self.mode, &Target::Current)),
            _ => kproxy_dataplanes::preflight(self.mode, &Target::Current),
        };
        result.map_err(|error| Error::Backend(error.to_string()))
    }

    fn build(&self, config: &ProxyConfig, node_netns: &str) -> Result<Box<dyn Dataplane>> {
        self.build_with(config, &ModeSettings::default(), node_netns)
    }

    fn build_with(
        &self,
        config: &ProxyConfig,
        settings: &ModeSettings,
        node_netns: &str,
    ) -> Result<Box<dyn Dataplane>> {
        self.build_reporting(config, settings, node_netns)
            .map(|built| built.dataplane)
    }
}

/// The factory a `--backend` name selects: `none` (alias `recording`) or a facade backend
/// ([`ModeFactory::from_name`]).
///
/// # Errors
///
/// [`Error::Backend`] naming the known backends.
pub fn factory(name: &str, balancing: Option<Balancing>) -> Result<Arc<dyn DataplaneFactory>> {
    match name {
        "none" | "recording" => Ok(Arc::new(Recording)),
        other => ModeFactory::from_name(other, balancing)
            .map(|factory| Arc::new(factory) as Arc<dyn DataplaneFactory>),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_names_pick_the_mode_and_the_iptables_variant() {
        for (name, mode, variant) in [
            ("nft", Mode::Nftables, None),
            ("nftables", Mode::Nftables, None),
            ("iptables", Mode::Iptables, None),
            ("ipvs", Mode::Ipvs, None),
            ("ipvs-legacy", Mode::Ipvs, Some(IptablesVariant::Legacy)),
            ("iptables-nft", Mode::Iptables, Some(IptablesVariant::Nft)),
            (
                "iptables-legacy",
                Mode::Iptables,
                Some(IptablesVariant::Legacy),
            ),
        ] {
            let factory = ModeFactory::from_name(name, None).expect(name);
            assert_eq!((factory.mode, factory.iptables_variant), (mode, variant));
        }
        // Expectations are per mode, whatever the variant.
        assert_eq!(factory("iptables-legacy", None).unwrap().mode(), "iptables");
        assert_eq!(factory("none", None).unwrap().mode(), "none");
        // The conformance kit matches `expectBy.ipvs` and `config.backend: ipvs` against it.
        assert_eq!(factory("ipvs", None).unwrap().mode(), "ipvs");
        assert!(backend_help().contains("ipvs"), "{}", backend_help());
        for bad in ["iptables-xt", "bpf", "ipvs-xt"] {
            let Err(error) = factory(bad, None) else {
                panic!("{bad} is not a backend");
            };
            assert!(error.to_string().contains("iptables-legacy"), "{error}");
        }
    }

    #[test]
    fn localhost_node_ports_default_to_upstreams_true() {
        let factory = ModeFactory::from_name("iptables-nft", None).unwrap();
        let options = factory.options(&ModeSettings::default());
        assert!(options.localhost_node_ports);
        assert_eq!(options.iptables_variant, Some(IptablesVariant::Nft));
        let mut settings = ModeSettings::default();
        settings.localhost_node_ports = Some(false);
        assert!(!factory.options(&settings).localhost_node_ports);
    }
}
