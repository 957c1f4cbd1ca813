//! The nf_tables netlink encoding of the operations incremental syncs write, and the few
//! queries the drift check makes.
//!
//! Every `nft` run first dumps the whole ruleset into its cache, which costs time proportional
//! to the cluster; an incremental sync writes only a few shapes — map elements, endpoint maps,
//! regular chains, verdict rules and the DNAT rule of a policy chain — so those are encoded
//! here, from the same typed values ([`crate::values`]) that render the `nft -f` text. A
//! transaction with anything else (a base chain, a set declared in nft syntax, a rule given as
//! text) goes through `nft`, and the caller logs and counts why.
//!
//! Long element lists are split over several messages, each within netlink's 16-bit attribute
//! length; the batch stays one write, which the kernel applies all or nothing. Each message
//! remembers which operations it carries, so that a refusal names the object.

use std::net::IpAddr;

use kproxy_core::{Balancing, IpFamily, Protocol};
use kproxy_netlink::{
    Attributes, KernelError, MessageBuffer, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_DUMP,
    NLM_F_REQUEST, NLMSG_DONE, NetlinkError, Reply,
};

use crate::names::{TABLE, family_keyword};
use crate::transaction::{Op, Transaction};
use crate::values::{DnatRule, Key, Rule, SetSpec, Value, Verdict};

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_DELCHAIN: u16 = 5;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_DELRULE: u16 = 8;
const NFT_MSG_NEWSET: u16 = 9;
const NFT_MSG_DELSET: u16 = 11;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_GETSETELEM: u16 = 13;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFT_MSG_NEWGEN: u16 = 15;
const NFT_MSG_GETGEN: u16 = 16;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;

/// nf_tables verdict codes (`NF_DROP`, `NF_ACCEPT`, `NFT_JUMP`, `NFT_GOTO`, as 32-bit values).
const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;
const NFT_JUMP: u32 = (-3i32) as u32;
const NFT_GOTO: u32 = (-4i32) as u32;
// nf_tables numgen types.
const NFT_NG_INCREMENTAL: u32 = 0;
const NFT_NG_RANDOM: u32 = 1;
// nf_tables attribute numbers.
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_TABLE_USE: u16 = 3;
const NFTA_TABLE_HANDLE: u16 = 4;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFTA_SET_KEY_TYPE: u16 = 4;
const NFTA_SET_KEY_LEN: u16 = 5;
const NFTA_SET_DATA_TYPE: u16 = 6;
const NFTA_SET_DATA_LEN: u16 = 7;
const NFTA_SET_ID: u16 = 10;
const NFTA_SET_USERDATA: u16 = 13;
const NFT_SET_INTERVAL: u32 = 0x4;
const NFT_SET_MAP: u32 = 0x8;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_SET_ELEM_FLAGS: u16 = 3;
const NFT_SET_ELEM_INTERVAL_END: u32 = 0x1;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
const NFTA_GEN_ID: u16 = 1;
/// `reg 1`: the first 128-bit register; `reg 9`: its second 32-bit word; the verdict register.
const NFT_REG_VERDICT: u32 = 0;
const NFT_REG_1: u32 = 1;
const NFT_REG32_01: u32 = 9;
/// nft's data type numbers: `integer`, and the concatenations `ipv4_addr . inet_service` and
/// `ipv6_addr . inet_service` (`ipv4_addr` is 7, `ipv6_addr` 8, `inet_service` 13; a
/// concatenation shifts each by 6 bits).
const TYPE_INTEGER: u32 = 4;
const TYPE_IPV4_SERVICE: u32 = (7 << 6) | 13;
const TYPE_IPV6_SERVICE: u32 = (8 << 6) | 13;

/// The largest element list one message carries; the limit of its nest is 65,535 bytes.
const ELEMENT_LIST_BYTES: usize = 60_000;

/// The operations one message of a batch carries: `transaction`'s ops `first..first + count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Origin {
    pub(crate) transaction: usize,
    pub(crate) first: usize,
    pub(crate) count: usize,
}

/// A batch ready to send: its bytes, and for each message after `BATCH_BEGIN` the
/// operations it carries.
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) messages: MessageBuffer,
    pub(crate) first_seq: u32,
    pub(crate) origins: Vec<Origin>,
}

impl Batch {
    /// The operations the message with sequence number `seq` carries; `None` for the batch
    /// markers (an error there is about the whole batch, e.g. its commit).
    pub(crate) fn origin(&self, seq: u32) -> Option<Origin> {
        let index = seq.wrapping_sub(self.first_seq).checked_sub(1)?;
        self.origins.get(usize::try_from(index).ok()?).copied()
    }

