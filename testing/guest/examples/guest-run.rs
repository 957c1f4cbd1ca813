//! `cargo run -p kproxy-guest --example guest-run -- PROGRAM [ARGS...]`: runs one program in a
//! fresh UML guest and passes its output and exit status through (for benchmarks and
//! one-off checks that need the guest's kernel, e.g. `kproxy-bench --backend ipvs`).
//! `KPROXY_GUEST_TIMEOUT` (seconds, default 1800) bounds the run.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((program, rest)) = args.split_first() else {
        eprintln!("usage: guest-run PROGRAM [ARGS...] (PROGRAM an absolute path)");
        return ExitCode::from(2);
    };
    let timeout = std::env::var("KPROXY_GUEST_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1800);
    let guest = match kproxy_guest::Guest::new() {
        Ok(guest) => guest,
        Err(error) => {
            eprintln!("guest-run: cannot prepare the guest: {error}");
            return ExitCode::FAILURE;
        }
    };
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    match guest.run(Path::new(program), &rest, Duration::from_secs(timeout)) {
        Ok(out) => {
            print!("{}", out.stdout);
            eprint!("{}", out.stderr);
            eprintln!("guest-run: status {} after {:.1?}", out.status, out.elapsed);
            ExitCode::from(u8::try_from(out.status).unwrap_or(1))
        }
        Err(error) => {
            eprintln!("guest-run: {error}");
            ExitCode::FAILURE
        }
    }
}
