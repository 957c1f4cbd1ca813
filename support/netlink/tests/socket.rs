//! The socket against the real kernel: namespaces are entered and checked, a peer that never
//! answers fails a read after the timeout instead of hanging it. Needs root.

use std::time::{Duration, Instant};

use kproxy_netlink::{
    MessageBuffer, NETLINK_NETFILTER, NLM_F_ACK, NLM_F_REQUEST, Namespace, NetlinkError,
    NetlinkSocket,
};

/// A socket whose peer is another socket that reads nothing (a kernel that never answers).
fn pair() -> (NetlinkSocket, NetlinkSocket) {
    let swallower =
        NetlinkSocket::open_peer(NETLINK_NETFILTER).expect("a netlink socket (needs root)");
    let mut socket = NetlinkSocket::open(NETLINK_NETFILTER, &Namespace::Current).unwrap();
    socket.connect_to_port(swallower.port().unwrap()).unwrap();
    (swallower, socket)
}

#[test]
fn a_peer_that_never_answers_fails_the_read_after_the_timeout() {
    let (_swallower, mut socket) = pair();
    socket.set_timeout(Duration::from_millis(300));
    let mut batch = MessageBuffer::new(socket.reserve(1));
    batch
        .push(0x0a00, NLM_F_REQUEST | NLM_F_ACK, &[0, 0, 0, 0], |_| {})
        .unwrap();
    socket.send(batch.bytes()).unwrap();
    let started = Instant::now();
    let result = socket.receive_until("the test's acknowledgement", |_| Ok(true));
    let waited = started.elapsed();
    assert!(
        matches!(result, Err(NetlinkError::Timeout { .. })),
        "{result:?}"
    );
    assert!(
        waited >= Duration::from_millis(290) && waited < Duration::from_secs(3),
        "waited {waited:?}"
    );
}

#[test]
fn a_write_larger_than_the_default_send_buffer_goes_out_whole() {
    let (_swallower, mut socket) = pair();
    let mut batch = MessageBuffer::new(socket.reserve(2_000));
    for _ in 0..2_000 {
        batch
            .push(0x0a00, NLM_F_REQUEST, &[0, 0, 0, 0], |w| {
                w.bytes(1, &[0; 1_000]);
            })
            .unwrap();
    }
    assert!(batch.len() > 2_000_000);
    socket.send(batch.bytes()).expect("one write of 2 MB");
}

#[test]
fn a_missing_namespace_is_named_in_the_error() {
    let error = NetlinkSocket::open(
        NETLINK_NETFILTER,
        &Namespace::Named("kproxy-no-such-namespace".into()),
    )
    .unwrap_err();
    assert!(
        matches!(&error, NetlinkError::Namespace { name, .. } if name == "kproxy-no-such-namespace"),
        "{error}"
    );
}