    /// The sequence numbers of the batch, markers included.
    pub(crate) fn contains(&self, seq: u32) -> bool {
        seq.wrapping_sub(self.first_seq) <= u32::try_from(self.origins.len() + 1).unwrap_or(0)
    }
}

/// Why a transaction cannot go through netlink (it then goes through `nft`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unsupported(pub(crate) String);

/// Encodes `transactions` as one batch whose first sequence number is `first_seq`.
///
/// # Errors
///
/// [`Unsupported`] naming the first operation this encoder does not write.
pub(crate) fn encode(transactions: &[Transaction], first_seq: u32) -> Result<Batch, Unsupported> {
    let mut messages = MessageBuffer::new(first_seq);
    let mut origins = Vec::new();
    let mut set_id = 0u32;
    marker(&mut messages, NFNL_MSG_BATCH_BEGIN);
    for (t, transaction) in transactions.iter().enumerate() {
        let family = transaction.family();
        let ops = transaction.ops();
        let mut i = 0;
        while i < ops.len() {
            let op = &ops[i];
            let origin = |first: usize, count: usize| Origin {
                transaction: t,
                first,
                count,
            };
            match op {
                Op::AddElement { set, .. } | Op::DeleteElement { set, .. } => {
                    let adding = matches!(op, Op::AddElement { .. });
                    // Consecutive element operations on one set share messages, as many as
                    // fit a message each.
                    let mut end = i;
                    while ops.get(end).is_some_and(|next| same_list(op, next)) {
                        end += 1;
                    }
                    let mut start = i;
                    let mut list = Vec::new();
                    for (j, element) in ops.iter().enumerate().take(end).skip(i) {
                        let mut encoded = Vec::new();
                        encode_element(&mut encoded, element, family)
                            .ok_or_else(|| unsupported(transaction, element))?;
                        if !list.is_empty() && list.len() + encoded.len() > ELEMENT_LIST_BYTES {
                            element_message(&mut messages, adding, family, set, &list)
                                .map_err(|e| Unsupported(e.to_string()))?;
                            origins.push(origin(start, j - start));
                            list.clear();
                            start = j;
                        }
                        list.extend_from_slice(&encoded);
                    }
                    element_message(&mut messages, adding, family, set, &list)
                        .map_err(|e| Unsupported(e.to_string()))?;
                    origins.push(origin(start, end - start));
                    i = end;
                    continue;
                }
                _ => {
                    set_id += 1;
                    encode_op(&mut messages, op, family, set_id)
                        .ok_or_else(|| unsupported(transaction, op))?
                        .map_err(|e| Unsupported(e.to_string()))?;
                    origins.push(origin(i, 1));
                }
            }
            i += 1;
        }
    }
    marker(&mut messages, NFNL_MSG_BATCH_END);
    Ok(Batch {
        messages,
        first_seq,
        origins,
    })
}

fn unsupported(transaction: &Transaction, op: &Op) -> Unsupported {
    Unsupported(describe(transaction.family(), std::slice::from_ref(op)))
}

/// The nft text of `ops` in `family`'s table, shortened for a log line.
pub(crate) fn describe(family: IpFamily, ops: &[Op]) -> String {
    let mut tx = Transaction::new(family);
    for op in ops.iter().take(3) {
        tx.push(op.clone());
    }
    let mut text = tx.to_string().trim_end().replace('\n', "; ");
    if ops.len() > 3 {
        text.push_str(&format!(
            " (and {} more in the same message)",
            ops.len() - 3
        ));
    }
    text
}

fn same_list(first: &Op, next: &Op) -> bool {
    match (first, next) {
        (Op::AddElement { set: a, .. }, Op::AddElement { set: b, .. })
        | (Op::DeleteElement { set: a, .. }, Op::DeleteElement { set: b, .. }) => a == b,
        _ => false,
    }
}

fn family_number(family: IpFamily) -> u8 {
    match family {
        IpFamily::V4 => NFPROTO_IPV4,
        IpFamily::V6 => NFPROTO_IPV6,
    }
}

/// `struct nfgenmsg`: family, version 0, resource id (big endian).
fn nfgen(family: u8, res_id: u16) -> [u8; 4] {
    let id = res_id.to_be_bytes();
    [family, 0, id[0], id[1]]
}

fn marker(messages: &mut MessageBuffer, kind: u16) {
    // Markers have no attributes: they cannot be too long.
    let _ = messages.push(kind, NLM_F_REQUEST, &nfgen(0, NFNL_SUBSYS_NFTABLES), |_| {});
}

