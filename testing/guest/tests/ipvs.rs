//! IPVS with real packets, inside the guest (the host kernel has no IPVS): round robin over
//! two servers in network namespaces alternates strictly.

use std::path::Path;
use std::time::{Duration, Instant};

use kproxy_guest::Guest;

#[test]
fn ipvs_round_robin_alternates_between_two_servers() {
    let guest = Guest::new().unwrap_or_else(|e| panic!("cannot prepare the UML guest: {e}"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/guest/ipvs_rr.sh");
    let started = Instant::now();
    let out = guest
        .run(
            Path::new("/bin/bash"),
            &[script.to_str().unwrap(), "6"],
            Duration::from_secs(60),
        )
        .unwrap_or_else(|e| panic!("the guest did not run {}: {e}", script.display()));
    eprintln!(
        "IPVS round robin in the guest, boot included: {:.2?}",
        started.elapsed()
    );
    eprint!("guest steps (uptime):\n{}", out.stderr);
    assert!(out.success(), "{out}");

    let replies: Vec<&str> = out
        .stdout
        .lines()
        .filter_map(|line| line.strip_prefix("reply "))
        .map(|rest| rest.split_once(": ").map_or(rest, |(_, who)| who))
        .collect();
    assert_eq!(replies.len(), 6, "{out}");
    assert!(
        replies.iter().all(|who| *who == "srv1" || *who == "srv2"),
        "{out}"
    );
    for pair in replies.windows(2) {
        assert_ne!(
            pair[0], pair[1],
            "round robin must alternate strictly: {replies:?}\n{out}"
        );
    }
    // the service's counters saw every connection
    assert!(out.stdout.contains("TCP  10.0.0.100:80"), "{out}");
}
