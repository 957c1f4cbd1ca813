//! `kproxy-scenario`: runs scenario files (the book's "Scenario files" chapter) against a backend, with real packets
//! in network namespaces it creates and removes.
//!
//! ```text
//! kproxy-scenario --backend nft testing/conformance/scenarios/
//! kproxy-scenario --backend iptables-legacy testing/conformance/scenarios/
//! kproxy-scenario --backend ipvs testing/conformance/scenarios/   # a kernel with IPVS only
//! ```
//!
//! Prints one line per probe (`PASS`, `FAIL` or `SKIP`, with what was seen), then
//! `N passed, M failed`. Exit status: 0 when every probe passed, 1 when one failed or a
//! scenario's world could not be built, 2 when nothing could run (a malformed file, not root,
//! a tool missing, an unknown backend), 130 on Ctrl-C (after removing its namespaces).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use kproxy_conformance::scenario::{self, RunOptions};
use kproxy_core::Balancing;
use kproxy_rig::netns;

/// Runs scenario files against a backend in network namespaces.
#[derive(Debug, Parser)]
#[command(name = "kproxy-scenario", version)]
struct Args {
    /// The backend under test: a proxy mode (`nftables`, alias `nft`; `iptables`, its variant
    /// detected in each node namespace, nft on a fresh one; `ipvs`, on a kernel with IPVS
    /// only, as the UML guest's), an iptables variant (`iptables-nft`, `iptables-legacy`; the
    /// expectations are iptables mode's either way), or `none` (programs nothing; checks the
    /// kit itself).
    #[arg(long)]
    backend: String,
    /// Overrides every scenario's balancing: `random` or `round-robin`.
    #[arg(long, value_parser = parse_balancing)]
    balancing: Option<Balancing>,
    /// Skip the probes of scenarios whose `config.backend` names another backend.
    #[arg(long)]
    skip_other_backends: bool,
    /// How long a probe waits for an answer before it counts as DROP, in milliseconds.
    #[arg(long, default_value_t = 500)]
    timeout_ms: u64,
    /// Only read and check the files (no root needed); build nothing.
    #[arg(long)]
    check: bool,
    /// Scenario files, or directories searched for `*.json`.
    #[arg(required = true, value_name = "FILE_OR_DIR")]
    paths: Vec<PathBuf>,
}

fn parse_balancing(text: &str) -> Result<Balancing, String> {
    match text {
        "random" => Ok(Balancing::Random),
        "round-robin" => Ok(Balancing::RoundRobin),
        other => Err(format!("{other:?} is not random or round-robin")),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.check {
        return check(&args.paths);
    }
    if netns::check_environment().is_ok() {
        match netns::remove_stale() {
            Ok(removed) if !removed.is_empty() => {
                eprintln!(
                    "removed namespaces left by earlier runs: {}",
                    removed.join(" ")
                );
            }
            Ok(_) => {}
            Err(error) => eprintln!("warning: could not look for stale namespaces: {error}"),
        }
    }
    // Before any thread exists, so Ctrl-C always finds the handler.
    netns::install_signal_cleanup();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(2);
        }
    };
    let factory = match kproxy_tools::factory(&args.backend, args.balancing) {
        Ok(factory) => factory,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let options = RunOptions {
        factory,
        timeout: Duration::from_millis(args.timeout_ms),
        skip_other_backends: args.skip_other_backends,
    };
    let result = runtime.block_on(scenario::run_paths(&args.paths, &options));
    drop(runtime);
    // Every world is dropped by now; this only matters if something went badly wrong.
    let left = netns::remove_all_registered();
    if !left.is_empty() {
        eprintln!("removed namespaces still held at exit: {}", left.join(" "));
    }
    match result {
        Ok(summary) => {
            for error in &summary.errors {
                eprintln!("error: {error}");
            }
            let _ = writeln!(std::io::stdout(), "{summary}");
            if summary.success() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(2)
        }
    }
}

/// `--check`: parses every file and counts what it holds.
fn check(paths: &[PathBuf]) -> ExitCode {
    let files = match scenario::collect_files(paths) {
        Ok(files) => files,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let (mut scenarios, mut probes, mut bad) = (0, 0, 0);
    for file in &files {
        match scenario::parse_file(file) {
            Ok(parsed) => {
                scenarios += parsed.len();
                probes += parsed
                    .iter()
                    .flat_map(|s| &s.steps)
                    .map(|step| step.probes.len())
                    .sum::<usize>();
            }
            Err(error) => {
                eprintln!("error: {error}");
                bad += 1;
            }
        }
    }
    let _ = writeln!(
        std::io::stdout(),
        "{} file(s), {scenarios} scenario(s), {probes} probe(s); {bad} malformed",
        files.len()
    );
    if bad == 0 && !files.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}