fn nft_kind(message: u16) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | message
}

/// Encodes one non-element operation; `None` when it is not one this encoder writes.
fn encode_op(
    messages: &mut MessageBuffer,
    op: &Op,
    family: IpFamily,
    set_id: u32,
) -> Option<Result<u32, NetlinkError>> {
    let fam = nfgen(family_number(family), 0);
    // Errors are answered whatever the flags; success is learnt from the barrier after the
    // batch, so no message asks for an acknowledgement of its own (hundreds of thousands of
    // them would overrun any receive buffer).
    let push = |messages: &mut MessageBuffer,
                kind: u16,
                flags: u16,
                body: &dyn Fn(&mut Attributes<'_>)| {
        messages.push(nft_kind(kind), NLM_F_REQUEST | flags, &fam, |w| body(w))
    };
    Some(match op {
        Op::AddChain { name, base: None } => push(messages, NFT_MSG_NEWCHAIN, NLM_F_CREATE, &|w| {
            w.string(NFTA_CHAIN_TABLE, TABLE)
                .string(NFTA_CHAIN_NAME, name);
        }),
        Op::FlushChain { name } => push(messages, NFT_MSG_DELRULE, 0, &|w| {
            w.string(NFTA_RULE_TABLE, TABLE)
                .string(NFTA_RULE_CHAIN, name);
        }),
        Op::DeleteChain { name } => push(messages, NFT_MSG_DELCHAIN, 0, &|w| {
            w.string(NFTA_CHAIN_TABLE, TABLE)
                .string(NFTA_CHAIN_NAME, name);
        }),
        Op::AddRule {
            chain,
            rule: Rule::Dnat(rule),
        } => push(
            messages,
            NFT_MSG_NEWRULE,
            NLM_F_CREATE | NLM_F_APPEND,
            &|w| {
                w.string(NFTA_RULE_TABLE, TABLE)
                    .string(NFTA_RULE_CHAIN, chain);
                w.nest(NFTA_RULE_EXPRESSIONS, |w| dnat_expressions(w, rule));
            },
        ),
        Op::AddRule {
            chain,
            rule: Rule::Verdict(verdict),
        } => push(
            messages,
            NFT_MSG_NEWRULE,
            NLM_F_CREATE | NLM_F_APPEND,
            &|w| {
                w.string(NFTA_RULE_TABLE, TABLE)
                    .string(NFTA_RULE_CHAIN, chain);
                w.nest(NFTA_RULE_EXPRESSIONS, |w| {
                    expression(w, "immediate", |w| {
                        w.u32_be(1, NFT_REG_VERDICT); // NFTA_IMMEDIATE_DREG
                        w.nest(2, |w| write_verdict(w, verdict)); // NFTA_IMMEDIATE_DATA
                    });
                });
            },
        ),
        Op::AddSet {
            name,
            spec: SetSpec::EndpointMap(protocol),
        } => push(messages, NFT_MSG_NEWSET, NLM_F_CREATE, &|w| {
            let (data_type, data_len) = match family {
                IpFamily::V4 => (TYPE_IPV4_SERVICE, 8),
                IpFamily::V6 => (TYPE_IPV6_SERVICE, 20),
            };
            w.string(NFTA_SET_TABLE, TABLE)
                .string(NFTA_SET_NAME, name)
                .u32_be(NFTA_SET_FLAGS, NFT_SET_MAP | NFT_SET_INTERVAL)
                .u32_be(NFTA_SET_KEY_TYPE, TYPE_INTEGER)
                .u32_be(NFTA_SET_KEY_LEN, 4)
                .u32_be(NFTA_SET_DATA_TYPE, data_type)
                .u32_be(NFTA_SET_DATA_LEN, data_len)
                .u32_be(NFTA_SET_ID, set_id)
                .bytes(NFTA_SET_USERDATA, &endpoint_map_userdata(family, *protocol));
        }),
        Op::DeleteSet { name, .. } => push(messages, NFT_MSG_DELSET, 0, &|w| {
            w.string(NFTA_SET_TABLE, TABLE).string(NFTA_SET_NAME, name);
        }),
        _ => return None,
    })
}

