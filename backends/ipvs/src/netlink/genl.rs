//! Generic netlink: its fixed header and the controller's family lookup (`CTRL_CMD_GETFAMILY`),
//! which turns a family's name (`IPVS`) into the message type its requests carry.

use kproxy_netlink::{NetlinkError, NetlinkSocket, parse_attributes};

/// `GENL_ID_CTRL`: the controller's own family.
const GENL_ID_CTRL: u16 = 0x10;
/// `CTRL_CMD_GETFAMILY`.
const CTRL_CMD_GETFAMILY: u8 = 3;
/// `CTRL_ATTR_FAMILY_ID` (u16).
const CTRL_ATTR_FAMILY_ID: u16 = 1;
/// `CTRL_ATTR_FAMILY_NAME` (string).
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
/// The length of `struct genlmsghdr`.
pub(crate) const GENL_HEADER_LEN: usize = 4;

/// `struct genlmsghdr`: command, family version, two reserved bytes.
pub(crate) fn header(cmd: u8, version: u8) -> [u8; GENL_HEADER_LEN] {
    [cmd, version, 0, 0]
}

/// The family id of `name`; the kernel answers `ENOENT` when no such family is registered
/// (after trying to load the module that provides it).
pub(crate) fn resolve_family(socket: &mut NetlinkSocket, name: &str) -> Result<u16, NetlinkError> {
    let answers = crate::netlink::exchange::request(
        socket,
        GENL_ID_CTRL,
        0,
        &header(CTRL_CMD_GETFAMILY, 1),
        |w| {
            w.string(CTRL_ATTR_FAMILY_NAME, name);
        },
    )?;
    answers
        .iter()
        .filter_map(|payload| payload.get(GENL_HEADER_LEN..))
        .flat_map(parse_attributes)
        .find_map(|(kind, value)| {
            (kind == CTRL_ATTR_FAMILY_ID && value.len() >= 2)
                .then(|| u16::from_ne_bytes([value[0], value[1]]))
        })
        .ok_or_else(|| {
            NetlinkError::Malformed(format!(
                "the controller's answer for family {name:?} has no family id"
            ))
        })
}
