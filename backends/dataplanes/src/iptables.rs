//! The iptables mode: which variant to drive, the preflight of its tools, and the build.
//! The ipvs mode picks and checks the variant of its helper rules with the same functions.

use kproxy_core::IpFamily;
use kproxy_iptables::{Tool, Variant};

use crate::error::Error;
use crate::options::{IptablesVariant, ModeOptions};
use crate::target::{Target, on_path};

impl From<IptablesVariant> for Variant {
    fn from(variant: IptablesVariant) -> Self {
        match variant {
            IptablesVariant::Nft => Variant::Nft,
            IptablesVariant::Legacy => Variant::Legacy,
        }
    }
}

impl From<Variant> for IptablesVariant {
    fn from(variant: Variant) -> Self {
        match variant {
            Variant::Nft => IptablesVariant::Nft,
            Variant::Legacy => IptablesVariant::Legacy,
        }
    }
}

/// The variant to drive in `target`, and why (for the log).
pub(crate) fn pick_variant(
    forced: Option<IptablesVariant>,
    target: &Target,
) -> (IptablesVariant, String) {
    if let Some(variant) = forced {
        return (variant, "forced, not detected".to_owned());
    }
    // What the detection saw, to say why it chose: a hint chain's tool, or the rule counts.
    let mut hint_in: Option<String> = None;
    let mut rules = [0usize; 2];
    let detected = Variant::detect(|tool, args| {
        let output = target.run(tool, args).ok();
        if let Some(text) = &output {
            let legacy = usize::from(tool.contains("-legacy-"));
            rules[legacy] += text.lines().filter(|l| l.starts_with("-A ")).count();
            if hint_in.is_none()
                && text.lines().any(|line| {
                    line.starts_with(":KUBE-IPTABLES-HINT")
                        || line.starts_with(":KUBE-KUBELET-CANARY")
                })
            {
                hint_in = Some(tool.to_owned());
            }
        }
        output
    });
    let reason = match hint_in {
        Some(tool) => format!("detected: {tool} lists kubelet's hint chain"),
        None => format!(
            "detected: no kubelet hint chain; {} rules in the nft variant, {} in the legacy one{}",
            rules[0],
            rules[1],
            if rules[0] == rules[1] {
                " (a tie goes to nft)"
            } else {
                ""
            }
        ),
    };
    (detected.into(), reason)
}