/// What nft stores as an endpoint map's user data so that `nft list` prints it as
/// `typeof numgen random mod 1 : ip daddr . tcp dport` (libnftnl's TLVs: key and data byte
/// orders, and the `typeof` expressions). Taken from `nft --debug=mnl`; only the family's
/// payload expression and the protocol's header differ between maps. The kernel tests compare
/// a listing after such a sync with one after `nft -f`.
fn endpoint_map_userdata(family: IpFamily, protocol: Protocol) -> Vec<u8> {
    const HEAD: [u8; 62] = [
        0x00, 0x04, 0x01, 0x00, 0x00, 0x00, 0x01, 0x04, 0x00, 0x00, 0x00, 0x00, 0x03, 0x1a, 0x00,
        0x04, 0x17, 0x00, 0x00, 0x00, 0x01, 0x12, 0x00, 0x04, 0x01, 0x00, 0x00, 0x00, 0x01, 0x04,
        0x01, 0x00, 0x00, 0x00, 0x02, 0x04, 0x00, 0x00, 0x00, 0x00, 0x04, 0x34, 0x00, 0x04, 0x0d,
        0x00, 0x00, 0x00, 0x01, 0x2c, 0x00, 0x14, 0x00, 0x04, 0x07, 0x00, 0x00, 0x00, 0x01, 0x0c,
        0x00, 0x04,
    ];
    const MIDDLE: [u8; 15] = [
        0x00, 0x00, 0x00, 0x01, 0x14, 0x00, 0x04, 0x07, 0x00, 0x00, 0x00, 0x01, 0x0c, 0x00, 0x04,
    ];
    const TAIL: [u8; 15] = [
        0x00, 0x00, 0x00, 0x01, 0x04, 0x02, 0x00, 0x00, 0x00, 0x06, 0x04, 0x00, 0x00, 0x00, 0x00,
    ];
    // `ip daddr` / `ip6 daddr`: the protocol description and the field of the payload.
    let address: [u8; 7] = match family {
        IpFamily::V4 => [0x0c, 0x00, 0x00, 0x00, 0x01, 0x04, 0x0c],
        IpFamily::V6 => [0x0d, 0x00, 0x00, 0x00, 0x01, 0x04, 0x09],
    };
    // `tcp dport` / `udp dport` / `sctp dport`: nft's protocol description numbers.
    let transport = match protocol {
        Protocol::Tcp => 0x08,
        Protocol::Udp => 0x06,
        Protocol::Sctp => 0x0a,
    };
    let mut out = Vec::with_capacity(100);
    out.extend_from_slice(&HEAD);
    out.extend_from_slice(&address);
    out.extend_from_slice(&MIDDLE);
    out.push(transport);
    out.extend_from_slice(&TAIL);
    out
}

fn element_message(
    messages: &mut MessageBuffer,
    adding: bool,
    family: IpFamily,
    set: &str,
    list: &[u8],
) -> Result<u32, NetlinkError> {
    let (kind, flags) = if adding {
        (NFT_MSG_NEWSETELEM, NLM_F_CREATE)
    } else {
        (NFT_MSG_DELSETELEM, 0)
    };
    messages.push(
        nft_kind(kind),
        NLM_F_REQUEST | flags,
        &nfgen(family_number(family), 0),
        |w| {
            w.string(NFTA_SET_ELEM_LIST_TABLE, TABLE)
                .string(NFTA_SET_ELEM_LIST_SET, set)
                .nested_bytes(NFTA_SET_ELEM_LIST_ELEMENTS, list);
        },
    )
}

/// Writes one element operation: one `NFTA_LIST_ELEM`, or two for a range of an interval map
/// (its first key, and the key after its last flagged as the interval's end, as nft writes
/// them for the kernel's rbtree sets). `None` for a key or value this encoder does not write
/// (a prefix) or of the other family.
fn encode_element(out: &mut Vec<u8>, op: &Op, family: IpFamily) -> Option<()> {
    let (key, value) = match op {
        Op::AddElement { key, value, .. } => (key, value.as_ref()),
        Op::DeleteElement { key, .. } => (key, None),
        _ => return None,
    };
    let value = match value {
        None => None,
        Some(Value::Endpoint(ip, port)) => {
            let mut data = Vec::with_capacity(20);
            address(&mut data, *ip, family)?;
            component(&mut data, &port.to_be_bytes());
            Some(Ok(data))
        }
        Some(Value::Verdict(verdict)) => Some(Err(verdict)),
    };
    let mut w = Attributes::new(out);
    if let Key::Slots { first, last } = key {
        // The interval maps' keys are big-endian: the DNAT rule converts numgen's number.
        list_element(&mut w, &first.to_be_bytes(), value.as_ref(), 0);
        let end = last.checked_add(1)?;
        list_element(&mut w, &end.to_be_bytes(), None, NFT_SET_ELEM_INTERVAL_END);
    } else {
        list_element(&mut w, &key_bytes(key, family)?, value.as_ref(), 0);
    }
    w.finish().ok()
}

