//! NetlinkIpvs against a real kernel with IPVS: inside the UML guest (the host kernel has
//! none), in a namespace of the guest's own kernel. What the backend wrote is read back
//! through its own dumps and compared with the model's values, and through the tools
//! (`ipvsadm`, `ipset`, `ip`, `sysctl`), so the encoder cannot agree with a wrong decoder;
//! one TCP connection through a virtual server proves the kernel forwards what was encoded.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::{ip, tcp};

use kproxy_core::{IpFamily, Protocol};
use kproxy_ipvs::model::{
    FLAG_PERSISTENT, FLAG_SCHED2, IpvsOp, RealServer, ServiceKey, SetEntry, SetKind, SetOp,
    SetSpec, VirtualServer,
};
use kproxy_ipvs::{IpvsError, IpvsKernel, NetlinkIpvs, Timeouts};

const NS: &str = "kpt-ipvs-k";
const SERVER_NS: &str = "kpt-ipvs-srv";

#[test]
fn netlink_kernel_in_guest() {
    kproxy_guest::run_test_in_guest("guest_netlink_kernel", Duration::from_secs(120));
}

/// Runs a shell command of the guest; its stdout, or a panic with its stderr.
fn sh(command: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", command])
        .output()
        .unwrap_or_else(|e| panic!("{command}: {e}"));
    assert!(
        out.status.success(),
        "{command}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn service(key: ServiceKey, scheduler: &str, flags: u32, timeout: u32) -> VirtualServer {
    VirtualServer {
        key,
        scheduler: scheduler.to_owned(),
        flags,
        timeout,
    }
}

fn server(addr: &str, port: u16, weight: u32) -> RealServer {
    RealServer {
        addr: ip(addr),
        port,
        weight,
    }
}

fn step(started: Instant, what: &str) {
    eprintln!("{:6.2?} {what}", started.elapsed());
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "runs inside the UML guest"]
async fn guest_netlink_kernel() {
    kproxy_guest::require_inside();
    let started = Instant::now();
    sh("modprobe -a ip_vs ip_vs_rr ip_vs_wrr ip_vs_mh dummy veth");
    sh(&format!("ip netns add {NS} && ip -n {NS} link set lo up"));
    let mut kernel = NetlinkIpvs::in_netns(NS);
    kernel.check().await.expect("check");
    step(started, "checked");

    virtual_and_real_servers(&mut kernel).await;
    step(started, "virtual and real servers");
    refusals(&mut kernel).await;
    step(started, "refusals");
    timeouts(&mut kernel).await;
    step(started, "timeouts");
    links_and_addresses(&mut kernel).await;
    step(started, "links and addresses");
    ipsets(&mut kernel).await;
    step(started, "ipsets");
    sysctls(&mut kernel).await;
    step(started, "sysctls");
    a_connection_goes_through(&mut kernel).await;
    step(started, "a connection through a virtual server");

    sh(&format!("ip netns del {SERVER_NS}; ip netns del {NS}"));
}

fn services() -> Vec<VirtualServer> {
    vec![
        service(tcp("10.96.0.10", 80), "rr", 0, 0),
        service(
            ServiceKey::Address {
                protocol: Protocol::Udp,
                addr: ip("fd00::10"),
                port: 53,
            },
            "rr",
            0,
            0,
        ),
        service(
            ServiceKey::Fwmark {
                family: IpFamily::V4,
                mark: 0x4000,
            },
            "rr",
            0,
            0,
        ),
        service(tcp("10.96.0.11", 443), "wrr", FLAG_PERSISTENT, 10800),
        service(tcp("10.96.0.12", 8080), "mh", FLAG_SCHED2, 0),
    ]
}

async fn sorted_services(kernel: &mut NetlinkIpvs) -> Vec<VirtualServer> {
    let mut listed = kernel.virtual_servers().await.expect("virtual servers");
    listed.sort();
    listed
}

async fn weights(kernel: &mut NetlinkIpvs, key: &ServiceKey) -> Vec<RealServer> {
    let mut listed: Vec<RealServer> = kernel
        .real_servers(key)
        .await
        .expect("real servers")
        .into_iter()
        .map(|status| status.server)
        .collect();
    listed.sort();
    listed
}

async fn virtual_and_real_servers(kernel: &mut NetlinkIpvs) {
    let mut wanted = services();
    let ops: Vec<IpvsOp> = wanted.iter().cloned().map(IpvsOp::AddService).collect();
    kernel.apply(&ops).await.expect("add services");
    wanted.sort();
    assert_eq!(sorted_services(kernel).await, wanted);

    let [cluster_ip, dns, fwmark, persistent, _mh]: [VirtualServer; 5] =
        services().try_into().unwrap();
    let ops = vec![
        IpvsOp::AddServer(cluster_ip.key, server("10.1.0.5", 8080, 1)),
        IpvsOp::AddServer(cluster_ip.key, server("10.1.0.6", 8080, 1)),
        IpvsOp::AddServer(dns.key, server("fd00::1:5", 5353, 1)),
        IpvsOp::AddServer(fwmark.key, server("10.1.0.7", 80, 1)),
        IpvsOp::EditServer(cluster_ip.key, server("10.1.0.6", 8080, 0)),
        IpvsOp::DeleteServer(cluster_ip.key, server("10.1.0.5", 8080, 1)),
        IpvsOp::EditService(service(persistent.key, "rr", FLAG_PERSISTENT, 600)),
    ];
    kernel.apply(&ops).await.expect("real servers");
    assert_eq!(
        weights(kernel, &cluster_ip.key).await,
        [server("10.1.0.6", 8080, 0)]
    );
    assert_eq!(
        weights(kernel, &dns.key).await,
        [server("fd00::1:5", 5353, 1)]
    );
    assert_eq!(
        weights(kernel, &fwmark.key).await,
        [server("10.1.0.7", 80, 1)]
    );
    let counters = kernel.real_servers(&dns.key).await.unwrap();
    assert_eq!((counters[0].active, counters[0].inactive), (0, 0));
    let listed = sorted_services(kernel).await;
    assert!(
        listed.contains(&service(persistent.key, "rr", FLAG_PERSISTENT, 600)),
        "{listed:#?}"
    );

    // what ipvsadm reads of the same kernel state
    let text = sh(&format!("ip netns exec {NS} ipvsadm -Ln"));
    eprintln!("{text}");
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let has = |words: &[&str]| lines.iter().any(|line| line.as_slice() == words);
    assert!(has(&["TCP", "10.96.0.10:80", "rr"]), "{text}");
    assert!(
        has(&["->", "10.1.0.6:8080", "Masq", "0", "0", "0"]),
        "{text}"
    );
    assert!(has(&["UDP", "[fd00::10]:53", "rr"]), "{text}");
    assert!(
        has(&["->", "[fd00::1:5]:5353", "Masq", "1", "0", "0"]),
        "{text}"
    );
    assert!(has(&["FWM", "16384", "rr"]), "{text}");
    assert!(
        has(&["TCP", "10.96.0.11:443", "rr", "persistent", "600"]),
        "{text}"
    );
    assert!(
        lines
            .iter()
            .any(|line| line.starts_with(&["TCP", "10.96.0.12:8080", "mh"])
                && line.iter().any(|word| word.contains("mh-port"))),
        "{text}"
    );

    kernel
        .apply(&[IpvsOp::DeleteService(fwmark.key)])
        .await
        .expect("delete service");
    let listed = sorted_services(kernel).await;
    assert_eq!(listed.len(), 4, "{listed:#?}");
    assert!(listed.iter().all(|vs| vs.key != fwmark.key), "{listed:#?}");
}

async fn refusals(kernel: &mut NetlinkIpvs) {
    let cluster_ip = services().remove(0);
    let ops = [
        IpvsOp::AddServer(cluster_ip.key, server("10.1.0.9", 80, 1)),
        IpvsOp::AddService(cluster_ip.clone()),
        IpvsOp::AddServer(cluster_ip.key, server("10.1.0.10", 80, 1)),
    ];
    let error = kernel.apply(&ops).await.expect_err("a duplicate service");
    assert_eq!(error.applied, 1, "{error}");
    // the kernel went on after the refusal within the write: the caller must know
    assert_eq!(error.applied_after, [2], "{error}");
    let text = error.to_string();
    assert!(
        text.contains("add virtual server TCP 10.96.0.10:80") && text.contains("File exists"),
        "{text}"
    );
    assert!(
        matches!(error.error, IpvsError::Netlink { .. }),
        "{error:?}"
    );
    let listed = weights(kernel, &cluster_ip.key).await;
    assert_eq!(
        listed,
        [
            server("10.1.0.6", 8080, 0),
            server("10.1.0.9", 80, 1),
            server("10.1.0.10", 80, 1)
        ]
    );
    kernel
        .apply(&[IpvsOp::DeleteServer(
            cluster_ip.key,
            server("10.1.0.10", 80, 1),
        )])
        .await
        .unwrap();

    let missing = tcp("10.96.0.99", 80);
    let error = kernel
        .apply(&[IpvsOp::AddServer(missing, server("10.1.0.5", 80, 1))])
        .await
        .expect_err("a real server of no service");
    assert_eq!(error.applied, 0);
    let text = error.to_string();
    assert!(
        text.contains("add real server 10.1.0.5:80 to TCP 10.96.0.99:80")
            && text.contains("No such process"),
        "{text}"
    );
    assert!(kernel.real_servers(&missing).await.unwrap().is_empty());
}

async fn timeouts(kernel: &mut NetlinkIpvs) {
    let timeouts = Timeouts {
        tcp: Some(Duration::from_secs(900)),
        tcp_fin: Some(Duration::from_secs(120)),
        udp: Some(Duration::from_secs(300)),
    };
    kernel.set_timeouts(&timeouts).await.expect("timeouts");
    let text = sh(&format!("ip netns exec {NS} ipvsadm -L --timeout"));
    assert_eq!(text.trim(), "Timeout (tcp tcpfin udp): 900 120 300");
    // an absent timeout keeps the kernel's value
    kernel
        .set_timeouts(&Timeouts {
            udp: Some(Duration::from_secs(30)),
            ..Timeouts::default()
        })
        .await
        .expect("udp timeout");
    let text = sh(&format!("ip netns exec {NS} ipvsadm -L --timeout"));
    assert_eq!(text.trim(), "Timeout (tcp tcpfin udp): 900 120 30");
}

async fn links_and_addresses(kernel: &mut NetlinkIpvs) {
    let link = "kube-ipvs0";
    assert_eq!(kernel.link_addresses(link).await.unwrap(), None);
    kernel.ensure_dummy_link(link).await.expect("create");
    kernel.ensure_dummy_link(link).await.expect("create again");
    assert_eq!(kernel.link_addresses(link).await.unwrap(), Some(vec![]));
    let text = sh(&format!("ip -n {NS} -d link show {link}"));
    assert!(
        text.contains("dummy") && text.contains("state DOWN"),
        "{text}"
    );

    let (v4, v6) = (ip("10.96.0.10"), ip("fd00::10"));
    kernel
        .change_link_addresses(link, &[v4, v6], &[])
        .await
        .expect("add addresses");
    kernel
        .change_link_addresses(link, &[v4], &[ip("10.96.0.77")])
        .await
        .expect("add again, remove absent");
    let mut listed = kernel.link_addresses(link).await.unwrap().unwrap();
    listed.sort();
    assert_eq!(listed, [v4, v6]);
    let text = sh(&format!("ip -n {NS} addr show {link}"));
    assert!(
        text.contains("inet 10.96.0.10/32") && text.contains("inet6 fd00::10/128"),
        "{text}"
    );

    let local = kernel.local_addresses().await.expect("local addresses");
    let has = |link: &str, addr: IpAddr| local.iter().any(|a| a.link == link && a.addr == addr);
    assert!(has("kube-ipvs0", v4) && has("kube-ipvs0", v6), "{local:?}");
    assert!(has("lo", ip("127.0.0.1")), "{local:?}");

    kernel
        .change_link_addresses(link, &[], &[v4])
        .await
        .expect("remove");
    assert_eq!(kernel.link_addresses(link).await.unwrap(), Some(vec![v6]));

    assert!(kernel.delete_link(link).await.unwrap());
    assert!(!kernel.delete_link(link).await.unwrap());
    assert_eq!(kernel.link_addresses(link).await.unwrap(), None);
    let error = kernel
        .change_link_addresses(link, &[v4], &[])
        .await
        .expect_err("no link");
    assert!(error.to_string().contains(link), "{error}");
}

fn spec(name: &'static str, kind: SetKind, family: IpFamily) -> SetSpec {
    SetSpec {
        name,
        kind,
        family,
        comment: "test",
    }
}

fn entry(kind: SetKind, text: &str) -> SetEntry {
    SetEntry::parse(kind, text).unwrap()
}

/// What `ipset save` run in the namespace prints: the `KUBE-*` sets, each with its members
/// (the word after the set's name on its `add` lines; extensions such as `timeout 299` after
/// it are left out, as `list_sets` leaves them).
fn ipset_save(ns: &str) -> BTreeMap<String, Vec<String>> {
    let text = sh(&format!("ip netns exec {ns} ipset save"));
    let mut sets: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["create", name, ..] if name.starts_with("KUBE-") => {
                sets.entry((*name).to_owned()).or_default();
            }
            ["add", name, member, ..] if name.starts_with("KUBE-") => {
                sets.entry((*name).to_owned())
                    .or_default()
                    .push((*member).to_owned());
            }
            _ => {}
        }
    }
    sets
}

