//! Dev-only User-Mode Linux guest for kube-proxy-rs kernel tests that need what the host kernel
//! lacks (IPVS): it boots Debian's `linux.uml`, a Linux kernel that runs as an ordinary
//! process, on the host's root file system (read-only), runs one program as the guest's only
//! job, and returns the program's exit status, stdout and stderr.
//!
//! ```no_run
//! # fn demo() -> kproxy_guest::Result<()> {
//! use std::{path::Path, time::Duration};
//!
//! let guest = kproxy_guest::Guest::new()?;
//! let out = guest.run(Path::new("/usr/sbin/ipvsadm"), &["-Ln"], Duration::from_secs(30))?;
//! assert!(out.success(), "{out}");
//! # Ok(()) }
//! ```
//!
//! The guest has its own kernel: its network namespaces, links, routes, rules, IPVS tables and
//! sysctls belong to it alone, and nothing it does reaches the host's network (it has no network
//! device but `lo`). It needs no root on the host. What it needs, and its limits, are in
//! `/work/shared/TEST-KERNELS.md` and the book's "Running the tests" chapter:
//!
//! - `linux.uml` and its modules (Debian's `user-mode-linux`, unpacked into the build area by
//!   `scripts/install-deps.sh`, or installed), `modprobe` (`kmod`), `ip` (`iproute2`), `gcc`
//!   and GNU `timeout` on the host;
//! - a small `LD_PRELOAD` library wrapping `ptrace` (built here with gcc, once), without which
//!   the guest panics on hosts with a large XSAVE area (AVX-512, AMX);
//! - a build area whose path the kernel command line can carry (no whitespace, quotes or
//!   commas).
//!
//! Every failure to start is an [`Error`] that names what is missing and how to install it; a
//! test that cannot boot the guest fails with it, it never skips.

mod error;

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub use error::{Error, Result};

/// The ptrace shim's source (see the file's comment).
const SHIM_SOURCE: &str = include_str!("../shim/ptrace_xstate.c");
/// The guest's init script, with `@KIT_BIN@` for the kit's `bin` folder.
const INIT_TEMPLATE: &str = include_str!("init.sh");
/// The environment variable that names a folder where `user-mode-linux` was unpacked.
pub const UML_ROOT_ENV: &str = "KPROXY_UML_ROOT";
/// Guest memory, in MiB: enough for a backend and its test servers (see TEST-KERNELS.md on
/// why a guest must stay lean).
pub const MEMORY_MIB: u32 = 1024;

/// Serialises the kit's preparation within one process (tests run in parallel threads); across
/// processes every file is written under a temporary name and renamed into place.
static PREPARE: Mutex<()> = Mutex::new(());
/// Numbers the runs of this process.
static RUNS: AtomicU32 = AtomicU32::new(0);

/// A prepared guest: the kernel, its modules, the ptrace shim and the init script. Cheap to
/// keep; every [`run`](Guest::run) boots a fresh guest.
#[derive(Debug, Clone)]
pub struct Guest {
    kernel: PathBuf,
    version: String,
    modules: PathBuf,
    kit: PathBuf,
    shim: PathBuf,
    init: PathBuf,
}

/// What became of a program run in a guest.
#[derive(Debug, Clone)]
pub struct GuestOutput {
    /// The program's exit status as the guest's shell saw it: 0 to 255, 128 + N when signal N
    /// killed it.
    pub status: i32,
    /// What the program wrote to stdout.
    pub stdout: String,
    /// What the program wrote to stderr.
    pub stderr: String,
    /// The guest's console and linux.uml's own output (kernel messages, init's complaints).
    pub console: String,
    /// Wall-clock time of the whole run, boot and power-off included.
    pub elapsed: Duration,
}

impl GuestOutput {
    /// Whether the program exited with status 0.
    pub fn success(&self) -> bool {
        self.status == 0
    }
}

impl fmt::Display for GuestOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "status {} after {:.1?}\n--- stdout\n{}--- stderr\n{}--- console\n{}",
            self.status,
            self.elapsed,
            self.stdout,
            self.stderr,
            tail(&self.console, 40)
        )
    }
}

