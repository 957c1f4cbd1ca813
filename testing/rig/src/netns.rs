//! RAII network namespaces that never touch the machine's own (root) namespace.
//!
//! A [`NetNs`] is created with `ip netns add` under a unique name (`kpt-<pid>-<counter>-<role>`)
//! and removed when it is dropped, including while a panic unwinds. Every live namespace is also
//! kept in a process-wide registry, and the first [`NetNs::new`] installs a handler for Ctrl-C
//! (SIGINT), SIGTERM and SIGHUP that removes every registered namespace and exits with status
//! 130. [`remove_stale`] removes namespaces left behind by runs that were killed outright.
//!
//! ## Safety rule
//!
//! Nothing here adds, changes or flushes a link, address, route or rule in the root network
//! namespace. Links are created with `ip -n NS link add`, so they are born inside a namespace
//! made here, and a veth's peer is created directly in another such namespace. Code that must
//! run inside a namespace (creating a socket) runs on a short-lived thread that enters it with
//! `setns` and checks it really is there before doing anything.

use std::collections::BTreeSet;
use std::fmt;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, Once, PoisonError};

use ipnet::IpNet;
use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::sys::socket::{AddressFamily, SockFlag, SockProtocol, SockType, SockaddrStorage};

use crate::error::{Error, Result};

/// The prefix of every namespace this kit creates.
pub const PREFIX: &str = "kpt-";

static REGISTRY: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
static COUNTER: AtomicU64 = AtomicU64::new(0);
static SHUTTING_DOWN: AtomicBool = AtomicBool::new(false);
static SIGNALS: Once = Once::new();

fn registry() -> MutexGuard<'static, BTreeSet<String>> {
    // The set stays consistent whatever panicked while holding it: it is only inserted into
    // and removed from.
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Checks that this process can build worlds: it runs as root and `ip` (iproute2) and
/// `sysctl` (procps) are installed.
///
/// # Errors
///
/// [`Error::NotRoot`] or [`Error::MissingTool`], saying what is missing.
pub fn check_environment() -> Result<()> {
    let euid = nix::unistd::geteuid();
    if !euid.is_root() {
        return Err(Error::NotRoot {
            euid: euid.as_raw(),
        });
    }
    require_tool("ip", &["-V"])?;
    require_tool("sysctl", &["-V"])
}

/// Checks that `tool` can be started (`tool args`), or says how to install it.
///
/// # Errors
///
/// [`Error::MissingTool`] when it cannot be started.
pub fn require_tool(tool: &str, args: &[&str]) -> Result<()> {
    output(Command::new(tool).args(args), None).map(drop)
}

/// Renders a command line for error messages.
fn render(command: &Command) -> String {
    let mut line = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

fn tool_hint(program: &str) -> &'static str {
    match program {
        "ip" => "apt-get install -y iproute2",
        "nft" => "apt-get install -y nftables",
        "sysctl" => "apt-get install -y procps",
        "iptables" | "iptables-restore" => "apt-get install -y iptables",
        "conntrack" => "apt-get install -y conntrack",
        _ => "with the system's package manager",
    }
}

/// Runs a command with optional standard input and returns its output, whatever its status.
///
/// # Errors
///
/// [`Error::MissingTool`] when the program is not installed, [`Error::Io`] when it cannot be
/// run.
pub fn output(command: &mut Command, stdin: Option<&str>) -> Result<Output> {
    let program = command.get_program().to_string_lossy().into_owned();
    command.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().map_err(|error| {
        if error.kind() == std::io::ErrorKind::NotFound {
            Error::MissingTool {
                tool: program.clone(),
                hint: tool_hint(&program).to_owned(),
            }
        } else {
            Error::io(format!("starting `{}`", render(command)), error)
        }
    })?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())
            .map_err(|error| Error::io(format!("writing to `{}`", render(command)), error))?;
    }
    child
        .wait_with_output()
        .map_err(|error| Error::io(format!("waiting for `{}`", render(command)), error))
}

/// Runs a command and returns its standard output.
///
/// # Errors
///
/// [`Error::Command`] with its standard error when it exits non-zero.
pub fn run(command: &mut Command, stdin: Option<&str>) -> Result<String> {
    let out = output(command, stdin)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Command {
            command: render(command),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// A network namespace made by this kit; removed when dropped.
#[derive(PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NetNs {
    name: String,
}

impl fmt::Debug for NetNs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NetNs({})", self.name)
    }
}

