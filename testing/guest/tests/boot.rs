//! The guest boots, runs a program and brings back its status and output.

use std::path::Path;
use std::time::Duration;

use kproxy_guest::Guest;

const TIMEOUT: Duration = Duration::from_secs(60);

/// A guest, or a failure that says what is missing: these tests never skip.
fn guest() -> Guest {
    Guest::new().unwrap_or_else(|e| panic!("cannot prepare the UML guest: {e}"))
}

#[test]
fn a_program_that_succeeds_comes_back_with_status_0() {
    let guest = guest();
    let out = guest
        .run(Path::new("/bin/true"), &[], TIMEOUT)
        .unwrap_or_else(|e| panic!("the guest did not run /bin/true: {e}"));
    eprintln!("/bin/true in the guest: {:.2?}", out.elapsed);
    assert!(out.success(), "{out}");
    assert_eq!(out.stdout, "");
    assert_eq!(out.stderr, "");
}

#[test]
fn a_failing_program_s_status_and_output_come_back() {
    let guest = guest();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/guest/exit_with.sh");
    let out = guest
        .run(
            Path::new("/bin/sh"),
            &[script.to_str().unwrap(), "to-stdout", "to-stderr", "7"],
            TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("the guest did not run {}: {e}", script.display()));
    eprintln!("exit_with.sh in the guest: {:.2?}", out.elapsed);
    assert_eq!(out.status, 7, "{out}");
    assert!(!out.success());
    let mut lines = out.stdout.lines();
    assert_eq!(lines.next(), Some("to-stdout"), "{out}");
    assert_eq!(
        lines.next(),
        Some(format!("kernel {}", guest.kernel_version()).as_str()),
        "{out}"
    );
    assert_eq!(out.stderr, "to-stderr\n", "{out}");
    assert!(out.stdout.contains("modprobe /"), "{out}");
}

#[test]
fn arguments_the_kernel_command_line_cannot_carry_fail_before_booting() {
    let guest = guest();
    let err = guest
        .run(Path::new("/bin/echo"), &["two words"], TIMEOUT)
        .unwrap_err();
    assert!(
        matches!(err, kproxy_guest::Error::InvalidArgument { .. }),
        "{err}"
    );
    let err = guest.run(Path::new("echo"), &[], TIMEOUT).unwrap_err();
    assert!(err.to_string().contains("absolute"), "{err}");
}

#[test]
fn a_guest_that_runs_too_long_is_killed_and_reported() {
    let guest = guest();
    let started = std::time::Instant::now();
    let err = guest
        .run(Path::new("/bin/sleep"), &["600"], Duration::from_secs(5))
        .unwrap_err();
    let kproxy_guest::Error::TimedOut { run_dir, .. } = &err else {
        panic!("expected a timeout, got: {err}");
    };
    assert!(
        err.to_string().contains("did not finish within 5s"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    // a timed-out run keeps its folder for inspection; this one was expected
    std::fs::remove_dir_all(run_dir).unwrap();
}

#[test]
fn a_guest_that_stops_without_a_status_is_an_error() {
    let guest = guest();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/guest/power_off.sh");
    let err = guest
        .run(Path::new("/bin/sh"), &[script.to_str().unwrap()], TIMEOUT)
        .unwrap_err();
    let kproxy_guest::Error::NoStatus { run_dir, .. } = &err else {
        panic!("expected a missing status, got: {err}");
    };
    assert!(
        err.to_string()
            .contains("without writing the program's exit status"),
        "{err}"
    );
    std::fs::remove_dir_all(run_dir).unwrap();
}
