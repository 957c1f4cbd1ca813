//! Probes: real packets from a source namespace, and what became of them.
//!
//! A probe is a TCP connect and read, a UDP send and receive, or an SCTP connect and read,
//! from the namespace that owns its source address, bound to that address and a fresh source
//! port. Its [`Outcome`] is a server's answer (which says where the packet arrived and from
//! which source), a refusal (TCP reset or ICMP unreachable: REJECT), or silence until the
//! timeout (DROP). [`check`] sends a probe as often as an [`Expectation`] needs and says
//! whether it held.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use kproxy_core::Protocol;
use nix::errno::Errno;
use nix::sys::socket::{SockProtocol, SockType};
use tokio::io::AsyncReadExt;

use crate::error::Error;
use crate::netns::{self, NetNs};
use crate::world::World;

pub use crate::packet::{Probe, Reply};

/// How long a probe waits for an answer before calling it dropped.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);

/// How many times a probe to a service with session affinity is sent.
pub const AFFINITY_ATTEMPTS: usize = 10;

/// The largest chance tolerated that a listed endpoint never answers although it is in the
/// rotation (random balancing).
pub const MISS_PROBABILITY: f64 = 1e-6;

/// What became of one probe.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// A server answered.
    Reply(Reply),
    /// The connection was refused or an ICMP unreachable came back (REJECT).
    Refused(String),
    /// No answer and no refusal before the timeout, or the packet was dropped on its way out
    /// of the source namespace (DROP).
    Dropped(String),
    /// The probe could not be run (or the answer made no sense); never a pass.
    Error(String),
}

impl Outcome {
    /// A short description for reports.
    pub fn describe(&self, src: IpAddr) -> String {
        match self {
            Outcome::Reply(reply) => {
                let source = if reply.peer.ip() == src {
                    "source kept".to_owned()
                } else {
                    format!("masqueraded to {}", reply.peer.ip())
                };
                format!(
                    "{} ({} in {}, {source})",
                    reply.local, reply.kind, reply.role
                )
            }
            Outcome::Refused(why) => format!("REJECT ({why})"),
            Outcome::Dropped(why) => format!("DROP ({why})"),
            Outcome::Error(why) => format!("error: {why}"),
        }
    }
}

/// What a probe must meet (the scenario format's `expect`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expectation {
    /// DNAT to one of these endpoints.
    Endpoints(Vec<SocketAddr>),
    /// An immediate refusal.
    Reject,
    /// Silence.
    Drop,
    /// Untouched: the owner of the destination answers at the destination itself (`""`).
    Untouched,
    /// Let through to the node itself, unchanged.
    Accept,
}

impl FromStr for Expectation {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim() {
            "" => Ok(Expectation::Untouched),
            "REJECT" => Ok(Expectation::Reject),
            "DROP" => Ok(Expectation::Drop),
            "ACCEPT" => Ok(Expectation::Accept),
            list => list
                .split(',')
                .map(|item| {
                    item.trim().parse::<SocketAddr>().map_err(|_| {
                        format!(
                            "expect: {item:?} is not an endpoint (ip:port or [ipv6]:port), REJECT, DROP, ACCEPT or \"\""
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Expectation::Endpoints),
        }
    }
}

impl fmt::Display for Expectation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expectation::Endpoints(list) => {
                let items: Vec<String> = list.iter().map(SocketAddr::to_string).collect();
                f.write_str(&items.join(", "))
            }
            Expectation::Reject => f.write_str("REJECT"),
            Expectation::Drop => f.write_str("DROP"),
            Expectation::Untouched => f.write_str("untouched"),
            Expectation::Accept => f.write_str("ACCEPT"),
        }
    }
}

/// How a check is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckOptions {
    /// For an endpoint outcome: `Some(true)` requires a source other than the probe's
    /// (masquerade), `Some(false)` the probe's own source, `None` does not look.
    pub masq: Option<bool>,
    /// The service has ClientIP session affinity: every answer must come from one endpoint,
    /// and not every listed endpoint needs to answer.
    pub affinity: bool,
    /// How long to wait for an answer.
    pub timeout: Duration,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            masq: Some(false),
            affinity: false,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// The result of a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the expectation held.
    pub pass: bool,
    /// What was seen, for the report.
    pub seen: String,
}