impl fmt::Display for NetNs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl NetNs {
    /// Creates a namespace named `kpt-<pid>-<counter>-<role>` with its loopback up, IPv6
    /// duplicate address detection and router advertisements off (addresses are usable at
    /// once) and reverse-path filtering off. `role` is only a readable hint (`node`, `pod`...).
    ///
    /// # Errors
    ///
    /// When `ip netns add` fails (not root, `ip` missing) or the kit is shutting down.
    pub fn new(role: &str) -> Result<NetNs> {
        install_signal_cleanup();
        let role: String = role
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .take(16)
            .collect();
        let name = format!(
            "{PREFIX}{}-{}-{role}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        {
            // Holding the registry while creating means the signal handler either sees the
            // namespace registered or runs before it exists.
            let mut registry = registry();
            if SHUTTING_DOWN.load(Ordering::SeqCst) {
                return Err(Error::ShuttingDown);
            }
            run(Command::new("ip").args(["netns", "add", &name]), None)?;
            registry.insert(name.clone());
        }
        let ns = NetNs { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        ns.sysctl(&[
            ("net.ipv6.conf.all.accept_dad", "0"),
            ("net.ipv6.conf.default.accept_dad", "0"),
            ("net.ipv6.conf.all.accept_ra", "0"),
            ("net.ipv6.conf.default.accept_ra", "0"),
            ("net.ipv4.conf.all.rp_filter", "0"),
            ("net.ipv4.conf.default.rp_filter", "0"),
        ])?;
        Ok(ns)
    }

    /// The namespace's name (for `ip netns exec NAME`, `ip -n NAME`, `/run/netns/NAME`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n NAME args...` and returns its output.
    ///
    /// # Errors
    ///
    /// [`Error::Command`] when `ip` fails.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        run(
            Command::new("ip").arg("-n").arg(&self.name).args(args),
            None,
        )
    }

    /// Runs several `ip` commands (one per line, without the leading `ip`) in one process.
    ///
    /// # Errors
    ///
    /// [`Error::Command`] with the batch and `ip`'s message naming the failed line.
    pub fn ip_batch(&self, lines: &[String]) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut input = lines.join("\n");
        input.push('\n');
        run(
            Command::new("ip")
                .arg("-n")
                .arg(&self.name)
                .args(["-batch", "-"]),
            Some(&input),
        )
        .map_err(|error| match error {
            Error::Command {
                command,
                status,
                stderr,
            } => Error::Command {
                command: format!("{command} <<EOF\n{input}EOF"),
                status,
                stderr,
            },
            other => other,
        })
        .map(drop)
    }

    /// Runs `program args...` inside the namespace (`ip netns exec`) and returns its output,
    /// whatever its status.
    ///
    /// # Errors
    ///
    /// When the program cannot be started.
    pub fn exec_output(&self, program: &str, args: &[&str], stdin: Option<&str>) -> Result<Output> {
        output(
            Command::new("ip")
                .args(["netns", "exec", &self.name, program])
                .args(args),
            stdin,
        )
    }

    /// Runs `program args...` inside the namespace and returns its standard output.
    ///
    /// # Errors
    ///
    /// [`Error::Command`] when it exits non-zero.
    pub fn exec(&self, program: &str, args: &[&str], stdin: Option<&str>) -> Result<String> {
        run(
            Command::new("ip")
                .args(["netns", "exec", &self.name, program])
                .args(args),
            stdin,
        )
    }

    /// Sets per-namespace sysctls (`net.ipv4.ip_forward`, `net.ipv4.conf.*`, `net.ipv6.conf.*`).
    /// Never use it for settings that are global to the machine (`nf_conntrack_max`, ...).
    ///
    /// # Errors
    ///
    /// When `sysctl` fails.
    pub fn sysctl(&self, settings: &[(&str, &str)]) -> Result<()> {
        let args: Vec<String> = settings
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect();
        let mut all = vec!["-q", "-w"];
        all.extend(args.iter().map(String::as_str));
        self.exec("sysctl", &all, None).map(drop)
    }

    /// Adds an address to a link (`nodad` for IPv6, so it is usable at once).
    ///
    /// # Errors
    ///
    /// When `ip` fails.
    pub fn add_address(&self, dev: &str, net: IpNet) -> Result<()> {
        self.ip_batch(&[address_line(dev, net)])
    }

    /// Adds a route: `spec` is what follows `ip route add`, e.g. `10.0.0.2/32 dev veth0`.
    ///
    /// # Errors
    ///
    /// When `ip` fails.
    pub fn add_route(&self, spec: &str) -> Result<()> {
        let mut args = vec!["route", "add"];
        args.extend(spec.split_whitespace());
        self.ip(&args).map(drop)
    }

    /// Runs `f` on a short-lived thread inside this namespace and returns what it returned.
    /// A socket created there stays in this namespace wherever it is used afterwards.
    ///
    /// # Errors
    ///
    /// When the namespace cannot be entered (or the thread is not in it afterwards), or when
    /// `f` fails.
    pub fn run_in<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> std::io::Result<T> + Send,
        T: Send,
    {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|scope| {
            let worker = scope.spawn(|| -> Result<T> {
                let file = std::fs::File::open(&path)
                    .map_err(|error| Error::io(format!("opening {path}"), error))?;
                nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)
                    .map_err(|errno| Error::io(format!("setns({path})"), errno.into()))?;
                // Belt and braces: go on only when this thread really is in the namespace.
                let want = file
                    .metadata()
                    .map_err(|error| Error::io(format!("stat {path}"), error))?;
                let have = std::fs::metadata("/proc/thread-self/ns/net")
                    .map_err(|error| Error::io("stat /proc/thread-self/ns/net", error))?;
                if (want.dev(), want.ino()) != (have.dev(), have.ino()) {
                    return Err(Error::World(format!(
                        "setns into {path} did not take effect"
                    )));
                }
                f().map_err(|error| Error::io(format!("in namespace {}", self.name), error))
            });
            worker.join().unwrap_or_else(|_| {
                Err(Error::World(format!(
                    "a thread inside namespace {} panicked",
                    self.name
                )))
            })
        })
    }

    /// Creates a socket inside this namespace (close-on-exec and non-blocking).
    ///
    /// # Errors
    ///
    /// [`Error::SctpUnsupported`] when SCTP was asked for and the kernel lacks it; otherwise
    /// the system call's error.
    pub fn socket(
        &self,
        family: IpAddr,
        kind: SockType,
        protocol: SockProtocol,
    ) -> Result<OwnedFd> {
        let domain = match family {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        let result = self.run_in(move || {
            nix::sys::socket::socket(
                domain,
                kind,
                SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
                protocol,
            )
            .map_err(std::io::Error::from)
        });
        match result {
            Err(Error::Io { source, .. })
                if protocol == SockProtocol::Sctp && is_no_protocol(&source) =>
            {
                Err(Error::SctpUnsupported(source.to_string()))
            }
            other => other,
        }
    }

    /// Creates a socket inside this namespace and binds it to `addr` (with `SO_REUSEADDR`
    /// for stream sockets).
    ///
    /// # Errors
    ///
    /// As [`socket`](Self::socket), or when `bind` fails (e.g. the address is not there).
    pub fn bound_socket(
        &self,
        addr: SocketAddr,
        kind: SockType,
        protocol: SockProtocol,
    ) -> Result<OwnedFd> {
        let fd = self.socket(addr.ip(), kind, protocol)?;
        if kind == SockType::Stream {
            nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::ReuseAddr, &true)
                .map_err(|errno| Error::io("setsockopt(SO_REUSEADDR)", errno.into()))?;
        }
        bind(&fd, addr)?;
        Ok(fd)
    }
}

