//! `cleanup` against the real kernel, in a namespace of its own: leftovers of every kind this
//! machine can make (nftables tables of both families, KUBE-* chains of both iptables variants
//! and families with the jumps to them, a KUBE-* ipset used by a rule, a `kube-ipvs0` link with an address;
//! the host kernel has no IPVS, so no virtual service) are removed, and a user's own chain and
//! rule survive. Needs root and the tools `scripts/install-deps.sh` installs; without them it
//! fails saying what is missing.

use kproxy_dataplanes::{Error, Mode, Target, cleanup, preflight};
use kproxy_rig::{NetNs, netns};

fn require_kernel() {
    if let Err(error) = netns::check_environment() {
        panic!("kernel tests cannot run here: {error}");
    }
    for tool in [
        "nft",
        "iptables-nft-restore",
        "iptables-legacy-restore",
        "ip6tables-nft-restore",
        "ip6tables-legacy-restore",
        "ipset",
    ] {
        if let Err(error) = netns::require_tool(tool, &["--version"]) {
            panic!("cleanup tests cannot run here: {error}");
        }
    }
}

fn sh(ns: &NetNs, program: &str, args: &[&str], input: Option<&str>) -> String {
    ns.exec(program, args, input)
        .unwrap_or_else(|error| panic!("{program} {args:?}: {error}"))
}

const IPTABLES_LEFTOVERS: &str = "*nat
:KUBE-SERVICES - [0:0]
:KUBE-POSTROUTING - [0:0]
:USER-NAT - [0:0]
-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES
-A OUTPUT -j KUBE-SERVICES
-A POSTROUTING -j KUBE-POSTROUTING
-A POSTROUTING -j USER-NAT
-A KUBE-POSTROUTING -j MASQUERADE
-A USER-NAT -p tcp --dport 9 -j RETURN
COMMIT
*filter
:KUBE-FORWARD - [0:0]
-A FORWARD -j KUBE-FORWARD
-A INPUT -p tcp --dport 7 -j ACCEPT
COMMIT
";

fn make_leftovers(ns: &NetNs) {
    for family in ["ip", "ip6"] {
        sh(ns, "nft", &["add", "table", family, "kube-proxy"], None);
    }
    sh(ns, "nft", &["add", "table", "ip", "user-table"], None);
    for restore in [
        "iptables-nft-restore",
        "iptables-legacy-restore",
        "ip6tables-nft-restore",
        "ip6tables-legacy-restore",
    ] {
        sh(ns, restore, &["--noflush"], Some(IPTABLES_LEFTOVERS));
    }
    sh(
        ns,
        "ipset",
        &["create", "KUBE-CLUSTER-IP", "hash:ip,port"],
        None,
    );
    sh(ns, "ipset", &["create", "USER-SET", "hash:ip"], None);
    sh(
        ns,
        "iptables-legacy",
        &[
            "-t",
            "nat",
            "-A",
            "KUBE-SERVICES",
            "-m",
            "set",
            "--match-set",
            "KUBE-CLUSTER-IP",
            "dst,dst",
            "-j",
            "ACCEPT",
        ],
        None,
    );
    // This host kernel has no dummy links; a veth stands in (the cleanup deletes the link
    // whatever its type).
    sh(
        ns,
        "ip",
        &[
            "link",
            "add",
            "kube-ipvs0",
            "type",
            "veth",
            "peer",
            "name",
            "ipvs0-peer",
        ],
        None,
    );
    sh(
        ns,
        "ip",
        &["addr", "add", "10.96.0.1/32", "dev", "kube-ipvs0"],
        None,
    );
}

fn assert_clean(ns: &NetNs) {
    let tables = sh(ns, "nft", &["list", "tables"], None);
    assert!(!tables.contains("kube-proxy"), "nft tables left: {tables}");
    assert!(
        tables.contains("user-table"),
        "the user's table survives: {tables}"
    );
    for save in [
        "iptables-nft-save",
        "iptables-legacy-save",
        "ip6tables-nft-save",
        "ip6tables-legacy-save",
    ] {
        let saved = sh(ns, save, &[], None);
        assert!(
            !saved.contains("KUBE-"),
            "{save} still shows KUBE-*: {saved}"
        );
        assert!(
            saved.contains("-A POSTROUTING -j USER-NAT") && saved.contains("--dport 7 -j ACCEPT"),
            "{save}: the user's rules survive: {saved}"
        );
    }
    let sets = sh(ns, "ipset", &["list", "-n"], None);
    assert_eq!(sets.trim(), "USER-SET", "ipsets left: {sets}");
    assert!(
        ns.exec("ip", &["link", "show", "kube-ipvs0"], None)
            .is_err(),
        "kube-ipvs0 is gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_removes_every_modes_leftovers_and_nothing_else() {
    require_kernel();
    let ns = NetNs::new("cleanup").expect("namespace");
    make_leftovers(&ns);
    let target = Target::Netns(ns.name().to_owned());
    let report = cleanup(&target).await.expect("cleanup");
    println!("{report}");
    assert_clean(&ns);
    for expected in [
        "nftables table ip kube-proxy",
        "nftables table ip6 kube-proxy",
        "ipset KUBE-CLUSTER-IP",
        "link kube-ipvs0",
    ] {
        assert!(
            report.removed.iter().any(|r| r == expected),
            "{expected} not in {report:?}"
        );
    }
    assert_eq!(
        report
            .removed
            .iter()
            .filter(|r| r.contains("KUBE-SERVICES"))
            .count(),
        4,
        "KUBE-SERVICES in nat of both variants and families: {report:?}"
    );

    // The host kernel has no IPVS: the IPVS mode's own part is skipped, the rest done.
    if !std::path::Path::new("/proc/net/ip_vs").exists() {
        assert!(
            report
                .skipped
                .iter()
                .any(|s| s == "ipvs mode: the kernel has no IPVS"),
            "{report:?}"
        );
    }

    let again = cleanup(&target).await.expect("a second cleanup");
    assert!(again.removed.is_empty(), "{again:?}");
    assert_clean(&ns);
}

/// (A missing `nft` is checked end to end by the binary's CLI tests, which can run it with a
/// PATH that lacks it.)
#[test]
fn preflight_passes_where_nft_answers() {
    require_kernel();
    let ns = NetNs::new("preflight").expect("namespace");
    preflight(Mode::Nftables, &Target::Netns(ns.name().to_owned())).expect("nft is here");
    let error = preflight(
        Mode::Nftables,
        &Target::Netns("kpt-no-such-namespace".into()),
    )
    .expect_err("no such namespace");
    assert!(
        matches!(&error, Error::Kernel { stderr, .. } if stderr.contains("kpt-no-such-namespace")),
        "the tool's own message: {error}"
    );
}
