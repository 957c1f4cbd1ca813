//! Netlink attributes (type-length-value, 4-byte aligned) written into a message body.

use crate::error::NetlinkError;

/// The largest attribute, header included: its length is a `u16`.
pub const MAX_ATTRIBUTE_LEN: usize = u16::MAX as usize;

/// `NLA_F_NESTED`: the attribute holds attributes.
const NLA_F_NESTED: u16 = 0x8000;

/// Appends attributes to a buffer (the body of one message).
///
/// Lengths are checked: an attribute or a nest longer than [`MAX_ATTRIBUTE_LEN`] makes the
/// writer fail ([`Attributes::finish`] returns [`NetlinkError::TooLong`]) instead of writing a
/// clamped length the kernel would misread. Encoders that write long lists (set elements)
/// measure with [`Attributes::len`] and start a new message before the limit.
#[derive(Debug)]
pub struct Attributes<'a> {
    buf: &'a mut Vec<u8>,
    overflow: Option<(u16, usize)>,
}

impl<'a> Attributes<'a> {
    /// Writes at the end of `buf`.
    pub fn new(buf: &'a mut Vec<u8>) -> Self {
        Self {
            buf,
            overflow: None,
        }
    }

    /// How many bytes the buffer holds (to measure what was written since a point).
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Writes an attribute with a raw payload.
    pub fn bytes(&mut self, kind: u16, payload: &[u8]) -> &mut Self {
        let len = 4 + payload.len();
        self.header(kind, len);
        self.buf.extend_from_slice(payload);
        self.pad();
        self
    }

    /// Writes a nested attribute whose content was encoded beforehand (e.g. a list measured
    /// element by element to split it over messages).
    pub fn nested_bytes(&mut self, kind: u16, content: &[u8]) -> &mut Self {
        self.bytes(kind | NLA_F_NESTED, content)
    }

    /// Writes a NUL-terminated string attribute.
    pub fn string(&mut self, kind: u16, value: &str) -> &mut Self {
        let len = 4 + value.len() + 1;
        self.header(kind, len);
        self.buf.extend_from_slice(value.as_bytes());
        self.buf.push(0);
        self.pad();
        self
    }

    /// Writes a big-endian `u32` attribute (netfilter's convention).
    pub fn u32_be(&mut self, kind: u16, value: u32) -> &mut Self {
        self.bytes(kind, &value.to_be_bytes())
    }

    /// Writes a big-endian `u64` attribute.
    pub fn u64_be(&mut self, kind: u16, value: u64) -> &mut Self {
        self.bytes(kind, &value.to_be_bytes())
    }

    /// Writes a nested attribute whose content `inner` writes.
    pub fn nest(&mut self, kind: u16, inner: impl FnOnce(&mut Attributes<'_>)) -> &mut Self {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        let overflow = {
            let mut nested = Attributes {
                buf: self.buf,
                overflow: None,
            };
            inner(&mut nested);
            nested.overflow
        };
        if self.overflow.is_none() {
            self.overflow = overflow;
        }
        let len = self.buf.len() - start;
        match u16::try_from(len) {
            Ok(len16) => self.buf[start..start + 2].copy_from_slice(&len16.to_ne_bytes()),
            Err(_) => self.note_overflow(kind, len),
        }
        self.buf[start + 2..start + 4].copy_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        self
    }

    /// Ends writing.
    ///
    /// # Errors
    ///
    /// [`NetlinkError::TooLong`] when some attribute did not fit its 16-bit length.
    pub fn finish(self) -> Result<(), NetlinkError> {
        match self.overflow {
            None => Ok(()),
            Some((attribute, len)) => Err(NetlinkError::TooLong { attribute, len }),
        }
    }

    fn header(&mut self, kind: u16, len: usize) {
        let len16 = u16::try_from(len).unwrap_or_else(|_| {
            self.note_overflow(kind, len);
            0
        });
        self.buf.extend_from_slice(&len16.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
    }

    fn note_overflow(&mut self, kind: u16, len: usize) {
        if self.overflow.is_none() {
            self.overflow = Some((kind, len));
        }
    }

    fn pad(&mut self) {
        let padded = self.buf.len().next_multiple_of(4);
        self.buf.resize(padded, 0);
    }
}

/// Iterates over the attributes in `bytes`: `(kind without flags, payload)`. Stops at the first
/// malformed attribute. Decoders of nested attributes read a nest's payload with it.
pub fn iter(bytes: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        if rest.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([rest[0], rest[1]]));
        let kind = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
        if len < 4 || len > rest.len() {
            return None;
        }
        let payload = &rest[4..len];
        rest = &rest[len.next_multiple_of(4).min(rest.len())..];
        Some((kind, payload))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_aligned_and_nests_measure_their_content() {
        let mut buf = Vec::new();
        let mut w = Attributes::new(&mut buf);
        w.string(1, "ab").nest(2, |w| {
            w.u32_be(1, 7);
        });
        w.finish().unwrap();
        assert_eq!(
            buf,
            [
                7, 0, 1, 0, b'a', b'b', 0, 0, 12, 0, 2, 0x80, 8, 0, 1, 0, 0, 0, 0, 7
            ]
        );
        let parsed: Vec<(u16, &[u8])> = iter(&buf).collect();
        assert_eq!(parsed[0], (1, &b"ab\0"[..]));
        assert_eq!(parsed[1].0, 2);
    }

    #[test]
    fn a_nest_longer_than_a_u16_is_an_error_not_a_clamped_length() {
        let mut buf = Vec::new();
        let mut w = Attributes::new(&mut buf);
        w.nest(3, |w| {
            for _ in 0..10_000 {
                w.u32_be(1, 1);
            }
        });
        let error = w.finish().unwrap_err();
        assert!(
            matches!(error, NetlinkError::TooLong { attribute: 3, len } if len == 80_004),
            "{error}"
        );
        let mut buf = Vec::new();
        let mut w = Attributes::new(&mut buf);
        w.bytes(1, &vec![0; 70_000]);
        assert!(w.finish().is_err());
    }
}