impl Guest {
    /// Finds `linux.uml` and its modules, checks the host tools, builds the ptrace shim (once)
    /// and writes the kit (module folder link, modprobe wrapper, init script) into
    /// `guest-kit/` of the build area.
    ///
    /// The kernel is looked for in `$KPROXY_UML_ROOT/usr/bin/linux.uml`, then in `uml/` of the
    /// build area (where `scripts/install-deps.sh` unpacks it), then in `/usr/bin/linux.uml`.
    pub fn new() -> Result<Guest> {
        let builds = build_areas();
        let (root, kernel) = find_kernel(&builds)?;
        for (tool, hint) in [
            (
                "gcc",
                "apt-get install -y gcc (it builds the guest's ptrace shim)",
            ),
            ("timeout", "apt-get install -y coreutils"),
        ] {
            which(tool).ok_or_else(|| missing(tool, hint))?;
        }
        let modprobe = which("modprobe").ok_or_else(|| {
            missing(
                "modprobe",
                "apt-get install -y kmod (or scripts/install-deps.sh)",
            )
        })?;
        which("ip").ok_or_else(|| missing("ip", "apt-get install -y iproute2"))?;

        let version = kernel_version(&kernel)?;
        let modules = root.join("usr/lib/uml/modules").join(&version);
        if !modules.join("modules.dep").is_file() {
            return Err(Error::MissingModules {
                version,
                dir: modules,
            });
        }

        let kit = builds
            .first()
            .cloned()
            .unwrap_or_else(|| PathBuf::from("target"))
            .join("guest-kit");
        let kit = absolute(&kit)?;
        check_guest_path(&kit)?;
        let _serial = PREPARE
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        mkdir(&kit)?;
        let shim = build_shim(&kit)?;

        // modprobe -d DIR wants DIR/lib/modules/VERSION: a link to the package's folder,
        // relative when both are in the same tree.
        let module_root = kit.join("modules");
        let links = module_root.join("lib/modules");
        mkdir(&links)?;
        let link = links.join(&version);
        let target = relative_to(&links, &absolute(&modules)?);
        if std::fs::read_link(&link).ok().as_deref() != Some(target.as_path()) {
            let tmp = links.join(format!(".{version}.{}", std::process::id()));
            let _ = std::fs::remove_file(&tmp);
            std::os::unix::fs::symlink(&target, &tmp)
                .map_err(|e| Error::io(format!("linking {}", tmp.display()), e))?;
            rename(&tmp, &link)?;
        }

        let bin = kit.join("bin");
        mkdir(&bin)?;
        let wrapper = format!(
            "#!/bin/sh\n# the guest's modprobe: the UML modules are not under /lib/modules\n\
             exec {} -d {} \"$@\"\n",
            modprobe.display(),
            module_root.display()
        );
        write_if_changed(&bin.join("modprobe"), &wrapper, true)?;
        let init = kit.join("init");
        let script = INIT_TEMPLATE.replace("@KIT_BIN@", &bin.display().to_string());
        write_if_changed(&init, &script, true)?;
        mkdir(&kit.join("uml-state"))?;
        mkdir(&kit.join("runs"))?;

        Ok(Guest {
            kernel,
            version,
            modules,
            kit,
            shim,
            init,
        })
    }

    /// The `linux.uml` this guest boots.
    pub fn kernel(&self) -> &Path {
        &self.kernel
    }

    /// The guest kernel's version (`uname -r` inside), e.g. `6.1.176`.
    pub fn kernel_version(&self) -> &str {
        &self.version
    }

    /// The folder holding the guest kernel's modules.
    pub fn modules(&self) -> &Path {
        &self.modules
    }

