//! RFC 6455 framing, the server's side, by hand.
//!
//! The edge frames WebSocket messages itself so that pushes are written straight from their shared
//! buffers ([`super::gather`]) and nothing per connection keeps a buffer's capacity after a burst.
//! Server frames are unmasked and never fragmented; client frames must be masked (RFC 6455 5.1), carry
//! no extension bits (none is negotiated), and may be fragmented (continuations are reassembled up to
//! the message limit). Control frames are final and at most 125 bytes.

use bytes::BytesMut;

/// A continuation of a fragmented message.
pub const OP_CONTINUATION: u8 = 0x0;
/// A text message (refused: goim packets are binary).
pub const OP_TEXT: u8 = 0x1;
/// A binary message: one goim packet.
pub const OP_BINARY: u8 = 0x2;
/// The closing handshake.
pub const OP_CLOSE: u8 = 0x8;
/// A ping, answered with a pong carrying the same payload.
pub const OP_PING: u8 = 0x9;
/// A pong (ignored).
pub const OP_PONG: u8 = 0xa;
/// Largest control frame payload.
pub const MAX_CONTROL: usize = 125;

/// Calls `make` with the header of a final, unmasked server frame of `len` payload bytes.
pub fn header<T>(opcode: u8, len: usize, make: impl FnOnce(&[u8]) -> T) -> T {
    let mut head = [0u8; 10];
    head[0] = 0x80 | opcode;
    let used = if len < 126 {
        head[1] = len as u8;
        2
    } else if let Ok(len) = u16::try_from(len) {
        head[1] = 126;
        head[2..4].copy_from_slice(&len.to_be_bytes());
        4
    } else {
        head[1] = 127;
        head[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    make(&head[..used])
}

/// Appends a complete server frame (a control frame: pong or close) to `dst`.
pub fn put_frame(dst: &mut BytesMut, opcode: u8, payload: &[u8]) {
    header(opcode, payload.len(), |head| dst.extend_from_slice(head));
    dst.extend_from_slice(payload);
}

/// A client frame, parsed and unmasked.
#[derive(Debug)]
pub struct ClientFrame {
    /// Last frame of its message.
    pub fin: bool,
    /// One of the `OP_*` codes.
    pub opcode: u8,
    /// The unmasked payload.
    pub payload: BytesMut,
}

/// What [`decode`] found at the front of the read buffer.
#[derive(Debug)]
pub enum Decoded {
    /// A complete frame, taken off the buffer.
    Frame(ClientFrame),
    /// The frame is incomplete: at least this many more bytes are needed.
    Missing(usize),
}

/// Takes one complete client frame off the front of `buf`. Payloads above `max_payload` are refused
/// from their header, before any of it is buffered.
pub fn decode(buf: &mut BytesMut, max_payload: usize) -> Result<Decoded, String> {
    if buf.len() < 2 {
        return Ok(Decoded::Missing(2 - buf.len()));
    }
    let (first, second) = (buf[0], buf[1]);
    let fin = first & 0x80 != 0;
    let opcode = first & 0x0f;
    if first & 0x70 != 0 {
        return Err("reserved bits set in a WebSocket frame".into());
    }
    let control = opcode >= OP_CLOSE;
    match opcode {
        OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG => {}
        other => return Err(format!("unknown WebSocket opcode {other}")),
    }
    if second & 0x80 == 0 {
        return Err("unmasked WebSocket frame from the client".into());
    }
    let (len, at) = match second & 0x7f {
        126 if buf.len() < 4 => return Ok(Decoded::Missing(4 - buf.len())),
        126 => (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
        127 if buf.len() < 10 => return Ok(Decoded::Missing(10 - buf.len())),
        127 => {
            let mut len = [0; 8];
            len.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(len), 10)
        }
        len => (u64::from(len), 2),
    };
    let limit = if control { MAX_CONTROL } else { max_payload };
    let len = match usize::try_from(len) {
        Ok(len) if len <= limit => len,
        _ => {
            return Err(format!(
                "WebSocket frame of {len} bytes exceeds the limit of {limit}"
            ));
        }
    };
    if control && !fin {
        return Err("fragmented WebSocket control frame".into());
    }
    let head = at + 4;
    if buf.len() < head + len {
        return Ok(Decoded::Missing(head + len - buf.len()));
    }
    let mut mask = [0; 4];
    mask.copy_from_slice(&buf[at..head]);
    let _ = buf.split_to(head);
    let mut payload = buf.split_to(len);
    for (i, byte) in payload.iter_mut().enumerate() {
        *byte ^= mask[i % 4];
    }
    Ok(Decoded::Frame(ClientFrame {
        fin,
        opcode,
        payload,
    }))
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::{Decoded, OP_BINARY, OP_PING, decode, header};

    fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1, 2, 3, 4];
        let mut frame = vec![first];
        header(0, payload.len(), |head| frame.extend_from_slice(&head[1..]));
        frame[1] |= 0x80;
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        frame
    }

    #[test]
    fn frames_are_decoded_byte_by_byte() {
        for len in [0, 5, 125, 126, 300, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let wire = masked(0x80 | OP_BINARY, &payload);
            let mut buf = BytesMut::new();
            for (i, byte) in wire.iter().enumerate() {
                let Decoded::Missing(missing) = decode(&mut buf, 1 << 20).unwrap() else {
                    panic!("{len}: complete at {i}");
                };
                assert!(missing >= 1 && missing <= wire.len() - i, "{len} at {i}");
                buf.extend_from_slice(&[*byte]);
            }
            let Decoded::Frame(frame) = decode(&mut buf, 1 << 20).unwrap() else {
                panic!("{len}: incomplete");
            };
            assert!(frame.fin);
            assert_eq!(frame.opcode, OP_BINARY);
            assert_eq!(frame.payload[..], payload[..]);
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn bad_frames_are_refused() {
        let cases: [(Vec<u8>, &str); 5] = [
            (vec![0x82, 0x01, b'x'], "unmasked"),
            (masked(0xc2, b"x"), "reserved bits"),
            (masked(0x83, b"x"), "opcode 3"),
            (masked(OP_PING, b"x"), "fragmented"),
            (masked(0x82, &[0; 200]), "exceeds the limit of 100"),
        ];
        for (wire, why) in cases {
            let error = decode(&mut BytesMut::from(&wire[..]), 100).unwrap_err();
            assert!(error.contains(why), "{error:?} should say {why:?}");
        }
        let error = decode(&mut BytesMut::from(&masked(0x89, &[0; 126])[..]), 1000).unwrap_err();
        assert!(error.contains("limit of 125"), "{error}");
    }
}
