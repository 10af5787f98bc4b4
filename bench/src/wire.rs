//! Client-side goim parsing that looks at headers (and a body's first bytes) only, and WebSocket
//! framing by hand.
//!
//! Counting packets must cost the load generator little, or it, not the server, sets the pace: bytes
//! are walked once, bodies skipped, nothing allocated. Op 9 is a container (its body is packets back
//! to back, goim's batched room push), so a batch's packets are counted like any other, and the
//! batch itself is counted once. A message body may start with a send time ([`stamp`]); its first
//! [`STAMP_LEN`] bytes are kept so the end-to-end latency can be measured.

use rim_proto::{HEADER_LEN, op};

/// Bytes of a body that carry its send time: `rimb` and 16 hex digits of nanoseconds since the
/// Unix epoch.
pub const STAMP_LEN: usize = 20;
/// What every stamped body starts with.
const STAMP_TAG: &[u8; 4] = b"rimb";

/// A message body of `len` bytes (at least [`STAMP_LEN`]) that says it was sent at `unix_nanos`.
pub fn stamped_body(unix_nanos: u64, len: usize) -> Vec<u8> {
    let mut body = format!("rimb{unix_nanos:016x}").into_bytes();
    body.resize(len.max(STAMP_LEN), b'x');
    body
}

/// The send time in a body's first bytes, if it carries one.
pub fn stamp(prefix: &[u8]) -> Option<u64> {
    let hex = prefix.strip_prefix(STAMP_TAG)?.get(..16)?;
    u64::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
}

/// Nanoseconds since the Unix epoch now (the clock every process on this machine shares).
pub fn unix_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// What one connection has seen since its counters were last taken.
#[derive(Debug, Default)]
pub struct Tally {
    /// Business packets (the counted operation).
    pub messages: u64,
    /// Op-9 containers.
    pub batches: u64,
    /// Op-3 heartbeat replies.
    pub heartbeat_replies: u64,
    /// An op-8 auth reply arrived.
    pub authed: bool,
    /// Packets whose length or body size was not what was expected.
    pub malformed: u64,
    /// Send times (Unix nanoseconds) of stamped messages.
    pub stamps: Vec<u64>,
}

/// Walks a stream of goim packets across reads.
#[derive(Debug)]
pub struct Packets {
    head: [u8; HEADER_LEN],
    have: usize,
    /// Body bytes still to skip.
    skip: usize,
    /// The counted operation.
    operation: i32,
    /// Expected body size of counted packets, when known.
    body: Option<usize>,
    /// The current counted body's first bytes, while they are being read.
    prefix: [u8; STAMP_LEN],
    prefix_have: usize,
    prefix_want: usize,
}

impl Packets {
    /// Counts packets of `operation`, expecting bodies of `body` bytes when given.
    pub fn new(operation: i32, body: Option<usize>) -> Self {
        Self {
            head: [0; HEADER_LEN],
            have: 0,
            skip: 0,
            operation,
            body,
            prefix: [0; STAMP_LEN],
            prefix_have: 0,
            prefix_want: 0,
        }
    }

