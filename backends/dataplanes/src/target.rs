//! Which network namespace a dataplane programs, and running a tool there.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::error::Error;

/// The network namespace to program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The one this process runs in (on a node: the node's own; with the binary's `--netns`,
    /// the one it entered at start).
    Current,
    /// A named namespace (`ip netns exec NAME ...`), as tests and tools use.
    Netns(String),
}

/// The Debian package a tool comes from, for error messages.
pub(crate) fn package_of(tool: &str) -> &'static str {
    match tool {
        "nft" => "nftables",
        "sysctl" => "procps",
        "ipset" => "ipset",
        "ipvsadm" => "ipvsadm",
        "ip" => "iproute2",
        _ => "iptables",
    }
}

/// Whether `tool` is an executable file in a `PATH` directory.
pub(crate) fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| Path::new(&dir).join(tool).is_file())
    })
}

impl Target {
    /// Runs `tool args` in this namespace and returns its standard output.
    ///
    /// # Errors
    ///
    /// [`Error::MissingTool`] when it (or `ip`, for a named namespace) is not installed,
    /// [`Error::Kernel`] with its standard error when it fails.
    pub(crate) fn run(&self, tool: &str, args: &[&str]) -> Result<String, Error> {
        self.run_with_input(tool, args, None)
    }

    /// As [`run`](Self::run), with `input` on its standard input.
    pub(crate) fn run_with_input(
        &self,
        tool: &str,
        args: &[&str],
        input: Option<&str>,
    ) -> Result<String, Error> {
        let mut needed = vec![tool];
        let mut command = match self {
            Target::Current => Command::new(tool),
            Target::Netns(name) => {
                needed.push("ip");
                let mut command = Command::new("ip");
                command.args(["netns", "exec", name, tool]);
                command
            }
        };
        if let Some(missing) = needed.into_iter().find(|tool| !on_path(tool)) {
            return Err(Error::MissingTool {
                tool: missing.to_owned(),
                package: package_of(missing),
            });
        }
        command.args(args);
        let line = format!("{tool} {}", args.join(" "));
        command
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let spawn = |source| Error::Spawn {
            command: line.clone(),
            source,
        };
        let mut child = command.spawn().map_err(spawn)?;
        if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin.write_all(input.as_bytes()).map_err(spawn)?;
        }
        let output = child.wait_with_output().map_err(spawn)?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(Error::Kernel {
                command: line,
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            })
        }
    }
}
