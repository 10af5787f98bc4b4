//! The op-9 batch: several packets delivered as one.
//!
//! A push is encoded once as a complete op-9 message holding a single inner packet ([`encode_push`]); the
//! same shared buffer then serves every recipient: WebSocket connections send it as it is (goim's browser
//! client expects pushes inside op 9), TCP connections send only the inner packet
//! ([`inner`], a zero-copy slice). When several pushes are queued for one WebSocket connection,
//! [`Batch`] merges their inner packets under one outer header, so they leave as one message.

use bytes::{Bytes, BytesMut};

use crate::op;
use crate::packet::{HEADER_LEN, Packet, VERSION, put_header};

/// Encodes a server push (`op`, `body`, seq 0) wrapped in an op-9 batch of one.
pub fn encode_push(op_code: i32, body: &[u8]) -> Bytes {
    let inner_len = HEADER_LEN + body.len();
    let mut dst = BytesMut::with_capacity(HEADER_LEN + inner_len);
    put_header(&mut dst, HEADER_LEN + inner_len, VERSION, op::RAW, 0);
    put_header(&mut dst, inner_len, VERSION, op_code, 0);
    dst.extend_from_slice(body);
    dst.freeze()
}

/// The outer header of an op-9 message whose inner packets total `inner_len` bytes (op 9, ver 1, seq 0),
/// for writers that send it next to the inner packets' own buffers instead of copying them behind it.
pub fn header(inner_len: usize) -> [u8; HEADER_LEN] {
    let mut head = [0; HEADER_LEN];
    put_header(
        &mut &mut head[..],
        HEADER_LEN + inner_len,
        VERSION,
        op::RAW,
        0,
    );
    head
}

/// The packets inside an op-9 message built by [`encode_push`] or [`Batch`]: everything after the outer
/// header (what TCP clients receive).
pub fn inner(batch: &Bytes) -> Bytes {
    batch.slice(HEADER_LEN.min(batch.len())..)
}

/// Builds one op-9 message out of several batches or plain packets.
#[derive(Debug)]
pub struct Batch {
    buf: BytesMut,
}

impl Batch {
    /// Starts a batch whose inner packets will total about `inner_capacity` bytes.
    pub fn with_capacity(inner_capacity: usize) -> Self {
        let mut buf = BytesMut::with_capacity(HEADER_LEN + inner_capacity);
        buf.resize(HEADER_LEN, 0);
        Self { buf }
    }

    /// Appends the inner packets of an op-9 message (from [`encode_push`] or [`Batch::finish`]).
    pub fn push_batch(&mut self, batch: &[u8]) {
        self.buf
            .extend_from_slice(batch.get(HEADER_LEN..).unwrap_or_default());
    }

    /// Appends one packet.
    pub fn push_packet(&mut self, packet: &Packet) {
        packet.encode_into(&mut self.buf);
    }

    /// Size of the message so far, outer header included.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True when nothing was appended.
    pub fn is_empty(&self) -> bool {
        self.buf.len() == HEADER_LEN
    }

    /// Writes the outer header (op 9, ver 1, seq 0, length 16 + inner) and returns the message.
    pub fn finish(mut self) -> Bytes {
        let inner_len = self.buf.len() - HEADER_LEN;
        self.buf[..HEADER_LEN].copy_from_slice(&header(inner_len));
        self.buf.freeze()
    }
}