fn is_no_protocol(error: &std::io::Error) -> bool {
    [
        Errno::EPROTONOSUPPORT,
        Errno::ESOCKTNOSUPPORT,
        Errno::EAFNOSUPPORT,
    ]
    .iter()
    .any(|errno| error.raw_os_error() == Some(*errno as i32))
}

/// Binds a socket (of any namespace) to `addr`.
///
/// # Errors
///
/// The system call's error.
pub fn bind(fd: &OwnedFd, addr: SocketAddr) -> Result<()> {
    nix::sys::socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))
        .map_err(|errno| Error::io(format!("bind({addr})"), errno.into()))
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let mut registry = registry();
        if registry.remove(&self.name)
            && let Err(error) = delete(&self.name)
        {
            eprintln!(
                "kproxy-rig: could not remove namespace {}: {error}",
                self.name
            );
        }
    }
}

fn delete(name: &str) -> Result<()> {
    run(Command::new("ip").args(["netns", "del", name]), None).map(drop)
}

/// The `ip` batch line that adds `net` (an address with its prefix) to `dev`; IPv6 addresses
/// get `nodad`.
pub fn address_line(dev: &str, net: IpNet) -> String {
    match net {
        IpNet::V4(_) => format!("address add {net} dev {dev}"),
        IpNet::V6(_) => format!("address add {net} dev {dev} nodad"),
    }
}