/// `list_sets` (an nfnetlink dump) and `ipset save` in the same namespace agree, member for
/// member and in the same order; the listing.
async fn listed_as_ipset_saves(kernel: &mut NetlinkIpvs) -> BTreeMap<String, Vec<String>> {
    let started = Instant::now();
    let listed = kernel.list_sets().await.expect("list");
    let dumped = started.elapsed();
    let started = Instant::now();
    let saved = ipset_save(NS);
    let members: usize = listed.values().map(Vec::len).sum();
    eprintln!(
        "{} sets, {members} members: listed in {dumped:.2?}, ipset save in {:.2?}",
        listed.len(),
        started.elapsed()
    );
    if listed != saved {
        for name in listed.keys().chain(saved.keys()) {
            let (ours, theirs) = (listed.get(name), saved.get(name));
            if ours != theirs {
                let head = |members: Option<&Vec<String>>| {
                    members.map(|m| (m.len(), m.iter().take(5).cloned().collect::<Vec<_>>()))
                };
                panic!(
                    "ipset {name}: list_sets {:?}, ipset save {:?}",
                    head(ours),
                    head(theirs)
                );
            }
        }
    }
    listed
}

async fn ipsets(kernel: &mut NetlinkIpvs) {
    use IpFamily::{V4, V6};
    use SetKind::*;
    let sets = [
        (spec("KUBE-T-IP", HashIp, V4), "10.0.0.1", "10.0.0.2"),
        (spec("KUBE-6-T-IP", HashIp, V6), "fd00::1", "fd00::2"),
        (
            spec("KUBE-T-IP-PORT", HashIpPort, V4),
            "172.30.0.1,tcp:80",
            "172.30.0.2,udp:53",
        ),
        (
            spec("KUBE-6-T-IP-PORT", HashIpPort, V6),
            "fd00::1,sctp:80",
            "fd00::2,udp:53",
        ),
        (
            spec("KUBE-T-IP-PORT-IP", HashIpPortIp, V4),
            "10.1.0.5,tcp:8080,10.1.0.5",
            "10.1.0.6,udp:53,10.1.0.6",
        ),
        (
            spec("KUBE-6-T-IP-PORT-IP", HashIpPortIp, V6),
            "fd00::5,tcp:8080,fd00::5",
            "fd00::6,tcp:8080,fd00::6",
        ),
        (
            spec("KUBE-T-IP-PORT-NET", HashIpPortNet, V4),
            "1.2.3.4,tcp:80,10.0.0.0/8",
            "1.2.3.4,tcp:80,192.168.0.2",
        ),
        (
            spec("KUBE-6-T-IP-PORT-NET", HashIpPortNet, V6),
            "fd00::4,tcp:80,fd01::/64",
            "fd00::4,udp:80,fd02::9",
        ),
        (spec("KUBE-T-PORT", BitmapPort, V4), "30080", "30081"),
    ];
    let mut script: String = sets
        .iter()
        .map(|(set, _, _)| format!("create {} {}\n", set.name, set.create_args()))
        .collect();
    script.push_str("add KUBE-T-IP 10.0.0.99\n");
    kernel.restore_sets(&script).await.expect("restore");
    // -exist: the same script again is no error
    kernel.restore_sets(&script).await.expect("restore again");
    let listed = listed_as_ipset_saves(kernel).await;
    assert_eq!(listed.len(), sets.len(), "{listed:#?}");
    assert_eq!(listed["KUBE-T-IP"], ["10.0.0.99"]);

    let mut ops = Vec::new();
    for (set, first, second) in &sets {
        for text in [first, second, first] {
            ops.push(SetOp {
                set: *set,
                entry: entry(set.kind, text),
                add: true,
            });
        }
        // the second goes again, and a delete of what is not there is no error
        ops.push(SetOp {
            set: *set,
            entry: entry(set.kind, second),
            add: false,
        });
        ops.push(SetOp {
            set: *set,
            entry: entry(set.kind, second),
            add: false,
        });
    }
    ops.push(SetOp {
        set: sets[0].0,
        entry: entry(HashIp, "10.0.0.99"),
        add: false,
    });
    kernel.update_sets(&ops).await.expect("update");
    let listed = listed_as_ipset_saves(kernel).await;
    for (set, first, _) in &sets {
        let members: Vec<SetEntry> = listed[set.name]
            .iter()
            .map(|text| entry(set.kind, text))
            .collect();
        assert_eq!(
            members,
            [entry(set.kind, first)],
            "{}: {listed:#?}",
            set.name
        );
    }

    large_sets(kernel, &sets).await;

    let missing = spec("KUBE-T-NONE", HashIp, V4);
    let error = kernel
        .update_sets(&[SetOp {
            set: missing,
            entry: entry(HashIp, "10.0.0.1"),
            add: true,
        }])
        .await
        .expect_err("no such set");
    let text = error.to_string();
    assert!(
        text.contains("add 10.0.0.1 to ipset KUBE-T-NONE") && text.contains("No such file"),
        "{text}"
    );
    let error = kernel
        .update_sets(&[SetOp {
            set: sets[0].0,
            entry: entry(HashIp, "fd00::1"),
            add: true,
        }])
        .await
        .expect_err("an IPv6 entry of an IPv4 set");
    assert!(
        matches!(&error, IpvsError::IpsetRefused { code: 4097, what, .. } if what == "add fd00::1 to ipset KUBE-T-IP"),
        "{error:?}"
    );
    eprintln!("refused as it should: {error}");

    let destroy: String = sets
        .iter()
        .map(|(set, _, _)| set.name)
        .chain(LARGE_SETS.iter().map(|set| set.name))
        .chain(["KUBE-T-EXTENSIONS"])
        .map(|name| format!("destroy {name}\n"))
        .collect();
    kernel.restore_sets(&destroy).await.expect("destroy");
    assert!(kernel.list_sets().await.unwrap().is_empty());
    let error = kernel
        .restore_sets("create KUBE-T-BAD hash:nonsense\n")
        .await
        .expect_err("bad script");
    assert!(matches!(error, IpvsError::Refused { .. }), "{error:?}");
}