/// The tools the dataplane runs for `families`, with the arguments that make each answer
/// without changing anything: `*-save -t nat` also asks the kernel for the nat table.
fn probes(variant: Variant, families: &[IpFamily]) -> Vec<(&'static str, &'static [&'static str])> {
    let mut probes = Vec::new();
    for family in families {
        probes.push((variant.binary(*family, Tool::Save), &["-t", "nat"][..]));
        probes.push((variant.binary(*family, Tool::Restore), &["--version"][..]));
        probes.push((variant.binary(*family, Tool::Iptables), &["--version"][..]));
    }
    probes
}

/// Whether `sysctl` is needed: to let node ports answer on localhost (IPv4 only).
fn needs_sysctl(options: &ModeOptions, families: &[IpFamily]) -> bool {
    options.localhost_node_ports && families.contains(&IpFamily::V4)
}

/// Checks that `variant`'s tools answer in `target` for `families`.
fn check(
    variant: IptablesVariant,
    options: &ModeOptions,
    families: &[IpFamily],
    target: &Target,
) -> Result<(), Error> {
    for (tool, args) in probes(variant.into(), families) {
        target.run(tool, args)?;
    }
    if needs_sysctl(options, families) && !on_path("sysctl") {
        return Err(Error::MissingTool {
            tool: "sysctl".to_owned(),
            package: crate::target::package_of("sysctl"),
        });
    }
    Ok(())
}

/// The preflight: picks the variant and checks its tools in `target`.
pub(crate) fn preflight(
    options: &ModeOptions,
    families: &[IpFamily],
    target: &Target,
) -> Result<(IptablesVariant, String), Error> {
    let (variant, reason) = pick_variant(options.iptables_variant, target);
    check(variant, options, families, target)?;
    Ok((variant, reason))
}

/// Checks that the tools are installed (on `PATH`), running none of them: those of the
/// forced variant, or of either variant when it is to be detected.
pub(crate) fn require_tools(options: &ModeOptions) -> Result<(), Error> {
    let families = [IpFamily::V4, IpFamily::V6];
    let missing = |variant: IptablesVariant| {
        let mut tools: Vec<&'static str> = probes(variant.into(), &families)
            .into_iter()
            .map(|(tool, _)| tool)
            .collect();
        if needs_sysctl(options, &families) {
            tools.push("sysctl");
        }
        tools.into_iter().find(|tool| !on_path(tool))
    };
    let candidates: &[IptablesVariant] = match &options.iptables_variant {
        Some(variant) => std::slice::from_ref(variant),
        None => &IptablesVariant::ALL,
    };
    let mut first_missing = None;
    for variant in candidates {
        match missing(*variant) {
            None => return Ok(()),
            Some(tool) => {
                first_missing.get_or_insert(tool);
            }
        }
    }
    let tool = first_missing.unwrap_or("iptables");
    Err(Error::MissingTool {
        tool: tool.to_owned(),
        package: crate::target::package_of(tool),
    })
}

/// Builds the iptables dataplane for `target` after its preflight, logging the variant.
#[cfg(feature = "iptables")]
pub(crate) fn build(
    config: &kproxy_core::ProxyConfig,
    options: &ModeOptions,
    target: &Target,
) -> Result<crate::options::Built, Error> {
    use std::sync::Arc;

    use kproxy_iptables::{IptablesCommand, IptablesConfig, IptablesDataplane};

    use crate::options::Built;

    let (variant, reason) = preflight(options, &config.ip_families, target)?;
    tracing::info!(
        variant = variant.name(),
        "iptables mode: using the iptables-{variant} tools ({reason})"
    );
    let kernel = match target {
        Target::Current => IptablesCommand::current_netns(variant.into()),
        Target::Netns(name) => IptablesCommand::in_netns(variant.into(), name),
    };
    let dataplane = IptablesDataplane::new(
        config.clone(),
        IptablesConfig {
            localhost_node_ports: options.localhost_node_ports,
        },
        Box::new(kernel),
    );
    let stats = dataplane.stats();
    let mut built = Built::plain(Box::new(dataplane));
    built.iptables_stats = Some(Arc::clone(&stats));
    built.iptables_variant = Some(variant);
    Ok(built)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variants_convert_both_ways() {
        for variant in IptablesVariant::ALL {
            let backend: Variant = variant.into();
            assert_eq!(backend.name(), variant.name());
            assert_eq!(IptablesVariant::from(backend), variant);
        }
    }

    #[test]
    fn the_probes_cover_every_tool_of_each_family_and_change_nothing() {
        let probes = probes(Variant::Legacy, &[IpFamily::V4, IpFamily::V6]);
        let tools: Vec<&str> = probes.iter().map(|(tool, _)| *tool).collect();
        assert_eq!(
            tools,
            [
                "iptables-legacy-save",
                "iptables-legacy-restore",
                "iptables-legacy",
                "ip6tables-legacy-save",
                "ip6tables-legacy-restore",
                "ip6tables-legacy",
            ]
        );
        for (_, args) in probes {
            assert!(args == ["-t", "nat"] || args == ["--version"], "{args:?}");
        }
    }

    #[test]
    fn a_forced_variant_is_taken_without_running_anything() {
        // A namespace that does not exist: any tool run there would fail.
        let target = Target::Netns("kpt-no-such-namespace".into());
        let (variant, reason) = pick_variant(Some(IptablesVariant::Legacy), &target);
        assert_eq!(variant, IptablesVariant::Legacy);
        assert_eq!(reason, "forced, not detected");
    }
}
