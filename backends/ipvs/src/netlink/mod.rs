//! [`NetlinkIpvs`]: the real kernel. IPVS over generic netlink, ipset entries and the listing
//! of the sets over nfnetlink, the dummy link and its addresses over rtnetlink, each on a
//! socket bound to the namespace; the creation of whole ipsets and sysctls through the tools,
//! run in the namespace.

mod exchange;
mod genl;
mod ipset;
mod ipvs;
mod route;
mod tool;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use async_trait::async_trait;
use kproxy_netlink::{
    KernelError, NETLINK_GENERIC, NETLINK_NETFILTER, NETLINK_ROUTE, Namespace, NetlinkError,
    NetlinkSocket,
};

use crate::config::Timeouts;
use crate::error::IpvsError;
use crate::kernel::{ApplyError, IpvsKernel, LocalAddress};
use crate::model::{IpvsOp, RealServerStatus, ServiceKey, SetOp, VirtualServer};

use self::exchange::{BATCH_MESSAGES, Batch};
use self::tool::Tools;

/// `ENOENT`: the controller's answer for a family that is not registered.
const ENOENT: i32 = 2;
/// `ENODEV`: no such link.
const ENODEV: i32 = 19;

/// The real kernel side of the IPVS mode, in one network namespace.
///
/// The sockets are opened at first use (and again after one failed on its transport: a
/// timeout or an overrun leaves answers in it that nobody will read).
#[derive(Debug)]
pub struct NetlinkIpvs {
    namespace: Namespace,
    tools: Tools,
    generic: Option<NetlinkSocket>,
    ipvs_family: Option<u16>,
    netfilter: Option<NetlinkSocket>,
    route: Option<NetlinkSocket>,
    /// Bytes written by sockets dropped after a transport error.
    retired_bytes: u64,
}

impl NetlinkIpvs {
    /// Programs the calling thread's network namespace.
    pub fn current_netns() -> Self {
        Self::with_namespace(Namespace::Current, Tools::new(None))
    }

    /// Programs the network namespace `/run/netns/NAME` (as `ip netns add NAME` makes it).
    pub fn in_netns(name: &str) -> Self {
        Self::with_namespace(Namespace::Named(name.to_owned()), Tools::new(Some(name)))
    }

    fn with_namespace(namespace: Namespace, tools: Tools) -> Self {
        Self {
            namespace,
            tools,
            generic: None,
            ipvs_family: None,
            netfilter: None,
            route: None,
            retired_bytes: 0,
        }
    }

    /// The generic-netlink socket and IPVS's family id, resolving it once.
    fn ipvs(&mut self) -> Result<(&mut NetlinkSocket, u16), IpvsError> {
        let what = || "resolve the generic netlink family IPVS".to_owned();
        let socket =
            open(&mut self.generic, NETLINK_GENERIC, &self.namespace).map_err(|source| {
                IpvsError::Netlink {
                    what: what(),
                    source,
                }
            })?;
        let family = match self.ipvs_family {
            Some(family) => family,
            None => {
                let family =
                    genl::resolve_family(socket, ipvs::FAMILY_NAME).map_err(
                        |source| match &source {
                            NetlinkError::Kernel(kernel) if kernel.errno == ENOENT => {
                                IpvsError::NoIpvs(source)
                            }
                            _ => IpvsError::Netlink {
                                what: what(),
                                source,
                            },
                        },
                    )?;
                self.ipvs_family = Some(family);
                family
            }
        };
        Ok((socket, family))
    }

    /// Runs `request` on the IPVS socket; a broken socket is dropped.
    fn on_ipvs<T>(
        &mut self,
        what: impl FnOnce() -> String,
        request: impl FnOnce(&mut NetlinkSocket, u16) -> Result<T, NetlinkError>,
    ) -> Result<T, IpvsError> {
        let (socket, family) = self.ipvs()?;
        let result = request(socket, family);
        forget_if_broken(&mut self.generic, &mut self.retired_bytes, &result);
        result.map_err(|source| IpvsError::Netlink {
            what: what(),
            source,
        })
    }