/// Creates a veth pair, `a_if` inside `a` and `b_if` inside `b`, both up. The pair is created
/// from inside `a` and its peer placed directly in `b`: it never exists in the root namespace.
///
/// # Errors
///
/// When `ip` fails (e.g. a name is taken in its namespace).
pub fn veth(a: &NetNs, a_if: &str, b: &NetNs, b_if: &str) -> Result<()> {
    a.ip(&[
        "link",
        "add",
        a_if,
        "type",
        "veth",
        "peer",
        "name",
        b_if,
        "netns",
        b.name(),
    ])?;
    a.ip(&["link", "set", a_if, "up"])?;
    b.ip(&["link", "set", b_if, "up"])?;
    Ok(())
}

/// Removes every namespace this process still holds and returns their names. After it,
/// [`NetNs::new`] fails with [`Error::ShuttingDown`].
pub fn remove_all_registered() -> Vec<String> {
    let mut registry = registry();
    SHUTTING_DOWN.store(true, Ordering::SeqCst);
    let names: Vec<String> = std::mem::take(&mut *registry).into_iter().collect();
    for name in &names {
        if let Err(error) = delete(name) {
            eprintln!("kproxy-rig: could not remove namespace {name}: {error}");
        }
    }
    names
}

/// The names of the namespaces this process holds right now.
pub fn registered() -> Vec<String> {
    registry().iter().cloned().collect()
}

/// Every namespace in `ip netns list` whose name starts with [`PREFIX`].
///
/// # Errors
///
/// When `ip netns list` fails.
pub fn list_kit_namespaces() -> Result<Vec<String>> {
    let listing = run(Command::new("ip").args(["netns", "list"]), None)?;
    Ok(listing
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| name.starts_with(PREFIX))
        .map(str::to_owned)
        .collect())
}

/// Removes namespaces left behind by kit processes that no longer run (killed with SIGKILL,
/// say): those named `kpt-<pid>-...` whose pid is gone. Returns their names.
///
/// # Errors
///
/// When `ip netns list` or a removal fails.
pub fn remove_stale() -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for name in list_kit_namespaces()? {
        let pid = name[PREFIX.len()..]
            .split('-')
            .next()
            .and_then(|pid| pid.parse::<u32>().ok());
        let Some(pid) = pid else { continue };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            delete(&name)?;
            removed.push(name);
        }
    }
    Ok(removed)
}

/// Installs (once per process) the handler that removes every registered namespace on
/// Ctrl-C, SIGTERM or SIGHUP and then exits with status 130. [`NetNs::new`] calls it.
pub fn install_signal_cleanup() {
    SIGNALS.call_once(|| {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
        let spawned = std::thread::Builder::new()
            .name("kpt-signals".into())
            .spawn(move || wait_for_signal_then_clean_up(&ready_tx));
        if spawned.is_ok() {
            // Wait until the handlers are in place, so that a Ctrl-C right after the first
            // namespace exists is caught.
            let _ = ready_rx.recv();
        }
    });
}

fn wait_for_signal_then_clean_up(ready: &std::sync::mpsc::Sender<()>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        let _ = ready.send(());
        return;
    };
    runtime.block_on(async move {
        let (Ok(mut interrupt), Ok(mut terminate), Ok(mut hangup)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) else {
            let _ = ready.send(());
            return;
        };
        let _ = ready.send(());
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
            _ = hangup.recv() => {}
        }
        let removed = remove_all_registered();
        eprintln!(
            "kproxy-rig: interrupted; removed {} namespace(s) {}",
            removed.len(),
            removed.join(" ")
        );
        std::process::exit(130);
    });
}