const LARGE_SETS: [SetSpec; 2] = [
    SetSpec {
        name: "KUBE-T-LARGE",
        kind: SetKind::HashIpPort,
        family: IpFamily::V4,
        comment: "test",
    },
    SetSpec {
        name: "KUBE-6-T-LARGE",
        kind: SetKind::HashIpPortNet,
        family: IpFamily::V6,
        comment: "test",
    },
];

/// Every kind with several members, two sets of thousands (their dumps span many messages)
/// and a set with extensions (timeouts, counters, comments), read back by `list_sets` as
/// `ipset save` prints them.
async fn large_sets(kernel: &mut NetlinkIpvs, sets: &[(SetSpec, &str, &str)]) {
    let mut script: String = LARGE_SETS
        .iter()
        .map(|set| format!("create {} {}\n", set.name, set.create_args()))
        .collect();
    script.push_str(
        "create KUBE-T-EXTENSIONS hash:ip,port family inet timeout 600 counters comment\n\
         add KUBE-T-EXTENSIONS 10.0.0.1,tcp:80 timeout 300 comment \"a comment\"\n\
         add KUBE-T-EXTENSIONS 10.0.0.2,udp:53 packets 7 bytes 700\n",
    );
    kernel
        .restore_sets(&script)
        .await
        .expect("create large sets");
    let mut ops: Vec<SetOp> = sets
        .iter()
        .map(|(set, _, second)| SetOp {
            set: *set,
            entry: entry(set.kind, second),
            add: true,
        })
        .collect();
    let [large, large6] = LARGE_SETS;
    let (mut v4, mut v6) = (String::new(), String::new());
    for i in 0..6_000u32 {
        let protocol = ["tcp", "udp", "sctp"][i as usize % 3];
        write!(
            v4,
            "10.{}.{}.{},{protocol}:{}",
            i >> 16,
            (i >> 8) & 0xff,
            i & 0xff,
            1 + i % 1000
        )
        .unwrap();
        ops.push(SetOp {
            set: large,
            entry: entry(large.kind, &v4),
            add: true,
        });
        v4.clear();
        if i < 5_000 {
            let net = if i % 2 == 0 {
                format!("fd01:{i:x}::/64")
            } else {
                format!("fd02::{i:x}")
            };
            write!(v6, "fd00::{i:x},{protocol}:{},{net}", 30000 + i % 100).unwrap();
            ops.push(SetOp {
                set: large6,
                entry: entry(large6.kind, &v6),
                add: true,
            });
            v6.clear();
        }
    }
    kernel.update_sets(&ops).await.expect("fill");

    let listed = listed_as_ipset_saves(kernel).await;
    assert_eq!(listed.len(), sets.len() + 3, "{:?}", listed.keys());
    for (set, first, second) in sets {
        let mut members: Vec<SetEntry> = listed[set.name]
            .iter()
            .map(|text| entry(set.kind, text))
            .collect();
        members.sort();
        let mut want = vec![entry(set.kind, first), entry(set.kind, second)];
        want.sort();
        assert_eq!(members, want, "{}", set.name);
    }
    assert_eq!(listed[large.name].len(), 6_000);
    assert_eq!(listed[large6.name].len(), 5_000);
    let mut extensions = listed["KUBE-T-EXTENSIONS"].clone();
    extensions.sort();
    assert_eq!(extensions, ["10.0.0.1,tcp:80", "10.0.0.2,udp:53"]);
}