/// One `NFTA_LIST_ELEM`: a key, its value if any, and element flags if any.
fn list_element(
    w: &mut Attributes<'_>,
    key: &[u8],
    value: Option<&Result<Vec<u8>, &Verdict>>,
    flags: u32,
) {
    w.nest(NFTA_LIST_ELEM, |w| {
        w.nest(NFTA_SET_ELEM_KEY, |w| {
            w.bytes(NFTA_DATA_VALUE, key);
        });
        match value {
            Some(Ok(data)) => {
                w.nest(NFTA_SET_ELEM_DATA, |w| {
                    w.bytes(NFTA_DATA_VALUE, data);
                });
            }
            Some(Err(v)) => {
                w.nest(NFTA_SET_ELEM_DATA, |w| write_verdict(w, v));
            }
            None => {}
        }
        if flags != 0 {
            w.u32_be(NFTA_SET_ELEM_FLAGS, flags);
        }
    });
}

fn write_verdict(w: &mut Attributes<'_>, verdict: &Verdict) {
    w.nest(NFTA_DATA_VERDICT, |w| {
        let (code, chain) = match verdict {
            Verdict::Drop => (NF_DROP, None),
            Verdict::Accept => (NF_ACCEPT, None),
            Verdict::Jump(chain) => (NFT_JUMP, Some(chain)),
            Verdict::Goto(chain) => (NFT_GOTO, Some(chain)),
        };
        w.u32_be(NFTA_VERDICT_CODE, code);
        if let Some(chain) = chain {
            w.string(NFTA_VERDICT_CHAIN, chain);
        }
    });
}

/// Appends one concatenation component, padded to 32 bits as nf_tables registers are.
fn component(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(bytes);
    out.resize(out.len().next_multiple_of(4), 0);
}

fn address(out: &mut Vec<u8>, ip: IpAddr, family: IpFamily) -> Option<()> {
    match (ip, family) {
        (IpAddr::V4(ip), IpFamily::V4) => component(out, &ip.octets()),
        (IpAddr::V6(ip), IpFamily::V6) => component(out, &ip.octets()),
        _ => return None,
    }
    Some(())
}

fn protocol_number(protocol: Protocol) -> u8 {
    match protocol {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Sctp => 132,
    }
}

/// The key bytes of an element, laid out as nft lays out the set's type.
fn key_bytes(key: &Key, family: IpFamily) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(24);
    match key {
        // Ranges are written by `encode_element`.
        Key::Slots { .. } => return None,
        Key::Address(ip) => address(&mut out, *ip, family)?,
        Key::AddressPair(a, b) => {
            address(&mut out, *a, family)?;
            address(&mut out, *b, family)?;
        }
        Key::Destination(ip, protocol, port) => {
            address(&mut out, *ip, family)?;
            component(&mut out, &[protocol_number(*protocol)]);
            component(&mut out, &port.to_be_bytes());
        }
        Key::NodePort(protocol, port) => {
            component(&mut out, &[protocol_number(*protocol)]);
            component(&mut out, &port.to_be_bytes());
        }
        Key::Prefix(_) => return None,
    }
    Some(out)
}

fn expression(w: &mut Attributes<'_>, name: &str, data: impl FnOnce(&mut Attributes<'_>)) {
    w.nest(NFTA_LIST_ELEM, |w| {
        w.string(NFTA_EXPR_NAME, name);
        w.nest(NFTA_EXPR_DATA, data);
    });
}

