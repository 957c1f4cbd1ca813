//! The tools this backend runs (`ipset`, `sysctl`), in the namespace it programs
//! (`ip netns exec NAME …`), each with a timeout and its own message when it refuses.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::error::IpvsError;

/// How long one tool run may take: an `ipset restore` of a large cluster's sets takes
/// seconds.
pub(crate) const TOOL_TIMEOUT: Duration = Duration::from_secs(300);

/// At most this many lines of a tool's stderr go into an error.
const STDERR_LINES: usize = 5;

/// Runs tools in the current or a named namespace.
#[derive(Debug, Clone)]
pub(crate) struct Tools {
    netns: Option<String>,
    timeout: Duration,
}

impl Tools {
    pub(crate) fn new(netns: Option<&str>) -> Self {
        Self {
            netns: netns.map(str::to_owned),
            timeout: TOOL_TIMEOUT,
        }
    }

    fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut command = match &self.netns {
            Some(netns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", netns, program]);
                command
            }
            None => Command::new(program),
        };
        command.args(args).kill_on_drop(true);
        command
    }

    /// Runs `program` with `args` and `input` on its stdin; its stdout when it succeeded,
    /// else its refusal with what it printed on stderr.
    pub(crate) async fn run(
        &self,
        program: &str,
        args: &[&str],
        input: Option<&str>,
    ) -> Result<Vec<u8>, IpvsError> {
        let mut command = self.command(program, args);
        command
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let spawn_error = |source| IpvsError::Spawn {
            tool: program.to_owned(),
            source,
        };
        let mut child = command.spawn().map_err(spawn_error)?;
        let run = async {
            if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
                // A write error means the tool stopped reading: its status and message say why.
                let _ = stdin.write_all(input.as_bytes()).await;
                drop(stdin);
            }
            child.wait_with_output().await.map_err(spawn_error)
        };
        let output = tokio::time::timeout(self.timeout, run)
            .await
            .map_err(|_| IpvsError::Timeout {
                tool: program.to_owned(),
                waited: self.timeout,
            })??;
        if output.status.success() {
            return Ok(output.stdout);
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let mut message: Vec<&str> = stderr.trim().lines().take(STDERR_LINES).collect();
        if stderr.trim().lines().count() > STDERR_LINES {
            message.push("…");
        }
        if message.is_empty() {
            message.push("no message");
        }
        let mut command = format!("{program} {}", args.join(" "));
        if let Some(input) = input {
            command.push_str(&format!(
                " with {} lines ({} bytes) of input",
                input.lines().count(),
                input.len()
            ));
        }
        Err(IpvsError::Refused {
            command: format!("{} ({})", command.trim(), output.status),
            message: message.join("\n"),
        })
    }
}
