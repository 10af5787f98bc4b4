//! Decoding packets from a byte stream (TCP, TLS over TCP).
//!
//! A stream carries packets back to back with no other framing, so the decoder looks at the header as
//! soon as 16 bytes are buffered and rejects a bad length before waiting for (or buffering) the body it
//! announces. That keeps a hostile length from making the edge allocate anything.

use bytes::{Buf, BytesMut};

use crate::error::DecodeError;
use crate::packet::{HEADER_LEN, Header, Packet};

/// Takes one complete packet off the front of `buf`, if one is there.
///
/// Returns `Ok(None)` when more bytes are needed (the buffer is left untouched), and an error as soon as
/// the header is invalid, even if the body has not arrived yet. `max_body` bounds the body length.
pub fn decode(buf: &mut BytesMut, max_body: usize) -> Result<Option<Packet>, DecodeError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let header = Header::parse(buf, max_body)?;
    if buf.len() < header.packet_len {
        return Ok(None);
    }
    buf.advance(HEADER_LEN);
    let body = buf.split_to(header.body_len()).freeze();
    Ok(Some(Packet {
        ver: header.ver,
        op: header.op,
        seq: header.seq,
        body,
    }))
}

/// How many more bytes `buf` needs before [`decode`] can return a packet (0 if it can already).
///
/// Lets a reader size its next read exactly, so a large packet arrives in few reads while an idle
/// connection keeps no buffer at all. Errors are left for [`decode`] to report.
pub fn missing(buf: &[u8], max_body: usize) -> usize {
    if buf.len() < HEADER_LEN {
        return HEADER_LEN - buf.len();
    }
    match Header::parse(buf, max_body) {
        Ok(header) => header.packet_len.saturating_sub(buf.len()),
        Err(_) => 0,
    }
}
