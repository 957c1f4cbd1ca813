//! Kernel access: [`IptablesKernel`], with [`IptablesCommand`] driving the real tools.

use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use kproxy_core::IpFamily;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::error::IptablesError;
use crate::restore::Table;
use crate::save::SavedTable;
use crate::variant::{Tool, Variant};

/// How long one tool run may take before it is killed: a full restore at 10,000 Services
/// with 10 endpoints each takes seconds, not minutes.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(300);

/// What the backend needs of the kernel, one family at a time.
#[async_trait]
pub trait IptablesKernel: Send {
    /// Applies a restore input (`iptables-restore --noflush`): each table of it all or
    /// nothing.
    async fn restore(&mut self, family: IpFamily, input: &str) -> Result<(), IptablesError>;

    /// One table's `iptables-save` output.
    async fn save(&mut self, family: IpFamily, table: Table) -> Result<String, IptablesError>;

    /// The `iptables-save` output of each of `tables`, in order; a table the kernel does not
    /// hold yet is empty text. The default saves them one by one.
    async fn save_tables(
        &mut self,
        family: IpFamily,
        tables: &[Table],
    ) -> Result<Vec<String>, IptablesError> {
        let mut saved = Vec::with_capacity(tables.len());
        for table in tables {
            saved.push(self.save(family, *table).await?);
        }
        Ok(saved)
    }

    /// The rules (the arguments after `-A CHAIN`) of each of `chains` in `table`, `None` for
    /// a chain that does not exist: the drift check's one look at the kernel.
    async fn chains(
        &mut self,
        family: IpFamily,
        table: Table,
        chains: &[&str],
    ) -> Result<Vec<Option<Vec<String>>>, IptablesError>;

    /// Whether conntrack tracks TCP liberally (`net.netfilter.nf_conntrack_tcp_be_liberal`
    /// of the namespace); `false` when it cannot be read.
    async fn tcp_be_liberal(&mut self) -> bool;

    /// Lets the namespace route packets to 127.0.0.0/8 that arrive from elsewhere
    /// (`net.ipv4.conf.all.route_localnet=1`), which node ports on localhost need.
    async fn enable_route_localnet(&mut self) -> Result<(), IptablesError>;
}

/// The real kernel, through one variant's tools, in the current or a named namespace.
#[derive(Debug, Clone)]
pub struct IptablesCommand {
    variant: Variant,
    netns: Option<String>,
    timeout: Duration,
}

impl IptablesCommand {
    /// Programs the current network namespace with `variant`'s tools.
    pub fn current_netns(variant: Variant) -> Self {
        Self {
            variant,
            netns: None,
            timeout: TOOL_TIMEOUT,
        }
    }

    /// Programs the named network namespace (`ip netns exec NAME ...`).
    pub fn in_netns(variant: Variant, name: &str) -> Self {
        Self {
            netns: Some(name.to_owned()),
            ..Self::current_netns(variant)
        }
    }

    /// The variant it drives.
    pub fn variant(&self) -> Variant {
        self.variant
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

    /// The legacy variant takes the machine-wide xtables lock; wait for it rather than fail
    /// when another program holds it (the nft variant needs no lock and ignores `-w`).
    fn lock_args(&self) -> &'static [&'static str] {
        match self.variant {
            Variant::Legacy => &["-w", "5"],
            Variant::Nft => &[],
        }
    }