    /// Boots a guest that runs `program` (an absolute path on the host, which the guest sees
    /// read-only at the same place) with `args`, and waits for it to power off, at most
    /// `timeout` (boot included: about 2 s).
    ///
    /// The arguments travel on the kernel command line, so none may be empty or hold
    /// whitespace or quotes: put anything richer in a script. The program runs as root in the
    /// guest, with `/run` on the guest's own tmpfs (`HOME` and `TMPDIR` below it; `/tmp` is the
    /// host's, read-only, like the rest of the root), `lo` up, and `modprobe` finding the guest
    /// kernel's modules.
    ///
    /// A non-zero status is not an error: it comes back in [`GuestOutput::status`]. An error
    /// means the guest could not start or did not finish.
    pub fn run(&self, program: &Path, args: &[&str], timeout: Duration) -> Result<GuestOutput> {
        if !program.is_absolute() {
            return Err(Error::InvalidArgument {
                arg: program.display().to_string(),
                reason: "the program must be an absolute path (the guest has no working \
                         directory of yours)"
                    .into(),
            });
        }
        if !program.exists() {
            return Err(Error::InvalidArgument {
                arg: program.display().to_string(),
                reason: "no such file on the host (the guest sees the host's files)".into(),
            });
        }
        let program = program.display().to_string();
        check_argument(&program)?;
        for arg in args {
            check_argument(arg)?;
        }

        let n = RUNS.fetch_add(1, Ordering::Relaxed);
        let name = format!("kproxy-guest-{}-{n}", std::process::id());
        let run_dir = self.kit.join("runs").join(&name);
        let _ = std::fs::remove_dir_all(&run_dir);
        mkdir(&run_dir)?;

        let mut command = Command::new("timeout");
        command
            .arg("--kill-after=5s")
            .arg(format!("{:.3}s", timeout.as_secs_f64()))
            .arg(&self.kernel)
            .arg(format!("mem={MEMORY_MIB}M"))
            .args(["root=/dev/root", "rootfstype=hostfs", "rootflags=/", "ro"])
            // console=tty0 explicitly, or UML appends it after `--`, into init's argv
            .args(["con=null", "con0=null,fd:1", "console=tty0", "quiet"])
            .arg(format!("uml_dir={}", self.kit.join("uml-state").display()))
            .arg(format!("umid={name}"))
            .arg(format!("KPROXY_GUEST_RUN={}", run_dir.display()))
            .arg(format!("init={}", self.init.display()))
            .arg("--")
            .arg(&program)
            .args(args)
            .env("LD_PRELOAD", &self.shim)
            .stdin(Stdio::null());
        let started = Instant::now();
        let done = command
            .output()
            .map_err(|e| Error::io(format!("starting timeout {}", self.kernel.display()), e))?;
        let elapsed = started.elapsed();
        let mut console = String::from_utf8_lossy(&done.stdout).into_owned();
        console.push_str(&String::from_utf8_lossy(&done.stderr));

        let read = |file: &str| {
            std::fs::read(run_dir.join(file))
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        };
        // timeout(1): 124 when it sent the signal, 137 when it had to kill
        if matches!(done.status.code(), Some(124 | 137)) {
            return Err(Error::TimedOut {
                timeout,
                stdout: tail(&read("stdout").unwrap_or_default(), 20),
                console: tail(&console, 30),
                run_dir,
            });
        }
        let Some(status) = read("status")
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        else {
            return Err(Error::NoStatus {
                exit: done.status.to_string(),
                console: tail(&console, 30),
                run_dir,
            });
        };
        let output = GuestOutput {
            status,
            stdout: read("stdout").unwrap_or_default(),
            stderr: read("stderr").unwrap_or_default(),
            console,
            elapsed,
        };
        let _ = std::fs::remove_dir_all(&run_dir);
        Ok(output)
    }
}

/// Whether this process runs inside a guest (its init exports the results folder).
pub fn inside() -> bool {
    std::env::var_os("KPROXY_GUEST_RUN").is_some()
}

/// Runs the test `name` of the calling test binary inside a fresh guest and fails (panics)
/// with the guest's output unless it passed; what the test printed is echoed either way.
///
/// The guest-side test is an ordinary `#[test] #[ignore = "..."]` function that starts with
/// [`require_inside`]: the host runs it through this, never directly.
///
/// # Panics
///
/// When the guest cannot be prepared or started (saying why), or the test failed.
pub fn run_test_in_guest(name: &str, timeout: Duration) -> GuestOutput {
    let guest = Guest::new().unwrap_or_else(|e| panic!("cannot prepare the UML guest: {e}"));
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = guest
        .run(
            &exe,
            &[
                name,
                "--exact",
                "--include-ignored",
                "--nocapture",
                "--test-threads=1",
            ],
            timeout,
        )
        .unwrap_or_else(|e| panic!("the guest did not run {name}: {e}"));
    print!("{}", out.stdout);
    eprint!("{}", out.stderr);
    assert!(
        out.success() && out.stdout.contains("test result: ok. 1 passed"),
        "{name} failed inside the guest: {out}"
    );
    out
}