    /// Runs `request` on the rtnetlink socket; a broken socket is dropped.
    fn on_route<T>(
        &mut self,
        what: impl FnOnce() -> String,
        request: impl FnOnce(&mut NetlinkSocket) -> Result<T, NetlinkError>,
    ) -> Result<T, IpvsError> {
        let result = open(&mut self.route, NETLINK_ROUTE, &self.namespace).and_then(request);
        forget_if_broken(&mut self.route, &mut self.retired_bytes, &result);
        result.map_err(|source| IpvsError::Netlink {
            what: what(),
            source,
        })
    }
}

/// The socket in `slot`, opened first if it is not.
fn open<'a>(
    slot: &'a mut Option<NetlinkSocket>,
    protocol: isize,
    namespace: &Namespace,
) -> Result<&'a mut NetlinkSocket, NetlinkError> {
    if slot.is_none() {
        *slot = Some(NetlinkSocket::open(protocol, namespace)?);
    }
    slot.as_mut()
        .ok_or_else(|| NetlinkError::Malformed("socket vanished".into()))
}

/// Drops the socket after an error of its transport (not after a refusal: the kernel
/// answered, and the socket is in order).
fn forget_if_broken<T>(
    slot: &mut Option<NetlinkSocket>,
    retired_bytes: &mut u64,
    result: &Result<T, NetlinkError>,
) {
    if let Err(error) = result
        && !matches!(error, NetlinkError::Kernel(_))
        && let Some(socket) = slot.take()
    {
        *retired_bytes += socket.bytes_sent();
    }
}

/// What ipset's own error codes (`enum ipset_errno` of `ip_set.h`) mean, in the words of
/// the `ipset` tool; `None` for an ordinary errno, which the system describes.
fn ipset_reason(code: i32) -> Option<&'static str> {
    Some(match code {
        4097 => "protocol error: an attribute the set's type does not take, or of another family",
        4098 => "the set type is not supported",
        4099 => "the maximum number of sets is reached",
        4100 => "the set is busy",
        4101 => "the set to swap with does not exist",
        4102 => "the sets' types do not match",
        4103 => "the element exists (add) or does not (delete)",
        4104 => "the CIDR is invalid",
        4105 => "the netmask is invalid",
        4106 => "the address family is invalid",
        4107 => "the set has no timeout support",
        4108 => "the set is referenced and cannot be destroyed",
        4109 => "an IPv4 address was expected",
        4110 => "an IPv6 address was expected",
        4111 => "the set has no counter support",
        4112 => "the set has no comment support",
        4113 => "the mark mask is invalid",
        4114 => "the set has no skbinfo support",
        4115 => "bitmask and netmask exclude each other",
        4352.. => "the entry does not fit the set's type",
        4096.. => "unknown ipset error",
        _ => return None,
    })
}

/// An ipset refusal as the error that names it best.
fn ipset_refusal(what: String, error: KernelError) -> IpvsError {
    match ipset_reason(error.errno) {
        Some(reason) => IpvsError::IpsetRefused {
            what,
            code: error.errno,
            reason: error.message.unwrap_or_else(|| reason.to_owned()),
        },
        None => IpvsError::Netlink {
            what,
            source: NetlinkError::Kernel(error),
        },
    }
}

#[async_trait]
impl IpvsKernel for NetlinkIpvs {
    fn bytes_sent(&self) -> u64 {
        self.retired_bytes
            + [&self.generic, &self.netfilter, &self.route]
                .into_iter()
                .flatten()
                .map(NetlinkSocket::bytes_sent)
                .sum::<u64>()
    }

    async fn check(&mut self) -> Result<(), IpvsError> {
        self.ipvs()?;
        self.tools.run("ipset", &["version"], None).await.map(drop)
    }

    async fn virtual_servers(&mut self) -> Result<Vec<VirtualServer>, IpvsError> {
        let answers = self.on_ipvs(
            || "list IPVS virtual servers".to_owned(),
            |socket, family| exchange::dump(socket, family, &ipvs::service_dump_header(), |_| {}),
        )?;
        answers
            .iter()
            .map(|payload| ipvs::decode_service(payload))
            .collect()
    }