/// `meta l4proto P dnat F to numgen G mod N offset B map @M`, as nft compiles it.
fn dnat_expressions(w: &mut Attributes<'_>, rule: &DnatRule) {
    // meta load l4proto => reg 1
    expression(w, "meta", |w| {
        w.u32_be(2, 16); // NFTA_META_KEY = NFT_META_L4PROTO
        w.u32_be(1, NFT_REG_1); // NFTA_META_DREG
    });
    // cmp eq reg 1 <protocol>
    expression(w, "cmp", |w| {
        w.u32_be(1, NFT_REG_1); // NFTA_CMP_SREG
        w.u32_be(2, 0); // NFTA_CMP_OP = NFT_CMP_EQ
        w.nest(3, |w| {
            w.bytes(NFTA_DATA_VALUE, &[protocol_number(rule.protocol)]);
        }); // NFTA_CMP_DATA
    });
    // numgen reg 1 = random|inc mod N offset B
    expression(w, "numgen", |w| {
        w.u32_be(1, NFT_REG_1); // NFTA_NG_DREG
        w.u32_be(2, rule.modulus); // NFTA_NG_MODULUS
        w.u32_be(
            3,
            match rule.balancing {
                Balancing::Random => NFT_NG_RANDOM,
                Balancing::RoundRobin => NFT_NG_INCREMENTAL,
            },
        ); // NFTA_NG_TYPE
        w.u32_be(4, rule.offset); // NFTA_NG_OFFSET
    });
    // byteorder reg 1 = hton(reg 1, 4, 4): the endpoint maps are interval maps, whose keys
    // are big-endian.
    expression(w, "byteorder", |w| {
        w.u32_be(1, NFT_REG_1); // NFTA_BYTEORDER_SREG
        w.u32_be(2, NFT_REG_1); // NFTA_BYTEORDER_DREG
        w.u32_be(3, 1); // NFTA_BYTEORDER_OP = NFT_BYTEORDER_HTON
        w.u32_be(4, 4); // NFTA_BYTEORDER_LEN
        w.u32_be(5, 4); // NFTA_BYTEORDER_SIZE
    });
    // lookup reg 1 set M dreg 1
    expression(w, "lookup", |w| {
        w.u32_be(2, NFT_REG_1); // NFTA_LOOKUP_SREG
        w.u32_be(3, NFT_REG_1); // NFTA_LOOKUP_DREG
        w.string(1, &rule.map); // NFTA_LOOKUP_SET
    });
    // nat dnat <family> addr_min reg 1 proto_min reg 9 (or reg 2 for IPv6)
    expression(w, "nat", |w| {
        w.u32_be(1, 1); // NFTA_NAT_TYPE = NFT_NAT_DNAT
        w.u32_be(2, u32::from(family_number(rule.family))); // NFTA_NAT_FAMILY
        w.u32_be(3, NFT_REG_1); // NFTA_NAT_REG_ADDR_MIN
        // The port follows the address in the concatenation: after 4 bytes for IPv4
        // (second 32-bit word, reg 9), after 16 bytes for IPv6 (the next 128-bit register).
        let proto_reg = match rule.family {
            IpFamily::V4 => NFT_REG32_01,
            IpFamily::V6 => 2,
        };
        w.u32_be(5, proto_reg); // NFTA_NAT_REG_PROTO_MIN
    });
}

/// Finds which element of the element message `origin` the kernel blamed, from the offset
/// of the attribute it named (extended acks): the elements are re-encoded to measure them.
pub(crate) fn blamed_element(
    transaction: &Transaction,
    origin: Origin,
    offset: u32,
) -> Option<usize> {
    let family = transaction.family();
    let ops = transaction
        .ops()
        .get(origin.first..origin.first + origin.count)?;
    let Some(Op::AddElement { set, .. } | Op::DeleteElement { set, .. }) = ops.first() else {
        return None;
    };
    // The message: netlink header, nfgenmsg, table and set names, the list's nest header.
    let string_len = |s: &str| (4 + s.len() + 1).next_multiple_of(4);
    let mut position = 16 + 4 + string_len(TABLE) + string_len(set) + 4;
    let offset = usize::try_from(offset).ok()?;
    for (i, op) in ops.iter().enumerate() {
        let mut encoded = Vec::new();
        encode_element(&mut encoded, op, family)?;
        if offset < position + encoded.len() {
            return (offset >= position).then_some(origin.first + i);
        }
        position += encoded.len();
    }
    None
}

// ---- Queries (the drift check) ----

/// One request with an acknowledgement: the message, with sequence number `seq`.
pub(crate) fn generation_request(seq: u32) -> MessageBuffer {
    let mut messages = MessageBuffer::new(seq);
    let _ = messages.push(
        nft_kind(NFT_MSG_GETGEN),
        NLM_F_REQUEST | NLM_F_ACK,
        &nfgen(0, 0),
        |_| {},
    );
    messages
}

/// The generation in a `NEWGEN` answer.
pub(crate) fn generation_of(reply: &Reply<'_>) -> Option<u32> {
    if reply.kind != nft_kind(NFT_MSG_NEWGEN) {
        return None;
    }
    reply
        .attributes(4)
        .find(|(kind, _)| *kind == NFTA_GEN_ID)
        .and_then(|(_, value)| Some(u32::from_be_bytes(value.get(0..4)?.try_into().ok()?)))
}