/// How many probes make it overwhelmingly likely (miss chance below [`MISS_PROBABILITY`])
/// that each of `endpoints` equally likely endpoints answers at least once: the smallest `n`
/// with `k · (1 − 1/k)^n < p`. At least 3, so a stray answer has chances to show.
pub fn attempts_for(endpoints: usize) -> usize {
    if endpoints <= 1 {
        return 3;
    }
    let k = endpoints as f64;
    let n = ((k / MISS_PROBABILITY).ln() / -(1.0 - 1.0 / k).ln()).ceil();
    // A float of a few hundred converts exactly.
    (n as usize).max(3)
}

static NEXT_PORT: AtomicU32 = AtomicU32::new(0);
const PORT_BASE: u32 = 20_000;
const PORT_SPAN: u32 = 40_000;

/// A fresh source port: ports are handed out in turn from 20000–59999, starting at a point
/// that depends on the process id, so consecutive probes never share a connection tuple.
fn next_port() -> u16 {
    let n = NEXT_PORT
        .fetch_add(1, Ordering::Relaxed)
        .wrapping_add(std::process::id() * 7919);
    u16::try_from(PORT_BASE + n % PORT_SPAN).unwrap_or(u16::MAX)
}

/// Sends one probe and reports what happened.
pub async fn send(world: &World, probe: &Probe, timeout: Duration) -> Outcome {
    if probe.protocol == Protocol::Sctp
        && let Some(why) = world.sctp_error()
    {
        return Outcome::Error(Error::SctpUnsupported(why.to_owned()).to_string());
    }
    let ns = match world.source_netns(probe.src) {
        Ok(ns) => ns,
        Err(error) => return Outcome::Error(error.to_string()),
    };
    send_from(ns, probe, timeout).await
}

/// Sends one probe from a given namespace (which must own `probe.src`).
pub async fn send_from(ns: &NetNs, probe: &Probe, timeout: Duration) -> Outcome {
    let (kind, protocol) = match probe.protocol {
        Protocol::Tcp => (SockType::Stream, SockProtocol::Tcp),
        Protocol::Udp => (SockType::Datagram, SockProtocol::Udp),
        Protocol::Sctp => (SockType::Stream, SockProtocol::Sctp),
    };
    let fd = match bound_client_socket(ns, probe.src, kind, protocol) {
        Ok(fd) => fd,
        Err(error) => return Outcome::Error(error.to_string()),
    };
    let result = match kind {
        SockType::Datagram => udp_exchange(fd, probe.destination(), timeout).await,
        _ => stream_exchange(fd, probe.destination(), timeout).await,
    };
    match result {
        Ok(Some(text)) => match text.lines().next().unwrap_or_default().parse::<Reply>() {
            Ok(reply) => Outcome::Reply(reply),
            Err(why) => Outcome::Error(why),
        },
        Ok(None) => Outcome::Dropped(format!("no answer within {} ms", timeout.as_millis())),
        Err(error)
            if error.raw_os_error() == Some(Errno::EINVAL as i32)
                && probe.src.is_loopback()
                && !probe.dst.is_loopback() =>
        {
            Outcome::Error(format!(
                "no packet sent: the kernel does not route from loopback {} to {} (EINVAL)",
                probe.src, probe.dst
            ))
        }
        Err(error) => classify_error(&error),
    }
}

fn bound_client_socket(
    ns: &NetNs,
    src: IpAddr,
    kind: SockType,
    protocol: SockProtocol,
) -> Result<std::os::fd::OwnedFd, Error> {
    let fd = ns.socket(src, kind, protocol)?;
    let mut last = None;
    for _ in 0..32 {
        match netns::bind(&fd, SocketAddr::new(src, next_port())) {
            Ok(()) => return Ok(fd),
            Err(Error::Io { source, context })
                if source.raw_os_error() == Some(Errno::EADDRINUSE as i32) =>
            {
                last = Some(Error::Io { source, context });
            }
            Err(other) => return Err(other),
        }
    }
    Err(last.unwrap_or_else(|| Error::World("no free source port".to_owned())))
}

/// Connects and reads the answer line; `Ok(None)` on timeout.
async fn stream_exchange(
    fd: std::os::fd::OwnedFd,
    dst: SocketAddr,
    timeout: Duration,
) -> std::io::Result<Option<String>> {
    Ok(stream_connect(fd, dst, timeout)
        .await?
        .map(|(line, _)| line))
}

