//! The goim packet: a 16-byte big-endian header followed by a body.
//!
//! [`Packet`] is the decoded form; [`Header`] is the fixed part, parsed and validated on its own so that a
//! stream decoder can reject a bad length before buffering the body it announces.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::DecodeError;

/// Size of the fixed header; also the only header length the protocol allows.
pub const HEADER_LEN: usize = 16;
/// Default limit of a client-to-server body (goim's 4096; packet 4112).
pub const DEFAULT_MAX_BODY: usize = 4096;
/// The protocol version rim puts in packets it originates (pushes, batches).
pub const VERSION: i16 = 1;

/// The fixed 16-byte header of a packet, already validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Total length (header + body); at least 16.
    pub packet_len: usize,
    /// Protocol version, echoed in replies.
    pub ver: i16,
    /// Operation code (see [`crate::op`]).
    pub op: i32,
    /// Sequence number, echoed in replies.
    pub seq: i32,
}

impl Header {
    /// Parses and validates the first 16 bytes of `buf`.
    ///
    /// Rejects a packet length below 16 (negative included), a header length other than 16, and a body
    /// above `max_body`. Does not look at the body bytes.
    pub fn parse(buf: &[u8], max_body: usize) -> Result<Self, DecodeError> {
        let Some(head) = buf.get(..HEADER_LEN) else {
            return Err(DecodeError::Truncated(buf.len()));
        };
        let packet_len = i32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let header_len = i16::from_be_bytes([head[4], head[5]]);
        let ver = i16::from_be_bytes([head[6], head[7]]);
        let op = i32::from_be_bytes([head[8], head[9], head[10], head[11]]);
        let seq = i32::from_be_bytes([head[12], head[13], head[14], head[15]]);
        let packet_len = usize::try_from(packet_len)
            .ok()
            .filter(|len| *len >= HEADER_LEN)
            .ok_or(DecodeError::PacketTooShort(packet_len))?;
        if header_len != HEADER_LEN as i16 {
            return Err(DecodeError::BadHeaderLength(header_len));
        }
        let body_len = packet_len - HEADER_LEN;
        if body_len > max_body {
            return Err(DecodeError::BodyTooLarge {
                len: body_len,
                max: max_body,
            });
        }
        Ok(Self {
            packet_len,
            ver,
            op,
            seq,
        })
    }

    /// Length of the body this header announces.
    pub fn body_len(&self) -> usize {
        self.packet_len - HEADER_LEN
    }
}

/// One decoded packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Protocol version.
    pub ver: i16,
    /// Operation code.
    pub op: i32,
    /// Sequence number.
    pub seq: i32,
    /// Body bytes (shared, never copied per recipient).
    pub body: Bytes,
}

impl Packet {
    /// Builds a packet.
    pub fn new(ver: i16, op: i32, seq: i32, body: impl Into<Bytes>) -> Self {
        Self {
            ver,
            op,
            seq,
            body: body.into(),
        }
    }

    /// The reply goim sends to a request: same ver and seq, the given op and body.
    pub fn reply(&self, op: i32, body: impl Into<Bytes>) -> Self {
        Self::new(self.ver, op, self.seq, body)
    }

    /// Encoded size (header + body).
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.body.len()
    }

    /// Appends the wire form to `dst`.
    ///
    /// # Panics
    /// If the body is larger than `i32::MAX - 16` bytes, which no caller can build from bounded inputs.
    pub fn encode_into(&self, dst: &mut BytesMut) {
        put_header(dst, self.encoded_len(), self.ver, self.op, self.seq);
        dst.extend_from_slice(&self.body);
    }

    /// The wire form as one shared buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut dst = BytesMut::with_capacity(self.encoded_len());
        self.encode_into(&mut dst);
        dst.freeze()
    }
}

/// Writes a 16-byte header for a packet of `packet_len` bytes.
///
/// # Panics
/// If `packet_len` does not fit an i32: packets that large cannot be framed by the protocol.
/// `dst` may be any buffer (a `BytesMut`, or a stack array as `&mut [u8]` for headers written next to
/// shared bodies without copying them).
pub fn put_header(dst: &mut impl BufMut, packet_len: usize, ver: i16, op: i32, seq: i32) {
    let len = i32::try_from(packet_len).expect("goim packet length must fit in an i32");
    dst.put_i32(len);
    dst.put_i16(HEADER_LEN as i16);
    dst.put_i16(ver);
    dst.put_i32(op);
    dst.put_i32(seq);
}