    async fn real_servers(&mut self, key: &ServiceKey) -> Result<Vec<RealServerStatus>, IpvsError> {
        let answers = self.on_ipvs(
            || format!("list real servers of {key}"),
            |socket, family| {
                exchange::dump(socket, family, &ipvs::dest_dump_header(), |w| {
                    ipvs::write_dest_dump(w, key);
                })
            },
        )?;
        answers
            .iter()
            .map(|payload| ipvs::decode_dest(payload, key.family()))
            .collect()
    }

    /// Many requests per write, each acknowledged. The kernel goes on after a refused
    /// message of a write, so the acknowledgements say exactly which were applied; nothing is
    /// sent after the write that held a refusal.
    async fn apply(&mut self, ops: &[IpvsOp]) -> Result<(), ApplyError> {
        for (chunk_index, chunk) in ops.chunks(BATCH_MESSAGES).enumerate() {
            let start = chunk_index * BATCH_MESSAGES;
            let answers = self
                .on_ipvs(
                    || format!("{} (one of {} IPVS requests)", chunk[0], chunk.len()),
                    |socket, family| {
                        let mut batch = Batch::new(socket, chunk.len());
                        for op in chunk {
                            ipvs::push_op(batch.buffer(), family, op)?;
                        }
                        batch.send(socket)
                    },
                )
                .map_err(|error| ApplyError {
                    applied: start,
                    applied_after: Vec::new(),
                    error,
                })?;
            if let Some(refused) = answers.iter().position(Result::is_err) {
                let applied_after = answers
                    .iter()
                    .enumerate()
                    .skip(refused + 1)
                    .filter(|(_, answer)| answer.is_ok())
                    .map(|(i, _)| start + i)
                    .collect();
                let source = match &answers[refused] {
                    Err(error) => NetlinkError::Kernel(error.clone()),
                    Ok(()) => unreachable!("position found an error"),
                };
                return Err(ApplyError {
                    applied: start + refused,
                    applied_after,
                    error: IpvsError::Netlink {
                        what: chunk[refused].to_string(),
                        source,
                    },
                });
            }
        }
        Ok(())
    }

    async fn link_addresses(&mut self, name: &str) -> Result<Option<Vec<IpAddr>>, IpvsError> {
        self.on_route(
            || format!("list the addresses of link {name}"),
            |socket| {
                let Some(index) = route::link_index(socket, name)? else {
                    return Ok(None);
                };
                let addresses = route::addresses(socket)?
                    .into_iter()
                    .filter(|(link, _)| *link == index)
                    .map(|(_, addr)| addr)
                    .collect();
                Ok(Some(addresses))
            },
        )
    }

    async fn ensure_dummy_link(&mut self, name: &str) -> Result<(), IpvsError> {
        self.on_route(
            || format!("create dummy link {name}"),
            |socket| route::create_dummy(socket, name),
        )
    }

    async fn delete_link(&mut self, name: &str) -> Result<bool, IpvsError> {
        self.on_route(
            || format!("delete link {name}"),
            |socket| route::delete_link(socket, name),
        )
    }

    async fn change_link_addresses(
        &mut self,
        name: &str,
        add: &[IpAddr],
        remove: &[IpAddr],
    ) -> Result<(), IpvsError> {
        if add.is_empty() && remove.is_empty() {
            return Ok(());
        }
        let index = self
            .on_route(
                || format!("look up link {name}"),
                |socket| route::link_index(socket, name),
            )?
            .ok_or_else(|| IpvsError::Netlink {
                what: format!("change the addresses of link {name}"),
                source: NetlinkError::Kernel(KernelError {
                    errno: ENODEV,
                    message: Some(format!("no link {name}")),
                    offset: None,
                }),
            })?;
        self.on_route(
            || {
                format!(
                    "change the addresses of link {name} ({} added, {} removed)",
                    add.len(),
                    remove.len()
                )
            },
            |socket| route::change_addresses(socket, index, add, remove),
        )?;
        Ok(())
    }