async fn sysctls(kernel: &mut NetlinkIpvs) {
    kernel
        .set_sysctls(&[
            ("net.ipv4.vs.conntrack", "1"),
            ("net.ipv4.conf.all.arp_ignore", "1"),
            ("net.ipv4.conf.all.arp_announce", "2"),
        ])
        .await
        .expect("sysctls");
    let read = |ns: Option<&str>, key: &str| {
        let exec = ns.map_or(String::new(), |ns| format!("ip netns exec {ns} "));
        sh(&format!("{exec}sysctl -n {key}")).trim().to_owned()
    };
    assert_eq!(read(Some(NS), "net.ipv4.vs.conntrack"), "1");
    assert_eq!(read(Some(NS), "net.ipv4.conf.all.arp_ignore"), "1");
    assert_eq!(read(Some(NS), "net.ipv4.conf.all.arp_announce"), "2");
    // the guest's root namespace kept its own
    assert_eq!(read(None, "net.ipv4.conf.all.arp_ignore"), "0");
    let error = kernel
        .set_sysctls(&[("net.ipv4.no_such_setting", "1")])
        .await
        .expect_err("unknown key");
    assert!(error.to_string().contains("no_such_setting"), "{error}");
}

const RESPONDER: &str = r#"
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 8080))
s.listen(16)
while True:
    c, peer = s.accept()
    c.settimeout(2)
    try:
        c.recv(4096)
        body = ("served by %s\n" % sys.argv[1]).encode()
        c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    except OSError:
        pass
    c.close()
