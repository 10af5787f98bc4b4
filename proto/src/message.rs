//! Decoding packets framed by a message (a WebSocket binary message, an op-9 batch body).
//!
//! Here the container gives the exact byte count, so a packet's length field must match the bytes actually
//! present: goim trusted the header and over-read (or crashed) when it claimed more. [`decode`] requires
//! exactly one packet filling the message; [`Packets`] walks packets back to back (a batch body).

use bytes::Bytes;

use crate::error::DecodeError;
use crate::packet::{HEADER_LEN, Header, Packet};

/// Decodes a message that must hold exactly one packet (goim's WebSocket framing).
pub fn decode(msg: Bytes, max_body: usize) -> Result<Packet, DecodeError> {
    let header = Header::parse(&msg, max_body)?;
    if header.packet_len != msg.len() {
        return Err(DecodeError::LengthMismatch {
            claimed: header.packet_len,
            present: msg.len(),
        });
    }
    Ok(Packet {
        ver: header.ver,
        op: header.op,
        seq: header.seq,
        body: msg.slice(HEADER_LEN..),
    })
}

/// Iterator over packets laid back to back in `buf` (an op-9 batch body, or a TCP capture).
///
/// Yields an error, then stops, if a packet claims more bytes than remain or its header is invalid.
#[derive(Debug, Clone)]
pub struct Packets {
    rest: Bytes,
    max_body: usize,
    failed: bool,
}

impl Packets {
    /// Walks `buf`, allowing bodies up to `max_body` bytes.
    pub fn new(buf: Bytes, max_body: usize) -> Self {
        Self {
            rest: buf,
            max_body,
            failed: false,
        }
    }
}

impl Iterator for Packets {
    type Item = Result<Packet, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        let result = Header::parse(&self.rest, self.max_body).and_then(|header| {
            if header.packet_len > self.rest.len() {
                return Err(DecodeError::LengthMismatch {
                    claimed: header.packet_len,
                    present: self.rest.len(),
                });
            }
            let packet = self.rest.split_to(header.packet_len);
            Ok(Packet {
                ver: header.ver,
                op: header.op,
                seq: header.seq,
                body: packet.slice(HEADER_LEN..),
            })
        });
        self.failed = result.is_err();
        Some(result)
    }
}