/// Connects and reads the answer line; also returns the open stream. `Ok(None)` on timeout.
async fn stream_connect(
    fd: std::os::fd::OwnedFd,
    dst: SocketAddr,
    timeout: Duration,
) -> std::io::Result<Option<(String, tokio::net::TcpStream)>> {
    let socket = tokio::net::TcpSocket::from_std_stream(std::net::TcpStream::from(fd));
    let deadline = tokio::time::Instant::now() + timeout;
    let Ok(connected) = tokio::time::timeout_at(deadline, socket.connect(dst)).await else {
        return Ok(None);
    };
    let mut stream = connected?;
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    // Byte by byte up to the newline: nothing after the answer may be consumed.
    while !answer.ends_with(b"\n") && answer.len() < 512 {
        match tokio::time::timeout_at(deadline, stream.read(&mut byte)).await {
            Ok(Ok(0)) => break,
            Ok(Ok(_)) => answer.push(byte[0]),
            Ok(Err(error)) => return Err(error),
            Err(_) => return Ok(None),
        }
    }
    Ok(Some((
        String::from_utf8_lossy(&answer).into_owned(),
        stream,
    )))
}

/// Opens a TCP connection for a probe and keeps it: returns the server's answer and the
/// stream, which echoes whatever is written to it until it is closed. For tests that check
/// a connection survives syncs (see [`echo`]).
///
/// # Errors
///
/// The probe's outcome when no server answered (REJECT, DROP or an error).
pub async fn open_stream(
    world: &World,
    probe: &Probe,
    timeout: Duration,
) -> Result<(Reply, tokio::net::TcpStream), Outcome> {
    let ns = world
        .source_netns(probe.src)
        .map_err(|error| Outcome::Error(error.to_string()))?;
    let fd = bound_client_socket(ns, probe.src, SockType::Stream, SockProtocol::Tcp)
        .map_err(|error| Outcome::Error(error.to_string()))?;
    match stream_connect(fd, probe.destination(), timeout).await {
        Ok(Some((line, stream))) => match line.trim_end().parse::<Reply>() {
            Ok(reply) => Ok((reply, stream)),
            Err(why) => Err(Outcome::Error(why)),
        },
        Ok(None) => Err(Outcome::Dropped(format!(
            "no answer within {} ms",
            timeout.as_millis()
        ))),
        Err(error) => Err(classify_error(&error)),
    }
}

/// Writes `data` to a stream from [`open_stream`] and reads it back.
///
/// # Errors
///
/// When the connection broke, or the echo did not come back whole within `timeout`.
pub async fn echo(
    stream: &mut tokio::net::TcpStream,
    data: &[u8],
    timeout: Duration,
) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let exchange = async {
        stream.write_all(data).await?;
        let mut back = vec![0u8; data.len()];
        stream.read_exact(&mut back).await?;
        if back == data {
            Ok(())
        } else {
            Err(std::io::Error::other("the echo came back different"))
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no echo in time",
            ))
        })
}

/// A UDP socket for a probe's source, bound to it and connected to the probe's destination,
/// for tests that send several datagrams of one flow (each is answered with an answer line).
///
/// # Errors
///
/// When the socket cannot be made.
pub async fn udp_session(world: &World, probe: &Probe) -> crate::Result<tokio::net::UdpSocket> {
    let ns = world.source_netns(probe.src)?;
    let fd = bound_client_socket(ns, probe.src, SockType::Datagram, SockProtocol::Udp)?;
    let socket = tokio::net::UdpSocket::from_std(std::net::UdpSocket::from(fd))
        .map_err(|error| Error::io("UDP socket", error))?;
    socket
        .connect(probe.destination())
        .await
        .map_err(|error| Error::io("UDP connect", error))?;
    Ok(socket)
}

/// Sends a datagram and waits for the answer; `Ok(None)` on timeout.
async fn udp_exchange(
    fd: std::os::fd::OwnedFd,
    dst: SocketAddr,
    timeout: Duration,
) -> std::io::Result<Option<String>> {
    let socket = tokio::net::UdpSocket::from_std(std::net::UdpSocket::from(fd))?;
    socket.connect(dst).await?;
    let mut buffer = [0u8; 512];
    if let Err(error) = socket.send(b"kpt probe\n").await {
        if error.raw_os_error() != Some(Errno::EPERM as i32) {
            return Err(error);
        }
        // Netfilter refused the packet on its way out. A REJECT rule also answers with an
        // ICMP error, which reaches this (connected) socket a moment later; a DROP does not.
        return match tokio::time::timeout(timeout, socket.recv(&mut buffer)).await {
            Ok(Err(refusal)) => Err(refusal),
            _ => Err(error),
        };
    }
    match tokio::time::timeout(timeout, socket.recv(&mut buffer)).await {
        Ok(received) => {
            let n = received?;
            Ok(Some(String::from_utf8_lossy(&buffer[..n]).into_owned()))
        }
        Err(_) => Ok(None),
    }
}