    async fn local_addresses(&mut self) -> Result<Vec<LocalAddress>, IpvsError> {
        self.on_route(
            || "list the namespace's addresses".to_owned(),
            |socket| {
                let names: HashMap<u32, String> = route::links(socket)?.into_iter().collect();
                let mut addresses: Vec<LocalAddress> = route::addresses(socket)?
                    .into_iter()
                    .filter_map(|(index, addr)| {
                        Some(LocalAddress {
                            link: names.get(&index)?.clone(),
                            addr,
                        })
                    })
                    .collect();
                addresses.sort();
                Ok(addresses)
            },
        )
    }

    /// One `IPSET_CMD_LIST` dump of every set over nfnetlink (a large set spans many
    /// messages), not `ipset save`: no tool to start, no text to print and read back.
    async fn list_sets(&mut self) -> Result<BTreeMap<String, Vec<String>>, IpvsError> {
        let result =
            open(&mut self.netfilter, NETLINK_NETFILTER, &self.namespace).and_then(|socket| {
                exchange::dump(
                    socket,
                    ipset::list_kind(),
                    &ipset::list_header(),
                    ipset::write_list_request,
                )
            });
        forget_if_broken(&mut self.netfilter, &mut self.retired_bytes, &result);
        let what = || "list ipsets".to_owned();
        let answers = result.map_err(|source| match source {
            NetlinkError::Kernel(error) => ipset_refusal(what(), error),
            source => IpvsError::Netlink {
                what: what(),
                source,
            },
        })?;
        ipset::decode_list(&answers)
    }

    /// `ipset restore -exist`: creating a set that exists with the same type and options,
    /// adding an entry that is there or deleting one that is not is no error, so a script
    /// can be replayed after a partial failure.
    async fn restore_sets(&mut self, script: &str) -> Result<(), IpvsError> {
        self.tools
            .run("ipset", &["restore", "-exist"], Some(script))
            .await
            .map(drop)
    }

    /// Many entries per write, each with its own answer; the first refusal is returned (the
    /// entries after it in the same write were still sent).
    async fn update_sets(&mut self, ops: &[SetOp]) -> Result<(), IpvsError> {
        for chunk in ops.chunks(BATCH_MESSAGES) {
            let result =
                open(&mut self.netfilter, NETLINK_NETFILTER, &self.namespace).and_then(|socket| {
                    let mut batch = Batch::new(socket, chunk.len());
                    for op in chunk {
                        ipset::push_op(batch.buffer(), op)?;
                    }
                    batch.send(socket)
                });
            forget_if_broken(&mut self.netfilter, &mut self.retired_bytes, &result);
            let describe = |op: &SetOp| {
                let (verb, preposition) = if op.add {
                    ("add", "to")
                } else {
                    ("delete", "from")
                };
                format!("{verb} {} {preposition} ipset {}", op.entry, op.set.name)
            };
            let answers = result.map_err(|source| IpvsError::Netlink {
                what: format!(
                    "update ipsets ({} entries from {})",
                    chunk.len(),
                    describe(&chunk[0])
                ),
                source,
            })?;
            for (op, answer) in chunk.iter().zip(answers) {
                match answer {
                    Err(error) if error.errno != ipset::IPSET_ERR_EXIST => {
                        return Err(ipset_refusal(describe(op), error));
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    async fn set_timeouts(&mut self, timeouts: &Timeouts) -> Result<(), IpvsError> {
        if !timeouts.any() {
            return Ok(());
        }
        self.on_ipvs(
            || format!("set IPVS timeouts {timeouts:?}"),
            |socket, family| {
                exchange::request(socket, family, 0, &ipvs::set_config_header(), |w| {
                    ipvs::write_timeouts(w, timeouts);
                })
                .map(drop)
            },
        )
    }

    async fn set_sysctls(&mut self, settings: &[(&str, &str)]) -> Result<(), IpvsError> {
        if settings.is_empty() {
            return Ok(());
        }
        let assignments: Vec<String> = settings
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect();
        let mut args = vec!["-q", "-w"];
        args.extend(assignments.iter().map(String::as_str));
        self.tools.run("sysctl", &args, None).await.map(drop)
    }
}
