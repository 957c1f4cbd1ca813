//! Request and answer over one [`NetlinkSocket`]: one request with its acknowledgement, a
//! dump, or a batch of requests in one write with an answer for each.

use kproxy_netlink::{
    Attributes, KernelError, MessageBuffer, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE,
    NetlinkError, NetlinkSocket,
};

/// Sends one request (`NLM_F_REQUEST | NLM_F_ACK` are added to `flags`) and returns the
/// payloads of the messages that answered it before its acknowledgement.
pub(crate) fn request(
    socket: &mut NetlinkSocket,
    kind: u16,
    flags: u16,
    extra: &[u8],
    body: impl FnOnce(&mut Attributes<'_>),
) -> Result<Vec<Vec<u8>>, NetlinkError> {
    let seq = socket.reserve(1);
    let mut buffer = MessageBuffer::new(seq);
    buffer.push(kind, flags | NLM_F_REQUEST | NLM_F_ACK, extra, body)?;
    socket.send(buffer.bytes())?;
    let mut answers = Vec::new();
    socket.receive_until("acknowledgement", |reply| {
        if reply.seq != seq {
            return Ok(false);
        }
        if let Some(status) = reply.status() {
            status.map_err(NetlinkError::Kernel)?;
            return Ok(true);
        }
        answers.push(reply.payload.to_vec());
        Ok(false)
    })?;
    Ok(answers)
}

/// Sends a dump request and returns the payload of every message of the dump.
pub(crate) fn dump(
    socket: &mut NetlinkSocket,
    kind: u16,
    extra: &[u8],
    body: impl FnOnce(&mut Attributes<'_>),
) -> Result<Vec<Vec<u8>>, NetlinkError> {
    let seq = socket.reserve(1);
    let mut buffer = MessageBuffer::new(seq);
    buffer.push(kind, NLM_F_REQUEST | NLM_F_DUMP, extra, body)?;
    socket.send(buffer.bytes())?;
    let mut answers = Vec::new();
    socket.receive_until("dump", |reply| {
        if reply.seq != seq {
            return Ok(false);
        }
        if let Some(status) = reply.status() {
            // A dump that fails before its first part answers with an error instead of DONE.
            status.map_err(NetlinkError::Kernel)?;
            return Ok(true);
        }
        if reply.kind == NLMSG_DONE {
            // A dump that fails midway puts the (negative) errno in its DONE message.
            let code = reply
                .payload
                .get(0..4)
                .and_then(|bytes| bytes.try_into().ok())
                .map_or(0, i32::from_ne_bytes);
            if code < 0 {
                return Err(NetlinkError::Kernel(KernelError {
                    errno: code.saturating_neg(),
                    message: None,
                    offset: None,
                }));
            }
            return Ok(true);
        }
        answers.push(reply.payload.to_vec());
        Ok(false)
    })?;
    Ok(answers)
}

/// How many messages [`Batch`] writes at once: their acknowledgements (36 bytes each) stay far
/// below the socket's receive buffer.
pub(crate) const BATCH_MESSAGES: usize = 1024;

/// Requests written into one buffer and sent in one write, with one acknowledgement.
#[derive(Debug)]
pub(crate) struct Batch {
    buffer: MessageBuffer,
    first_seq: u32,
}

impl Batch {
    /// A batch of at most `capacity` messages, with sequence numbers reserved on `socket`.
    pub(crate) fn new(socket: &mut NetlinkSocket, capacity: usize) -> Self {
        let count = u32::try_from(capacity).unwrap_or(u32::MAX);
        let first_seq = socket.reserve(count);
        Self {
            buffer: MessageBuffer::new(first_seq),
            first_seq,
        }
    }

    /// The buffer to push requests into; each needs `NLM_F_REQUEST | NLM_F_ACK`.
    pub(crate) fn buffer(&mut self) -> &mut MessageBuffer {
        &mut self.buffer
    }

    /// Sends the batch and returns the kernel's answer to each message, in order. Only the
    /// last message asks for an acknowledgement: refusals are answered anyway, so a message
    /// without an answer by the time the last one is acknowledged succeeded.
    pub(crate) fn send(
        mut self,
        socket: &mut NetlinkSocket,
    ) -> Result<Vec<Result<(), KernelError>>, NetlinkError> {
        let count = self.buffer.messages();
        let mut answers: Vec<Result<(), KernelError>> = vec![Ok(()); count];
        if count == 0 {
            return Ok(answers);
        }
        self.buffer.acknowledge_only_last();
        socket.send(self.buffer.bytes())?;
        let first_seq = self.first_seq;
        socket.receive_until("acknowledgements of a batch", |reply| {
            let index = reply.seq.wrapping_sub(first_seq) as usize;
            if index >= count {
                return Ok(false);
            }
            match reply.status() {
                Some(status) => {
                    answers[index] = status;
                    Ok(index == count - 1)
                }
                None => Ok(false),
            }
        })?;
        Ok(answers)
    }
}