    /// Consumes `data`, counting into `tally`.
    pub fn feed(&mut self, mut data: &[u8], tally: &mut Tally) {
        while !data.is_empty() {
            if self.prefix_want > 0 {
                let n = (self.prefix_want - self.prefix_have).min(data.len());
                self.prefix[self.prefix_have..self.prefix_have + n].copy_from_slice(&data[..n]);
                self.prefix_have += n;
                self.skip -= n;
                data = &data[n..];
                if self.prefix_have == self.prefix_want {
                    tally.stamps.extend(stamp(&self.prefix[..self.prefix_want]));
                    self.prefix_want = 0;
                }
                continue;
            }
            if self.skip > 0 {
                let n = self.skip.min(data.len());
                self.skip -= n;
                data = &data[n..];
                continue;
            }
            let n = (HEADER_LEN - self.have).min(data.len());
            self.head[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if self.have < HEADER_LEN {
                return;
            }
            self.have = 0;
            let len = i32::from_be_bytes([self.head[0], self.head[1], self.head[2], self.head[3]]);
            let code =
                i32::from_be_bytes([self.head[8], self.head[9], self.head[10], self.head[11]]);
            let Some(body) = usize::try_from(len)
                .ok()
                .and_then(|l| l.checked_sub(HEADER_LEN))
            else {
                tally.malformed += 1;
                continue;
            };
            match code {
                op::RAW => {
                    tally.batches += 1;
                    continue; // the inner packets follow
                }
                code if code == self.operation => {
                    tally.messages += 1;
                    tally.malformed += u64::from(self.body.is_some_and(|want| want != body));
                    self.prefix_want = body.min(STAMP_LEN);
                    self.prefix_have = 0;
                    if self.prefix_want < STAMP_LEN {
                        self.prefix_want = 0; // too short to carry a stamp
                    }
                }
                op::AUTH_REPLY => tally.authed = true,
                op::HEARTBEAT_REPLY => tally.heartbeat_replies += 1,
                _ => {}
            }
            self.skip = body;
        }
    }
}

/// Strips server-to-client WebSocket framing (unmasked), handing binary payloads to [`Packets`].
#[derive(Debug, Default)]
pub struct WsFrames {
    head: [u8; 10],
    have: usize,
    payload: usize,
    binary: bool,
    /// The server sent a close frame.
    pub closed: bool,
}

impl WsFrames {
    /// Consumes `data`, passing message payloads to `packets`.
    pub fn feed(&mut self, mut data: &[u8], packets: &mut Packets, tally: &mut Tally) {
        while !data.is_empty() {
            if self.payload > 0 {
                let n = self.payload.min(data.len());
                if self.binary {
                    packets.feed(&data[..n], tally);
                }
                self.payload -= n;
                data = &data[n..];
                continue;
            }
            if self.have < 2 {
                let n = (2 - self.have).min(data.len());
                self.head[self.have..self.have + n].copy_from_slice(&data[..n]);
                self.have += n;
                data = &data[n..];
                continue;
            }
            let extended = match self.head[1] & 0x7f {
                126 => 2,
                127 => 8,
                _ => 0,
            };
            let need = 2 + extended;
            let n = (need - self.have).min(data.len());
            self.head[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if self.have < need {
                continue;
            }
            let opcode = self.head[0] & 0x0f;
            self.payload = match self.head[1] & 0x7f {
                126 => usize::from(u16::from_be_bytes([self.head[2], self.head[3]])),
                127 => {
                    let mut len = [0u8; 8];
                    len.copy_from_slice(&self.head[2..10]);
                    usize::try_from(u64::from_be_bytes(len)).unwrap_or(usize::MAX)
                }
                short => usize::from(short),
            };
            self.have = 0;
            self.binary = matches!(opcode, 0 | 2);
            self.closed |= opcode == 8;
        }
    }
}

/// A masked client binary frame holding `payload` (clients must mask; the key is arbitrary).
pub fn ws_binary_frame(payload: &[u8]) -> Vec<u8> {
    const MASK: [u8; 4] = [0x5a, 0xa5, 0x3c, 0xc3];
    let mut frame = Vec::with_capacity(payload.len() + 14);
    frame.push(0x82);
    match payload.len() {
        len if len < 126 => frame.push(0x80 | len as u8),
        len if len <= usize::from(u16::MAX) => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&MASK);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    frame
}

#[cfg(test)]
mod tests {
    use super::*;
    use rim_proto::Packet;

    fn packet(code: i32, body: &[u8]) -> Vec<u8> {
        Packet::new(1, code, 0, body.to_vec()).to_bytes().to_vec()
    }

    /// Feeds `stream` in pieces of `step` bytes.
    fn count(stream: &[u8], step: usize, ws: bool) -> Tally {
        let mut packets = Packets::new(1000, Some(32));
        let mut frames = WsFrames::default();
        let mut tally = Tally::default();
        for piece in stream.chunks(step) {
            if ws {
                frames.feed(piece, &mut packets, &mut tally);
            } else {
                packets.feed(piece, &mut tally);
            }
        }
        tally
    }

    fn sample_stream() -> Vec<u8> {
        let message = stamped_body(0x1234_5678_9abc_def0, 32);
        let mut batch = Vec::new();
        for _ in 0..3 {
            batch.extend(packet(1000, &message));
        }
        let mut stream = packet(op::AUTH_REPLY, b"");
        stream.extend(packet(1000, &message));
        stream.extend(packet(op::RAW, &batch));
        stream.extend(packet(op::HEARTBEAT_REPLY, &[0, 0, 0, 1]));
        stream.extend(packet(1001, &message)); // another operation: not counted
        stream.extend(packet(1000, b"short")); // counted, malformed, no stamp
        stream
    }

    #[test]
    fn counts_messages_inside_and_outside_batches_across_any_split() {
        let stream = sample_stream();
        for step in [1, 3, 7, 16, 17, 100, stream.len()] {
            let tally = count(&stream, step, false);
            assert!(tally.authed);
            assert_eq!(tally.messages, 5, "step {step}");
            assert_eq!(tally.batches, 1);
            assert_eq!(tally.heartbeat_replies, 1);
            assert_eq!(tally.malformed, 1);
            assert_eq!(tally.stamps, vec![0x1234_5678_9abc_def0; 4], "step {step}");
        }
    }

    #[test]
    fn websocket_frames_are_unwrapped_whatever_their_length_encoding() {
        let stream = sample_stream();
        // Server frames are unmasked: build them by hand, one small and one 16-bit length.
        let (small, large) = stream.split_at(40);
        let mut ws = vec![0x82, small.len() as u8];
        ws.extend_from_slice(small);
        ws.extend([0x82, 126]);
        ws.extend((large.len() as u16).to_be_bytes());
        ws.extend_from_slice(large);
        for step in [1, 5, ws.len()] {
            let tally = count(&ws, step, true);
            assert_eq!(tally.messages, 5);
            assert_eq!(tally.stamps.len(), 4);
        }
    }

    #[test]
    fn stamps_round_trip_and_reject_other_bodies() {
        let body = stamped_body(42, 64);
        assert_eq!(body.len(), 64);
        assert_eq!(stamp(&body[..STAMP_LEN]), Some(42));
        assert_eq!(stamp(b"hello world, not a stamp"), None);
        assert_eq!(stamped_body(1, 0).len(), STAMP_LEN);
    }
}
