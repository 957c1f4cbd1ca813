//! Builds the dataplane under test for a backend name.

use kproxy_core::{Dataplane, ProxyConfig, RecordingDataplane};
use kproxy_nft::{NftCommand, NftDataplane};

use crate::error::{Error, Result};

/// The backend names [`dataplane`] knows, for help texts.
pub const BACKENDS: &[&str] = &["nft (alias nftables)", "none (alias recording)"];

/// Whether two backend names mean the same backend (`nft` and `nftables` do).
pub fn same_backend(a: &str, b: &str) -> bool {
    canonical(a) == canonical(b)
}

/// The canonical spelling of a backend name.
pub fn canonical(name: &str) -> &str {
    match name {
        "nft" | "nftables" => "nftables",
        "none" | "recording" => "none",
        other => other,
    }
}

/// Checks that the tools `backend` drives are installed (`nft` for nftables).
///
/// # Errors
///
/// [`Error::MissingTool`] naming the tool.
pub fn check_tools(backend: &str) -> Result<()> {
    match canonical(backend) {
        "nftables" => crate::netns::require_tool("nft", &["--version"]),
        _ => Ok(()),
    }
}

/// Builds the dataplane `backend` programming the namespace `node_netns` with `config`.
///
/// - `nft` / `nftables`: kproxy-nft's `NftDataplane` driving `nft` inside the namespace.
/// - `none` / `recording`: a [`RecordingDataplane`] that programs nothing, to test the kit.
///
/// # Errors
///
/// [`Error::Backend`] for an unknown backend or one not built into this crate, or when the
/// backend's tools are missing.
pub fn dataplane(
    backend: &str,
    config: &ProxyConfig,
    node_netns: &str,
) -> Result<Box<dyn Dataplane>> {
    match canonical(backend) {
        "none" => Ok(Box::new(RecordingDataplane::new())),
        "nftables" => Ok(Box::new(NftDataplane::new(
            config.clone(),
            Box::new(NftCommand::in_netns(node_netns)),
        ))),
        other => Err(Error::Backend(format!(
            "{other} is unknown; known backends: {}",
            BACKENDS.join(", ")
        ))),
    }
}