"#;

/// A NAT virtual server made only through NetlinkIpvs forwards a TCP connection to its real
/// server in another namespace.
async fn a_connection_goes_through(kernel: &mut NetlinkIpvs) {
    sh(&format!(
        "ip netns add {SERVER_NS}
         ip -n {SERVER_NS} link set lo up
         ip -n {NS} link add veth-k type veth peer name eth0 netns {SERVER_NS}
         ip -n {NS} addr add 10.2.0.1/30 dev veth-k
         ip -n {NS} link set veth-k up
         ip -n {SERVER_NS} addr add 10.2.0.2/30 dev eth0
         ip -n {SERVER_NS} link set eth0 up
         ip -n {SERVER_NS} route add default via 10.2.0.1"
    ));
    let mut responder = Command::new("ip")
        .args([
            "netns",
            "exec",
            SERVER_NS,
            "/usr/bin/python3",
            "-S",
            "-c",
            RESPONDER,
            "10.2.0.2",
        ])
        .spawn()
        .expect("responder");

    let vip = tcp("10.96.0.20", 80);
    kernel.ensure_dummy_link("kube-ipvs0").await.unwrap();
    kernel
        .change_link_addresses("kube-ipvs0", &[ip("10.96.0.20")], &[])
        .await
        .unwrap();
    kernel
        .apply(&[
            IpvsOp::AddService(service(vip, "rr", 0, 0)),
            IpvsOp::AddServer(vip, server("10.2.0.2", 8080, 1)),
        ])
        .await
        .expect("virtual server");

    let curl = |url: &str| {
        Command::new("ip")
            .args(["netns", "exec", NS, "curl", "-s", "--max-time", "2", url])
            .output()
            .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
            .unwrap_or_default()
    };
    // the responder is up once it answers directly (bounded wait)
    let mut up = false;
    for _ in 0..50 {
        if curl("http://10.2.0.2:8080/").contains("served by") {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "the responder did not come up");
    let reply = curl("http://10.96.0.20/");
    let _ = responder.kill();
    let _ = responder.wait();
    assert_eq!(reply, "served by 10.2.0.2\n");
    let listed = kernel.real_servers(&vip).await.unwrap();
    assert_eq!(listed[0].server, server("10.2.0.2", 8080, 1));
    eprintln!("through the virtual server: {reply:?}, counters {listed:?}");
}
