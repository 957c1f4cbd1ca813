//! The kube-proxy binary as a child process inside a world's node namespace, plus a tiny HTTP
//! client for its health and metrics endpoints (run inside a namespace too).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::netns::NetNs;

/// A running kube-proxy; killed when dropped, stopped gracefully with [`stop`](Self::stop).
#[derive(Debug)]
pub struct ProxyProcess {
    child: Option<Child>,
    log: Option<std::path::PathBuf>,
}

impl ProxyProcess {
    /// Starts `binary --netns NODE args...`; its output goes to `log` (or is inherited).
    ///
    /// # Errors
    ///
    /// When the binary cannot be started.
    pub fn start(binary: &Path, node: &NetNs, args: &[String], log: Option<&Path>) -> Result<Self> {
        let mut command = Command::new(binary);
        command
            .arg("--netns")
            .arg(node.name())
            .args(args)
            .stdin(Stdio::null());
        if let Some(log) = log {
            let file = std::fs::File::create(log)
                .map_err(|e| Error::io(format!("creating {}", log.display()), e))?;
            let copy = file
                .try_clone()
                .map_err(|e| Error::io("duplicating the log file", e))?;
            command.stdout(file).stderr(copy);
        }
        let child = command
            .spawn()
            .map_err(|e| Error::io(format!("starting {}", binary.display()), e))?;
        Ok(Self {
            child: Some(child),
            log: log.map(Path::to_owned),
        })
    }

    /// Waits until `/healthz` on [`HEALTHZ_ADDRESS`] in `node` answers 200.
    ///
    /// # Errors
    ///
    /// When it never did within `timeout`; the error carries the process's log.
    pub async fn wait_healthy(&self, node: &NetNs, timeout: Duration) -> Result<()> {
        wait_for_ok(node, HEALTHZ_ADDRESS, "/healthz", timeout)
            .await
            .map(drop)
            .map_err(|error| {
                let log = self
                    .log
                    .as_ref()
                    .and_then(|path| std::fs::read_to_string(path).ok());
                Error::World(format!(
                    "{error}\nkube-proxy log:\n{}",
                    log.unwrap_or_default()
                ))
            })
    }

    /// Waits until `/metrics` on [`METRICS_ADDRESS`] counts a finished sync (healthy comes
    /// first: a proxy is healthy from its start until a sync is overdue).
    ///
    /// # Errors
    ///
    /// When no sync finished within `timeout`; the error carries the process's log.
    pub async fn wait_synced(&self, node: &NetNs, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok((200, metrics)) = http_get(node, METRICS_ADDRESS, "/metrics")
                && metrics.lines().any(|line| {
                    line.starts_with("kubeproxy_sync_proxy_rules_duration_seconds_count")
                        && line
                            .rsplit(' ')
                            .next()
                            .and_then(|count| count.parse::<f64>().ok())
                            .is_some_and(|count| count > 0.0)
                })
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                let log = self
                    .log
                    .as_ref()
                    .and_then(|path| std::fs::read_to_string(path).ok());
                return Err(Error::World(format!(
                    "no sync finished within {timeout:?}\nkube-proxy log:\n{}",
                    log.unwrap_or_default()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The process id.
    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process has exited, with its status.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|child| child.try_wait().ok().flatten())
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit status.
    ///
    /// # Errors
    ///
    /// When the process did not exit in time (it is then killed).
    pub async fn stop(mut self, timeout: Duration) -> Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            return Err(Error::World("the process was already stopped".into()));
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::World(format!(
                    "kube-proxy did not exit within {timeout:?} of SIGTERM"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `GET path` over HTTP/1.0 from inside `ns`; returns the status code and the body.
///
/// # Errors
///
/// When the connection fails or the answer is not HTTP.
pub fn http_get(ns: &NetNs, address: SocketAddr, path: &str) -> Result<(u16, String)> {
    let path = path.to_owned();
    let raw = ns.run_in(move || {
        let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n")?;
        let mut raw = String::new();
        stream.read_to_string(&mut raw)?;
        Ok(raw)
    })?;
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| Error::World(format!("not an HTTP answer: {raw:?}")))?;
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Polls `GET path` until it answers 200 or `timeout` passes.
///
/// # Errors
///
/// The last answer or error when it never answered 200.
pub async fn wait_for_ok(
    ns: &NetNs,
    address: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match http_get(ns, address, path) {
            Ok((200, body)) => return Ok(body),
            Ok((code, body)) => format!("{code} {body}"),
            Err(error) => error.to_string(),
        };
        if Instant::now() > deadline {
            return Err(Error::World(format!(
                "{path} on {address} never answered 200 within {timeout:?}; last: {last}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Where a kube-proxy under test serves `/healthz` and `/livez` (its node's loopback).
pub const HEALTHZ_ADDRESS: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 10256);

/// Where a kube-proxy under test serves `/metrics`.
pub const METRICS_ADDRESS: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 10249);

/// The flags of a kube-proxy under test: this node's name and the cluster CIDR, the health and
/// metrics servers on [`HEALTHZ_ADDRESS`] and [`METRICS_ADDRESS`], the machine's conntrack table
/// size left alone, and no minimum sync period; then `source`, the flags naming where objects
/// come from (`--manifests DIR` or `--kubeconfig FILE`).
pub fn test_args(node_name: &str, cluster_cidr: &str, source: &[&str]) -> Vec<String> {
    let healthz = HEALTHZ_ADDRESS.to_string();
    let metrics = METRICS_ADDRESS.to_string();
    let fixed = [
        "--hostname-override",
        node_name,
        "--cluster-cidr",
        cluster_cidr,
        "--healthz-bind-address",
        &healthz,
        "--metrics-bind-address",
        &metrics,
        "--conntrack-max-per-core",
        "0",
        "--iptables-min-sync-period",
        "0s",
    ];
    source
        .iter()
        .chain(fixed.iter())
        .map(|arg| (*arg).to_owned())
        .collect()
}