/// Fails a guest-side test run anywhere but inside a guest.
///
/// # Panics
///
/// Outside a guest.
pub fn require_inside() {
    assert!(
        inside(),
        "this test runs inside the UML guest: run it through its host-side test \
         (kproxy_guest::run_test_in_guest), not with --ignored"
    );
}

/// The build areas to look in, best first: the one holding the running binary (a test's
/// `target/debug/deps/...`), `$CARGO_TARGET_DIR`, the workspace's `target/`.
fn build_areas() -> Vec<PathBuf> {
    let mut areas = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        // cargo marks its target folder with CACHEDIR.TAG
        if let Some(area) = exe
            .ancestors()
            .find(|dir| dir.join("CACHEDIR.TAG").is_file())
        {
            areas.push(area.to_path_buf());
        }
    }
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        areas.push(PathBuf::from(dir));
    }
    areas.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let mut seen = Vec::new();
    areas.retain(|area| {
        let key = area.canonicalize().unwrap_or_else(|_| area.clone());
        let new = !seen.contains(&key);
        seen.push(key);
        new
    });
    areas
}

/// Returns the folder the package was unpacked into (`/` when installed) and the kernel.
fn find_kernel(builds: &[PathBuf]) -> Result<(PathBuf, PathBuf)> {
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Some(dir) = std::env::var_os(UML_ROOT_ENV) {
        roots.push(PathBuf::from(dir));
    }
    roots.extend(builds.iter().map(|area| area.join("uml")));
    roots.push(PathBuf::from("/"));
    let mut searched = Vec::new();
    for root in roots {
        let kernel = root.join("usr/bin/linux.uml");
        if is_executable(&kernel) {
            let root = absolute(&root)?;
            return Ok((root.clone(), root.join("usr/bin/linux.uml")));
        }
        searched.push(kernel);
    }
    Err(Error::MissingKernel { searched })
}

fn kernel_version(kernel: &Path) -> Result<String> {
    let out = Command::new(kernel)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::io(format!("running {} --version", kernel.display()), e))?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || version.is_empty() || version.contains(char::is_whitespace) {
        return Err(Error::Command {
            command: format!("{} --version", kernel.display()),
            status: out.status.to_string(),
            stderr: format!("{version} {}", String::from_utf8_lossy(&out.stderr).trim()),
        });
    }
    Ok(version)
}

