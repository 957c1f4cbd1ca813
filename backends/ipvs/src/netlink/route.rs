//! rtnetlink for the dummy link and its addresses: link lookup by name, creation and
//! deletion, address changes and dumps. The messages are netlink-packet-route's types
//! (the same netlink-packet-core 0.9 stack the workspace already uses; no other crate comes
//! with it), written into bytes and sent over this workspace's namespace-bound socket.

use std::net::IpAddr;

use kproxy_netlink::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NetlinkError, NetlinkSocket,
};
use netlink_packet_core::{Emitable, Parseable};
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};

use crate::netlink::exchange;

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_GETADDR: u16 = 22;

const ENODEV: i32 = 19;
const EEXIST: i32 = 17;
const EADDRNOTAVAIL: i32 = 99;

fn emit(message: &impl Emitable) -> Vec<u8> {
    let mut bytes = vec![0; message.buffer_len()];
    message.emit(&mut bytes);
    bytes
}

fn malformed(what: &str, error: impl std::fmt::Display) -> NetlinkError {
    NetlinkError::Malformed(format!("{what}: {error}"))
}

fn kernel_errno(error: &NetlinkError) -> Option<i32> {
    match error {
        NetlinkError::Kernel(kernel) => Some(kernel.errno),
        _ => None,
    }
}

fn link_named(name: &str) -> LinkMessage {
    let mut message = LinkMessage::default();
    message
        .attributes
        .push(LinkAttribute::IfName(name.to_owned()));
    message
}

/// The index of link `name`, `None` when there is none.
pub(crate) fn link_index(
    socket: &mut NetlinkSocket,
    name: &str,
) -> Result<Option<u32>, NetlinkError> {
    match exchange::request(socket, RTM_GETLINK, 0, &emit(&link_named(name)), |_| {}) {
        Ok(answers) => {
            let answer = answers
                .first()
                .ok_or_else(|| malformed("RTM_GETLINK", "no link in the answer"))?;
            let link =
                LinkMessage::parse(answer.as_slice()).map_err(|e| malformed("RTM_NEWLINK", e))?;
            Ok(Some(link.header.index))
        }
        Err(error) if kernel_errno(&error) == Some(ENODEV) => Ok(None),
        Err(error) => Err(error),
    }
}

/// Creates the dummy link `name` (down) unless a link of that name exists.
pub(crate) fn create_dummy(socket: &mut NetlinkSocket, name: &str) -> Result<(), NetlinkError> {
    let mut message = link_named(name);
    message
        .attributes
        .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
            InfoKind::Dummy,
        )]));
    match exchange::request(
        socket,
        RTM_NEWLINK,
        NLM_F_CREATE | NLM_F_EXCL,
        &emit(&message),
        |_| {},
    ) {
        Err(error) if kernel_errno(&error) == Some(EEXIST) => Ok(()),
        other => other.map(drop),
    }
}

/// Deletes link `name`; `false` when there was none.
pub(crate) fn delete_link(socket: &mut NetlinkSocket, name: &str) -> Result<bool, NetlinkError> {
    match exchange::request(socket, RTM_DELLINK, 0, &emit(&link_named(name)), |_| {}) {
        Ok(_) => Ok(true),
        Err(error) if kernel_errno(&error) == Some(ENODEV) => Ok(false),
        Err(error) => Err(error),
    }
}

fn host_address(index: u32, addr: IpAddr) -> AddressMessage {
    let mut message = AddressMessage::default();
    message.header.index = index;
    match addr {
        IpAddr::V4(_) => {
            message.header.family = AddressFamily::Inet;
            message.header.prefix_len = 32;
        }
        IpAddr::V6(_) => {
            message.header.family = AddressFamily::Inet6;
            message.header.prefix_len = 128;
            // Usable at once: no duplicate address detection (the link is down and never
            // answers for the address on the wire anyway).
            message
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
    }
    message.attributes.push(AddressAttribute::Local(addr));
    message.attributes.push(AddressAttribute::Address(addr));
    message
}

/// Adds and removes host addresses of link `index` in batched writes (one request per
/// address, each acknowledged); an address already there, or already gone, is no error.
pub(crate) fn change_addresses(
    socket: &mut NetlinkSocket,
    index: u32,
    add: &[IpAddr],
    remove: &[IpAddr],
) -> Result<(), NetlinkError> {
    let requests: Vec<(u16, u16, IpAddr, i32)> = remove
        .iter()
        .map(|addr| (RTM_DELADDR, 0, *addr, EADDRNOTAVAIL))
        .chain(
            add.iter()
                .map(|addr| (RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, *addr, EEXIST)),
        )
        .collect();
    for chunk in requests.chunks(exchange::BATCH_MESSAGES) {
        let mut batch = exchange::Batch::new(socket, chunk.len());
        for (kind, flags, addr, _) in chunk {
            let message = emit(&host_address(index, *addr));
            batch
                .buffer()
                .push(*kind, flags | NLM_F_REQUEST | NLM_F_ACK, &message, |_| {})?;
        }
        for ((_, _, _, harmless), answer) in chunk.iter().zip(batch.send(socket)?) {
            match answer {
                Err(error) if error.errno != *harmless => return Err(NetlinkError::Kernel(error)),
                _ => {}
            }
        }
    }
    Ok(())
}

/// Every link of the namespace: `(index, name)`.
pub(crate) fn links(socket: &mut NetlinkSocket) -> Result<Vec<(u32, String)>, NetlinkError> {
    let answers = exchange::dump(socket, RTM_GETLINK, &emit(&LinkMessage::default()), |_| {})?;
    let mut links = Vec::with_capacity(answers.len());
    for answer in answers {
        let link =
            LinkMessage::parse(answer.as_slice()).map_err(|e| malformed("RTM_NEWLINK", e))?;
        let name = link
            .attributes
            .iter()
            .find_map(|attribute| match attribute {
                LinkAttribute::IfName(name) => Some(name.clone()),
                _ => None,
            });
        if let Some(name) = name {
            links.push((link.header.index, name));
        }
    }
    Ok(links)
}

/// Every address of the namespace: `(link index, address)`.
pub(crate) fn addresses(socket: &mut NetlinkSocket) -> Result<Vec<(u32, IpAddr)>, NetlinkError> {
    let answers = exchange::dump(
        socket,
        RTM_GETADDR,
        &emit(&AddressMessage::default()),
        |_| {},
    )?;
    let mut addresses = Vec::with_capacity(answers.len());
    for answer in answers {
        let message =
            AddressMessage::parse(answer.as_slice()).map_err(|e| malformed("RTM_NEWADDR", e))?;
        // IFA_LOCAL is the address itself; IFA_ADDRESS the peer's on point-to-point links.
        let local = message
            .attributes
            .iter()
            .find_map(|attribute| match attribute {
                AddressAttribute::Local(addr) => Some(*addr),
                _ => None,
            });
        let address = message
            .attributes
            .iter()
            .find_map(|attribute| match attribute {
                AddressAttribute::Address(addr) => Some(*addr),
                _ => None,
            });
        if let Some(addr) = local.or(address) {
            addresses.push((message.header.index, addr));
        }
    }
    Ok(addresses)
}