/// `GETTABLE` of this backend's table in `family`.
pub(crate) fn table_request(seq: u32, family: IpFamily) -> MessageBuffer {
    let mut messages = MessageBuffer::new(seq);
    let _ = messages.push(
        nft_kind(NFT_MSG_GETTABLE),
        NLM_F_REQUEST | NLM_F_ACK,
        &nfgen(family_number(family), 0),
        |w| {
            w.string(NFTA_TABLE_NAME, TABLE);
        },
    );
    messages
}

/// The handle and use count (chains, sets and other objects) in a `NEWTABLE` answer.
pub(crate) fn table_of(reply: &Reply<'_>) -> Option<(u64, u32)> {
    if reply.kind != nft_kind(NFT_MSG_NEWTABLE) {
        return None;
    }
    let mut handle = None;
    let mut uses = None;
    for (kind, value) in reply.attributes(4) {
        match kind {
            NFTA_TABLE_HANDLE => {
                handle = Some(u64::from_be_bytes(value.get(0..8)?.try_into().ok()?))
            }
            NFTA_TABLE_USE => uses = Some(u32::from_be_bytes(value.get(0..4)?.try_into().ok()?)),
            _ => {}
        }
    }
    Some((handle?, uses?))
}

/// A dump of the rules of one chain.
pub(crate) fn rules_request(seq: u32, family: IpFamily, chain: &str) -> MessageBuffer {
    let mut messages = MessageBuffer::new(seq);
    let _ = messages.push(
        nft_kind(NFT_MSG_GETRULE),
        NLM_F_REQUEST | NLM_F_DUMP,
        &nfgen(family_number(family), 0),
        |w| {
            w.string(NFTA_RULE_TABLE, TABLE)
                .string(NFTA_RULE_CHAIN, chain);
        },
    );
    messages
}

/// Whether `reply` is one rule of a rule dump, or the dump's end.
pub(crate) fn is_rule(reply: &Reply<'_>) -> bool {
    reply.kind == nft_kind(NFT_MSG_NEWRULE)
}

/// Whether `reply` ends a dump.
pub(crate) fn is_done(reply: &Reply<'_>) -> bool {
    reply.kind == NLMSG_DONE
}

/// A `GETSETELEM` of one element, or `None` when the key cannot be encoded.
pub(crate) fn element_request(
    seq: u32,
    family: IpFamily,
    set: &str,
    key: &Key,
) -> Option<MessageBuffer> {
    let key = key_bytes(key, family)?;
    let mut messages = MessageBuffer::new(seq);
    messages
        .push(
            nft_kind(NFT_MSG_GETSETELEM),
            NLM_F_REQUEST | NLM_F_ACK,
            &nfgen(family_number(family), 0),
            |w| {
                w.string(NFTA_SET_ELEM_LIST_TABLE, TABLE)
                    .string(NFTA_SET_ELEM_LIST_SET, set)
                    .nest(NFTA_SET_ELEM_LIST_ELEMENTS, |w| {
                        w.nest(NFTA_LIST_ELEM, |w| {
                            w.nest(NFTA_SET_ELEM_KEY, |w| {
                                w.bytes(NFTA_DATA_VALUE, &key);
                            });
                        });
                    });
            },
        )
        .ok()?;
    Some(messages)
}

/// Whether a kernel error says the object does not exist.
pub(crate) fn is_not_found(error: &KernelError) -> bool {
    error.errno == nix::libc::ENOENT
}

