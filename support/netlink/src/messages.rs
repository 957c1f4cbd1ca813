//! Netlink messages: writing a sequence of requests into one buffer, and reading answers.

use crate::NLMSG_ERROR;
use crate::attributes::{self, Attributes};
use crate::error::{KernelError, NetlinkError};

/// The length of a netlink message header (`struct nlmsghdr`).
pub const HEADER_LEN: usize = 16;

/// `NLM_F_CAPPED`: an error answer carries only the header of the refused message.
const NLM_F_CAPPED: u16 = 0x100;
/// `NLM_F_ACK_TLVS`: an error answer carries extended-ack attributes.
const NLM_F_ACK_TLVS: u16 = 0x200;
/// `NLMSGERR_ATTR_MSG`, `NLMSGERR_ATTR_OFFS`.
const NLMSGERR_ATTR_MSG: u16 = 1;
const NLMSGERR_ATTR_OFFS: u16 = 2;

/// Requests written one after the other into one buffer, with consecutive sequence numbers:
/// what one socket write sends.
#[derive(Debug, Default)]
pub struct MessageBuffer {
    buf: Vec<u8>,
    next_seq: u32,
    messages: usize,
}

impl MessageBuffer {
    /// An empty buffer whose first message gets sequence number `first_seq`.
    pub fn new(first_seq: u32) -> Self {
        Self {
            buf: Vec::new(),
            next_seq: first_seq,
            messages: 0,
        }
    }

    /// Appends one message: the netlink header, the protocol's fixed header `extra` (e.g.
    /// `struct nfgenmsg`), then the attributes `body` writes. Returns its sequence number.
    ///
    /// # Errors
    ///
    /// [`NetlinkError::TooLong`] when an attribute did not fit; the buffer is then left as it
    /// was before the call.
    pub fn push(
        &mut self,
        kind: u16,
        flags: u16,
        extra: &[u8],
        body: impl FnOnce(&mut Attributes<'_>),
    ) -> Result<u32, NetlinkError> {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0; HEADER_LEN]);
        self.buf.extend_from_slice(extra);
        let mut attributes = Attributes::new(&mut self.buf);
        body(&mut attributes);
        if let Err(error) = attributes.finish() {
            self.buf.truncate(start);
            return Err(error);
        }
        let len = u32::try_from(self.buf.len() - start).map_err(|_| NetlinkError::TooLong {
            attribute: 0,
            len: self.buf.len() - start,
        })?;
        let seq = self.next_seq;
        let header = &mut self.buf[start..start + HEADER_LEN];
        header[0..4].copy_from_slice(&len.to_ne_bytes());
        header[4..6].copy_from_slice(&kind.to_ne_bytes());
        header[6..8].copy_from_slice(&flags.to_ne_bytes());
        header[8..12].copy_from_slice(&seq.to_ne_bytes());
        header[12..16].copy_from_slice(&0u32.to_ne_bytes());
        self.next_seq = self.next_seq.wrapping_add(1);
        self.messages += 1;
        Ok(seq)
    }

    /// The bytes to write.
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether no message was written.
    pub fn is_empty(&self) -> bool {
        self.messages == 0
    }

    /// How many messages were written.
    pub fn messages(&self) -> usize {
        self.messages
    }

    /// Leaves the acknowledgement request (`NLM_F_ACK`) on the last message only. The kernel
    /// answers a refused message whatever its flags and handles the messages of one write in
    /// order, so the last one's acknowledgement says that every earlier one without an error
    /// answer succeeded: one answer to read instead of one per message, which matters where
    /// each read is a costly system call (a User-Mode Linux guest).
    pub fn acknowledge_only_last(&mut self) {
        let mut offset = 0;
        let mut remaining = self.messages;
        while remaining > 0 && offset + HEADER_LEN <= self.buf.len() {
            let header = &mut self.buf[offset..offset + HEADER_LEN];
            let len = u32::from_ne_bytes([header[0], header[1], header[2], header[3]]) as usize;
            remaining -= 1;
            if remaining > 0 {
                let flags = u16::from_ne_bytes([header[6], header[7]]) & !crate::NLM_F_ACK;
                header[6..8].copy_from_slice(&flags.to_ne_bytes());
            }
            offset += len.next_multiple_of(4).max(HEADER_LEN);
        }
    }

    /// The sequence number the next message gets.
    pub fn next_seq(&self) -> u32 {
        self.next_seq
    }
}

/// One message of the kernel's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply<'a> {
    /// `nlmsg_type`.
    pub kind: u16,
    /// `nlmsg_flags`.
    pub flags: u16,
    /// The sequence number of the request it answers.
    pub seq: u32,
    /// What follows the header.
    pub payload: &'a [u8],
}