/// Builds the shim into the kit once per source version (the file name carries a hash of the
/// source), with gcc.
fn build_shim(kit: &Path) -> Result<PathBuf> {
    let stem = format!("ptrace-xstate-{:016x}", fnv1a(SHIM_SOURCE.as_bytes()));
    let shim = kit.join(format!("{stem}.so"));
    if shim.is_file() {
        return Ok(shim);
    }
    let source = kit.join(format!("{stem}.c"));
    write_if_changed(&source, SHIM_SOURCE, false)?;
    let tmp = kit.join(format!(".{stem}.{}.so", std::process::id()));
    let mut gcc = Command::new("gcc");
    gcc.args(["-O2", "-Wall", "-shared", "-fPIC", "-o"])
        .arg(&tmp)
        .arg(&source)
        .arg("-ldl");
    let out = gcc.output().map_err(|e| Error::io("running gcc", e))?;
    if !out.status.success() {
        return Err(Error::Command {
            command: format!("{gcc:?}"),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    rename(&tmp, &shim)?;
    Ok(shim)
}

/// The guest reads the kit through its root file system and the command line: nothing the
/// kernel's parser would split.
fn check_guest_path(path: &Path) -> Result<()> {
    let text = path.display().to_string();
    if text.contains(|c: char| c.is_whitespace() || c == '"' || c == ',') {
        return Err(Error::UnusablePath {
            path: path.into(),
            reason: "it holds whitespace, a quote or a comma, which the kernel command line \
                     and hostfs options cannot carry; use a build area without them"
                .into(),
        });
    }
    Ok(())
}

fn check_argument(arg: &str) -> Result<()> {
    let reason = if arg.is_empty() {
        "it is empty"
    } else if arg.contains(|c: char| c.is_whitespace() || c == '"') {
        "it holds whitespace or a quote, which the kernel command line splits or strips"
    } else {
        return Ok(());
    };
    Err(Error::InvalidArgument {
        arg: arg.into(),
        reason: format!("{reason}; put it in a script the guest runs"),
    })
}

fn missing(tool: &str, hint: &str) -> Error {
    Error::MissingTool {
        tool: tool.into(),
        hint: hint.into(),
    }
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(tool))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn absolute(path: &Path) -> Result<PathBuf> {
    path.canonicalize()
        .or_else(|_| std::path::absolute(path))
        .map_err(|e| Error::io(format!("resolving {}", path.display()), e))
}

/// `to` as seen from the folder `from` (both absolute): relative when they share more than
/// the root, `to` itself otherwise.
fn relative_to(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<Component<'_>> = from.components().collect();
    let to_parts: Vec<Component<'_>> = to.components().collect();
    let common = from
        .iter()
        .zip(&to_parts)
        .take_while(|(a, b)| a == b)
        .count();
    if common <= 1 {
        return to.to_path_buf();
    }
    let mut rel = PathBuf::new();
    for _ in common..from.len() {
        rel.push("..");
    }
    for part in &to_parts[common..] {
        rel.push(part);
    }
    rel
}

fn mkdir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(|e| {
        Error::io(
            format!("renaming {} to {}", from.display(), to.display()),
            e,
        )
    })
}

/// Writes `text` to `path` unless it already holds it, through a temporary file and a rename
/// so that a concurrent reader sees the old or the new file, never half of one.
fn write_if_changed(path: &Path, text: &str, executable: bool) -> Result<()> {
    let mode = if executable { 0o755 } else { 0o644 };
    if std::fs::read(path).is_ok_and(|old| old == text.as_bytes())
        && path
            .metadata()
            .is_ok_and(|m| m.permissions().mode() & 0o777 == mode)
    {
        return Ok(());
    }
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(".{name}.{}", std::process::id()));
    std::fs::write(&tmp, text).map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io(format!("chmod {}", tmp.display()), e))?;
    rename(&tmp, path)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let mut out = all[all.len().saturating_sub(lines)..].join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_links_stay_in_the_tree() {
        assert_eq!(
            relative_to(
                Path::new("/w/target/guest-kit/modules/lib/modules"),
                Path::new("/w/target/uml/usr/lib/uml/modules/6.1")
            ),
            PathBuf::from("../../../../uml/usr/lib/uml/modules/6.1")
        );
        assert_eq!(
            relative_to(
                Path::new("/w/target/kit"),
                Path::new("/usr/lib/uml/modules/6.1")
            ),
            PathBuf::from("/usr/lib/uml/modules/6.1")
        );
    }

    #[test]
    fn arguments_the_command_line_cannot_carry_are_refused() {
        check_argument("-Ln").unwrap();
        check_argument("10.0.0.1:80").unwrap();
        for bad in ["", "two words", "tab\there", "\"quoted\"", "new\nline"] {
            let err = check_argument(bad).unwrap_err();
            assert!(
                matches!(err, Error::InvalidArgument { .. }),
                "{bad:?}: {err}"
            );
            assert!(err.to_string().contains("script"), "{err}");
        }
    }

    #[test]
    fn a_kit_under_tmp_is_accepted_and_one_with_a_space_refused() {
        check_guest_path(Path::new("/tmp/fresh/target/guest-kit")).unwrap();
        let err = check_guest_path(Path::new("/work/my target/guest-kit")).unwrap_err();
        assert!(err.to_string().contains("whitespace"), "{err}");
    }

    #[test]
    fn a_missing_kernel_says_how_to_install_it() {
        let err = Error::MissingKernel {
            searched: vec![PathBuf::from("/x/usr/bin/linux.uml")],
        };
        let text = err.to_string();
        assert!(text.contains("/x/usr/bin/linux.uml"), "{text}");
        assert!(text.contains("scripts/install-deps.sh"), "{text}");
        assert!(
            text.contains("apt-get install -y user-mode-linux"),
            "{text}"
        );
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(tail("", 2), "");
    }
}