    /// Runs `program` with `args` and `input` on its stdin.
    async fn run(
        &self,
        program: &str,
        args: &[&str],
        input: Option<&str>,
    ) -> Result<std::process::Output, IptablesError> {
        let mut command = self.command(program, args);
        command
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let spawn_error = |source| IptablesError::Spawn {
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
        tokio::time::timeout(self.timeout, run)
            .await
            .map_err(|_| IptablesError::Timeout {
                tool: program.to_owned(),
                waited: self.timeout,
            })?
    }

    /// Runs `program` as [`run`](Self::run) does; its stdout when it succeeded, else the
    /// refusal with its own message.
    async fn checked(
        &self,
        program: &str,
        args: &[&str],
        input: Option<&str>,
    ) -> Result<Vec<u8>, IptablesError> {
        let output = self.run(program, args, input).await?;
        if output.status.success() {
            Ok(output.stdout)
        } else {
            Err(Self::refused(program, args, input, &output.stderr))
        }
    }

    fn refused(program: &str, args: &[&str], input: Option<&str>, stderr: &[u8]) -> IptablesError {
        const STDERR_LINES: usize = 5;
        let stderr = String::from_utf8_lossy(stderr);
        let mut message: Vec<&str> = stderr.trim().lines().take(STDERR_LINES).collect();
        if stderr.trim().lines().count() > STDERR_LINES {
            message.push("…");
        }
        let mut command = format!("{program} {}", args.join(" "));
        if let Some(input) = input {
            command.push_str(&format!(
                " with {} lines ({} bytes) of input",
                input.lines().count(),
                input.len()
            ));
        }
        IptablesError::Refused {
            command: command.trim().to_owned(),
            message: message.join("\n"),
        }
    }
}

#[async_trait]
impl IptablesKernel for IptablesCommand {
    async fn restore(&mut self, family: IpFamily, input: &str) -> Result<(), IptablesError> {
        let program = self.variant.binary(family, Tool::Restore);
        let mut args = vec!["--noflush"];
        args.extend(self.lock_args());
        self.checked(program, &args, Some(input)).await.map(drop)
    }

    async fn save(&mut self, family: IpFamily, table: Table) -> Result<String, IptablesError> {
        let program = self.variant.binary(family, Tool::Save);
        let args = ["-t", table.name()];
        let stdout = self.checked(program, &args, None).await?;
        Ok(String::from_utf8_lossy(&stdout).into_owned())
    }

    /// One whole save, split by table: one tool run instead of one per table (a whole save
    /// lists only the tables that exist, so it creates none).
    async fn save_tables(
        &mut self,
        family: IpFamily,
        tables: &[Table],
    ) -> Result<Vec<String>, IptablesError> {
        let program = self.variant.binary(family, Tool::Save);
        let stdout = self.checked(program, &[], None).await?;
        let text = String::from_utf8_lossy(&stdout);
        Ok(tables
            .iter()
            .map(|table| crate::save::table_of(&text, *table))
            .collect())
    }

    async fn chains(
        &mut self,
        family: IpFamily,
        table: Table,
        chains: &[&str],
    ) -> Result<Vec<Option<Vec<String>>>, IptablesError> {
        match self.variant {
            // iptables-nft lists one chain without reading the rest of the table (10 ms at
            // 5,000 Services, where `iptables -C` takes 120 ms).
            Variant::Nft => {
                let program = self.variant.binary(family, Tool::Iptables);
                let mut listed = Vec::with_capacity(chains.len());
                for chain in chains {
                    let output = self
                        .run(program, &["-t", table.name(), "-S", chain], None)
                        .await?;
                    listed.push(output.status.success().then(|| {
                        let prefix = format!("-A {chain} ");
                        String::from_utf8_lossy(&output.stdout)
                            .lines()
                            .filter_map(|line| line.strip_prefix(&prefix).map(str::to_owned))
                            .collect()
                    }));
                }
                Ok(listed)
            }
            // The legacy tools read the whole table for any listing: read it once.
            Variant::Legacy => {
                let saved = SavedTable::parse(&self.save(family, table).await?);
                Ok(chains
                    .iter()
                    .map(|chain| saved.chains.get(*chain).cloned())
                    .collect())
            }
        }
    }

    async fn tcp_be_liberal(&mut self) -> bool {
        let path = "/proc/sys/net/netfilter/nf_conntrack_tcp_be_liberal";
        match self.run("cat", &[path], None).await {
            Ok(output) if output.status.success() => {
                String::from_utf8_lossy(&output.stdout).trim() == "1"
            }
            _ => false,
        }
    }

    async fn enable_route_localnet(&mut self) -> Result<(), IptablesError> {
        let args = ["-q", "-w", "net.ipv4.conf.all.route_localnet=1"];
        self.checked("sysctl", &args, None).await.map(drop)
    }
}