fn classify_error(error: &std::io::Error) -> Outcome {
    let errno = error.raw_os_error().map(Errno::from_raw);
    match errno {
        Some(Errno::ECONNREFUSED) => Outcome::Refused("connection refused".to_owned()),
        Some(Errno::EHOSTUNREACH) => Outcome::Refused("host unreachable".to_owned()),
        Some(Errno::ENETUNREACH) => Outcome::Refused("network unreachable".to_owned()),
        Some(Errno::EACCES) => Outcome::Refused("administratively prohibited".to_owned()),
        Some(Errno::ECONNRESET) => Outcome::Refused("connection reset".to_owned()),
        // Netfilter dropping a locally generated packet makes the send fail with EPERM.
        Some(Errno::EPERM) => Outcome::Dropped("dropped on its way out (EPERM)".to_owned()),
        Some(Errno::ETIMEDOUT) => Outcome::Dropped("timed out".to_owned()),
        _ => Outcome::Error(error.to_string()),
    }
}

/// How much longer the second try waits when a probe that should get an answer met silence.
pub const PATIENCE_FACTOR: u32 = 4;

/// Sends a probe; when it met silence but an answer was expected, tries once more waiting
/// [`PATIENCE_FACTOR`] times longer, so a loaded machine does not turn a slow answer into a
/// DROP.
async fn send_patiently(
    world: &World,
    probe: &Probe,
    timeout: Duration,
    expects_silence: bool,
) -> Outcome {
    let outcome = send(world, probe, timeout).await;
    match outcome {
        Outcome::Dropped(_) if !expects_silence => {
            send(world, probe, timeout * PATIENCE_FACTOR).await
        }
        other => other,
    }
}

/// Sends `probe` as often as `expectation` needs and says whether it held (see
/// SCENARIOS.md, "What a probe's outcome means").
pub async fn check(
    world: &World,
    probe: &Probe,
    expectation: &Expectation,
    options: CheckOptions,
) -> Verdict {
    match expectation {
        Expectation::Endpoints(endpoints) => {
            check_endpoints(world, probe, endpoints, options).await
        }
        single => {
            let expects_silence = matches!(single, Expectation::Drop);
            let outcome = send_patiently(world, probe, options.timeout, expects_silence).await;
            let pass = match (single, &outcome) {
                (Expectation::Reject, Outcome::Refused(_))
                | (Expectation::Drop, Outcome::Dropped(_)) => true,
                (Expectation::Untouched, Outcome::Reply(reply)) => {
                    reply.local == probe.destination()
                }
                (Expectation::Accept, Outcome::Reply(reply)) => {
                    reply.local == probe.destination() && reply.role == "node"
                }
                _ => false,
            };
            Verdict {
                pass,
                seen: outcome.describe(probe.src),
            }
        }
    }
}