/// The table keyword and name, for messages (`ip kube-proxy`).
pub(crate) fn table_name(family: IpFamily) -> String {
    format!("{} {TABLE}", family_keyword(family))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kproxy_netlink::parse_replies;

    fn tx(ops: Vec<Op>) -> Transaction {
        let mut tx = Transaction::new(IpFamily::V4);
        for op in ops {
            tx.push(op);
        }
        tx
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn element_keys_and_values_follow_nft_layouts() {
        // As `nft --debug=netlink` prints them: 172.30.0.1 . tcp . 80 is 01001eac 00000006 00005000.
        let key = key_bytes(
            &Key::Destination(ip("172.30.0.1"), Protocol::Tcp, 80),
            IpFamily::V4,
        )
        .unwrap();
        assert_eq!(key, [172, 30, 0, 1, 6, 0, 0, 0, 0, 80, 0, 0]);
        // As nft writes 65536-65538 : 10.0.0.1 . 8080 to an interval map: the first key with
        // its value, then the key after the last flagged as the end.
        let mut range = Vec::new();
        encode_element(
            &mut range,
            &Op::AddElement {
                set: "endpoints-tcp-001".into(),
                key: Key::Slots {
                    first: 65_536,
                    last: 65_538,
                },
                value: Some(Value::Endpoint(ip("10.0.0.1"), 8080)),
            },
            IpFamily::V4,
        )
        .unwrap();
        let start = [0, 1, 0, 0];
        let end = [0, 1, 0, 3];
        let at = |needle: &[u8]| range.windows(needle.len()).position(|w| w == needle);
        assert!(at(&start).unwrap() < at(&[10, 0, 0, 1]).unwrap());
        assert!(at(&[10, 0, 0, 1]).unwrap() < at(&end).unwrap());
        assert!(range.ends_with(&[0, 0, 0, 1]), "the end element's flags");
        assert!(key_bytes(&Key::Address(ip("fd00::1")), IpFamily::V4).is_none());
        assert_eq!(
            endpoint_map_userdata(IpFamily::V4, Protocol::Tcp).len(),
            100
        );
    }

    #[test]
    fn only_known_shapes_are_encoded_and_each_message_knows_its_operations() {
        let dnat = Rule::Dnat(DnatRule {
            family: IpFamily::V4,
            protocol: Protocol::Tcp,
            balancing: Balancing::Random,
            modulus: 3,
            offset: 65_536,
            map: "endpoints-tcp-001".into(),
        });
        let ok = tx(vec![
            Op::AddChain {
                name: "service-X".into(),
                base: None,
            },
            Op::AddRule {
                chain: "service-X".into(),
                rule: dnat,
            },
            Op::AddElement {
                set: "service-ips".into(),
                key: Key::Destination(ip("172.30.0.1"), Protocol::Tcp, 80),
                value: Some(Value::Verdict(Verdict::Goto("service-X".into()))),
            },
            Op::DeleteElement {
                set: "hairpin".into(),
                key: Key::AddressPair(ip("10.0.0.1"), ip("10.0.0.1")),
            },
        ]);
        let batch = encode(&[ok], 100).unwrap();
        // BATCH_BEGIN, four messages, BATCH_END.
        assert_eq!(batch.messages.messages(), 6);
        assert_eq!(batch.origin(100), None);
        assert_eq!(
            batch.origin(103),
            Some(Origin {
                transaction: 0,
                first: 2,
                count: 1
            })
        );
        assert!(batch.contains(105) && !batch.contains(106) && !batch.contains(99));
        let text = tx(vec![Op::AddRule {
            chain: "c".into(),
            rule: Rule::Text("fib saddr type local jump mark-for-masquerade".into()),
        }]);
        let Err(Unsupported(why)) = encode(&[text], 1) else {
            panic!("a text rule was encoded")
        };
        assert!(why.contains("fib saddr type local"), "{why}");
    }

    #[test]
    fn long_element_lists_are_split_within_the_attribute_limit() {
        let ops = (0..20_000u32)
            .map(|i| Op::AddElement {
                set: "endpoints-tcp-001".into(),
                key: Key::Slots {
                    first: i * 2,
                    last: i * 2 + 1,
                },
                value: Some(Value::Endpoint(ip("10.0.0.1"), 8080)),
            })
            .collect();
        let batch = encode(&[tx(ops)], 1).unwrap();
        assert!(batch.messages.messages() > 3);
        let replies = parse_replies(batch.messages.bytes()).unwrap();
        let mut covered = 0;
        for (i, reply) in replies.iter().enumerate().skip(1).take(replies.len() - 2) {
            assert!(reply.payload.len() < 65_535);
            let origin = batch.origin(reply.seq).unwrap();
            assert_eq!(origin.first, covered, "message {i}");
            covered += origin.count;
        }
        assert_eq!(covered, 20_000);
    }

    #[test]
    fn the_blamed_element_is_found_from_the_attribute_offset() {
        let ops: Vec<Op> = (0..10u32)
            .map(|i| Op::DeleteElement {
                set: "endpoints-tcp-001".into(),
                key: Key::Slots { first: i, last: i },
            })
            .collect();
        let transaction = tx(ops.clone());
        let batch = encode(std::slice::from_ref(&transaction), 1).unwrap();
        let replies = parse_replies(batch.messages.bytes()).unwrap();
        let message = &replies[1];
        // Find where element 4 starts in the message as sent.
        let mut element = Vec::new();
        encode_element(&mut element, &ops[4], IpFamily::V4).unwrap();
        let body = message.payload;
        let at = body
            .windows(element.len())
            .position(|w| w == element.as_slice())
            .unwrap();
        let offset = u32::try_from(16 + at).unwrap();
        let origin = batch.origin(message.seq).unwrap();
        assert_eq!(blamed_element(&transaction, origin, offset), Some(4));
    }
}