impl Reply<'_> {
    /// For an `NLMSG_ERROR` answer: `Ok(())` for an acknowledgement, the kernel's error
    /// otherwise. `None` for any other kind of message.
    pub fn status(&self) -> Option<Result<(), KernelError>> {
        if self.kind != NLMSG_ERROR {
            return None;
        }
        let code = i32::from_ne_bytes(self.payload.get(0..4)?.try_into().ok()?);
        if code == 0 {
            return Some(Ok(()));
        }
        let mut error = KernelError {
            errno: code.saturating_neg(),
            message: None,
            offset: None,
        };
        if self.flags & NLM_F_ACK_TLVS != 0 {
            // After the code: the refused message's header, and its payload unless capped.
            let original_len = self
                .payload
                .get(4..8)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_ne_bytes)
                .unwrap_or(0) as usize;
            let skip = if self.flags & NLM_F_CAPPED != 0 {
                HEADER_LEN
            } else {
                original_len.next_multiple_of(4)
            };
            let tlvs = self.payload.get(4 + skip..).unwrap_or_default();
            for (kind, value) in attributes::iter(tlvs) {
                match kind {
                    NLMSGERR_ATTR_MSG => {
                        let text = value.split(|b| *b == 0).next().unwrap_or_default();
                        error.message = Some(String::from_utf8_lossy(text).into_owned());
                    }
                    NLMSGERR_ATTR_OFFS if value.len() >= 4 => {
                        error.offset =
                            Some(u32::from_ne_bytes([value[0], value[1], value[2], value[3]]));
                    }
                    _ => {}
                }
            }
        }
        Some(Err(error))
    }

    /// The attributes after a fixed header of `skip` bytes (e.g. 4 for `struct nfgenmsg`).
    pub fn attributes(&self, skip: usize) -> impl Iterator<Item = (u16, &[u8])> {
        attributes::iter(self.payload.get(skip..).unwrap_or_default())
    }
}

/// Splits one datagram into its messages.
///
/// # Errors
///
/// [`NetlinkError::Malformed`] when a length runs past the datagram.
pub fn parse_replies(datagram: &[u8]) -> Result<Vec<Reply<'_>>, NetlinkError> {
    let mut replies = Vec::new();
    let mut offset = 0;
    while offset + HEADER_LEN <= datagram.len() {
        let header = &datagram[offset..offset + HEADER_LEN];
        let len = u32::from_ne_bytes([header[0], header[1], header[2], header[3]]) as usize;
        if len < HEADER_LEN || offset + len > datagram.len() {
            return Err(NetlinkError::Malformed(format!(
                "message of length {len} at offset {offset} of a {}-byte datagram",
                datagram.len()
            )));
        }
        replies.push(Reply {
            kind: u16::from_ne_bytes([header[4], header[5]]),
            flags: u16::from_ne_bytes([header[6], header[7]]),
            seq: u32::from_ne_bytes([header[8], header[9], header[10], header[11]]),
            payload: &datagram[offset + HEADER_LEN..offset + len],
        });
        offset += len.next_multiple_of(4);
    }
    Ok(replies)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_get_consecutive_sequence_numbers_and_lengths() {
        let mut buffer = MessageBuffer::new(7);
        assert_eq!(
            buffer
                .push(1, 5, &[0, 0, 0, 0], |w| {
                    w.u32_be(1, 3);
                })
                .unwrap(),
            7
        );
        assert_eq!(buffer.push(2, 5, &[], |_| {}).unwrap(), 8);
        let replies = parse_replies(buffer.bytes()).unwrap();
        assert_eq!(replies.len(), 2);
        assert_eq!(
            (replies[0].kind, replies[0].seq, replies[0].payload.len()),
            (1, 7, 12)
        );
        assert_eq!((replies[1].kind, replies[1].seq), (2, 8));
    }

    #[test]
    fn a_message_that_does_not_fit_leaves_the_buffer_unchanged() {
        let mut buffer = MessageBuffer::new(1);
        buffer.push(1, 0, &[], |_| {}).unwrap();
        let before = buffer.bytes().to_vec();
        let result = buffer.push(2, 0, &[], |w| {
            w.bytes(1, &vec![0; 70_000]);
        });
        assert!(matches!(result, Err(NetlinkError::TooLong { .. })));
        assert_eq!(buffer.bytes(), before);
        assert_eq!((buffer.messages(), buffer.next_seq()), (1, 2));
    }

    /// An error answer as the kernel writes it with extended acks and a capped original.
    fn error_reply(code: i32, message: &str, offset: u32) -> Vec<u8> {
        let mut payload = code.to_ne_bytes().to_vec();
        let mut original = vec![0u8; HEADER_LEN];
        original[0..4].copy_from_slice(&200u32.to_ne_bytes());
        payload.extend_from_slice(&original);
        let mut w = Attributes::new(&mut payload);
        w.string(NLMSGERR_ATTR_MSG, message);
        w.bytes(NLMSGERR_ATTR_OFFS, &offset.to_ne_bytes());
        w.finish().unwrap();
        let mut out = Vec::new();
        let len = u32::try_from(HEADER_LEN + payload.len()).unwrap();
        out.extend_from_slice(&len.to_ne_bytes());
        out.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        out.extend_from_slice(&(NLM_F_CAPPED | NLM_F_ACK_TLVS).to_ne_bytes());
        out.extend_from_slice(&42u32.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.extend_from_slice(&payload);
        out
    }

    #[test]
    fn errors_keep_errno_message_and_blamed_offset() {
        let bytes = error_reply(-17, "element exists", 40);
        let replies = parse_replies(&bytes).unwrap();
        let error = replies[0].status().unwrap().unwrap_err();
        assert_eq!(error.errno, 17);
        assert_eq!(error.message.as_deref(), Some("element exists"));
        assert_eq!(error.offset, Some(40));
        assert!(error.to_string().contains("File exists"), "{error}");
        assert!(error.to_string().contains("element exists"), "{error}");
    }

    #[test]
    fn a_truncated_datagram_is_malformed() {
        let mut bytes = error_reply(-2, "x", 0);
        bytes.truncate(20);
        assert!(matches!(
            parse_replies(&bytes),
            Err(NetlinkError::Malformed(_))
        ));
    }
}