async fn check_endpoints(
    world: &World,
    probe: &Probe,
    endpoints: &[SocketAddr],
    options: CheckOptions,
) -> Verdict {
    let attempts = if options.affinity {
        AFFINITY_ATTEMPTS
    } else {
        attempts_for(endpoints.len())
    };
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut hits: BTreeMap<SocketAddr, usize> = BTreeMap::new();
    let mut masq_seen = (0usize, 0usize); // (masqueraded, kept)
    let mut bad = 0;
    let mut sent = 0;
    for _ in 0..attempts {
        sent += 1;
        let outcome = send_patiently(world, probe, options.timeout, false).await;
        match &outcome {
            Outcome::Reply(reply) if endpoints.contains(&reply.local) => {
                *hits.entry(reply.local).or_default() += 1;
                if reply.peer.ip() == probe.src {
                    masq_seen.1 += 1;
                } else {
                    masq_seen.0 += 1;
                }
            }
            _ => bad += 1,
        }
        let broken = matches!(outcome, Outcome::Error(_));
        *seen.entry(outcome.describe(probe.src)).or_default() += 1;
        // Three wrong answers settle it (one probe that cannot even run does); no need to
        // wait out every timeout.
        if bad >= 3 || broken {
            break;
        }
    }
    let mut problems = Vec::new();
    if bad > 0 {
        problems.push(format!(
            "{bad} of {sent} answers not from a listed endpoint"
        ));
    }
    if options.affinity {
        if hits.len() > 1 {
            problems.push("session affinity broken: answers from several endpoints".to_owned());
        }
    } else if bad == 0 {
        let missing: Vec<String> = endpoints
            .iter()
            .filter(|ep| !hits.contains_key(ep))
            .map(SocketAddr::to_string)
            .collect();
        if !missing.is_empty() {
            problems.push(format!("never answered: {}", missing.join(", ")));
        }
    }
    match options.masq {
        Some(true) if masq_seen.1 > 0 => problems.push(format!(
            "expected masquerade, but {} answer(s) saw the source {}",
            masq_seen.1, probe.src
        )),
        Some(false) if masq_seen.0 > 0 => problems.push(format!(
            "expected no masquerade, but {} answer(s) saw another source",
            masq_seen.0
        )),
        _ => {}
    }
    let mut summary: Vec<String> = seen
        .iter()
        .map(|(what, n)| format!("{what} ×{n}"))
        .collect();
    summary.sort();
    let mut text = summary.join("; ");
    if !problems.is_empty() {
        text = format!("{text} [{}]", problems.join("; "));
    }
    Verdict {
        pass: problems.is_empty(),
        seen: text,
    }
}

/// Checks `probe` against `expectation` until it passes or `timeout` runs out, for tests that
/// wait for a proxy to follow a change.
///
/// # Errors
///
/// What the last check saw, when it never passed.
pub async fn wait_for(
    world: &World,
    probe: &Probe,
    expectation: &str,
    timeout: Duration,
) -> Result<(), String> {
    let expectation: Expectation = expectation.parse().map_err(|e| format!("{e:?}"))?;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let verdict = check(world, probe, &expectation, CheckOptions::default()).await;
        if verdict.pass {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "{probe}: expected {expectation}, saw {}",
                verdict.seen
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_make_a_miss_unlikely() {
        assert_eq!(attempts_for(1), 3);
        for k in 2..=20usize {
            let n = attempts_for(k);
            let kf = k as f64;
            let miss = kf * (1.0 - 1.0 / kf).powi(i32::try_from(n).unwrap());
            assert!(miss < MISS_PROBABILITY, "k={k} n={n} miss={miss}");
            let fewer = kf * (1.0 - 1.0 / kf).powi(i32::try_from(n - 1).unwrap());
            assert!(
                fewer >= MISS_PROBABILITY || n == 3,
                "k={k}: n={n} is not the smallest"
            );
        }
        assert_eq!(attempts_for(2), 21);
    }

    #[test]
    fn expectations_parse() {
        assert_eq!("".parse::<Expectation>().unwrap(), Expectation::Untouched);
        assert_eq!(
            "REJECT".parse::<Expectation>().unwrap(),
            Expectation::Reject
        );
        assert_eq!(" DROP ".parse::<Expectation>().unwrap(), Expectation::Drop);
        assert_eq!(
            "ACCEPT".parse::<Expectation>().unwrap(),
            Expectation::Accept
        );
        assert_eq!(
            "10.180.0.1:80, [fd00::1]:8080"
                .parse::<Expectation>()
                .unwrap(),
            Expectation::Endpoints(vec![
                "10.180.0.1:80".parse().unwrap(),
                "[fd00::1]:8080".parse().unwrap()
            ])
        );
        let error = "10.180.0.1".parse::<Expectation>().unwrap_err();
        assert!(error.contains("10.180.0.1"), "{error}");
    }

    #[test]
    fn replies_round_trip() {
        let line = crate::packet::answer(
            "pod",
            "endpoint",
            "[fd00::1]:80".parse().unwrap(),
            "[fd00::2]:40000".parse().unwrap(),
        );
        let reply: Reply = line.parse().unwrap();
        assert_eq!(reply.role, "pod");
        assert_eq!(reply.kind, "endpoint");
        assert_eq!(reply.local, "[fd00::1]:80".parse().unwrap());
        assert!("HTTP/1.1 200 OK".parse::<Reply>().is_err());
    }

    #[test]
    fn ports_are_fresh() {
        let a = next_port();
        let b = next_port();
        assert_ne!(a, b);
        assert!((20_000..60_000).contains(&a));
    }
}
