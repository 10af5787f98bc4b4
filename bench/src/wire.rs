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

/// What a [`PacketWalk`] does with the body of the packet whose header it has just read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyPlan {
    /// Walk into it: its bytes are packets (op 9, goim's batched push).
    Enter,
    /// Skip it whole.
    Skip,
    /// Capture its first bytes (at most the walk's capacity and the body's size), skip the rest.
    Capture(usize),
}

/// What a reader of a packet stream looks at, called back by [`PacketWalk::feed`].
pub trait PacketVisitor {
    /// A packet header was read: `body` is its body size, or `None` when its length field is
    /// shorter than a header (the walk then goes on with the next bytes as a header).
    fn header(&mut self, code: i32, body: Option<usize>, tally: &mut Tally) -> BodyPlan;

    /// The first bytes of the current packet's body, as many as [`PacketVisitor::header`] asked.
    fn captured(&mut self, code: i32, body: usize, prefix: &[u8], tally: &mut Tally);
}

/// Walks a stream of goim packets across reads: headers are read, bodies skipped unless the
/// visitor asks for their first bytes (up to `CAPTURE` of them), nothing is allocated.
#[derive(Debug)]
pub struct PacketWalk<const CAPTURE: usize> {
    head: [u8; HEADER_LEN],
    have: usize,
    /// The captured start of the current body.
    capture: [u8; CAPTURE],
    captured: usize,
    /// Bytes of the current body still to capture (0: none), then to skip.
    want: usize,
    skip: usize,
    /// The op and body size of the packet being captured.
    code: i32,
    body: usize,
}

impl<const CAPTURE: usize> Default for PacketWalk<CAPTURE> {
    fn default() -> Self {
        Self {
            head: [0; HEADER_LEN],
            have: 0,
            capture: [0; CAPTURE],
            captured: 0,
            want: 0,
            skip: 0,
            code: 0,
            body: 0,
        }
    }
}

impl<const CAPTURE: usize> PacketWalk<CAPTURE> {
    /// Consumes `data`, telling `visitor` of every header and captured body start.
    pub fn feed<V: PacketVisitor>(&mut self, mut data: &[u8], visitor: &mut V, tally: &mut Tally) {
        while !data.is_empty() {
            if self.want > 0 {
                let n = (self.want - self.captured).min(data.len());
                self.capture[self.captured..self.captured + n].copy_from_slice(&data[..n]);
                self.captured += n;
                data = &data[n..];
                if self.captured == self.want {
                    self.want = 0;
                    let prefix = &self.capture[..self.captured];
                    visitor.captured(self.code, self.body, prefix, tally);
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
            let body = usize::try_from(len)
                .ok()
                .and_then(|l| l.checked_sub(HEADER_LEN));
            let plan = visitor.header(code, body, tally);
            let Some(body) = body else { continue };
            let capture = match plan {
                BodyPlan::Enter => continue,
                BodyPlan::Skip => 0,
                BodyPlan::Capture(n) => n.min(CAPTURE).min(body),
            };
            (self.code, self.body) = (code, body);
            (self.want, self.captured, self.skip) = (capture, 0, body - capture);
        }
    }
}

/// Counts the packets of one operation in a goim stream, with their send times (see the module
/// docs).
#[derive(Debug)]
pub struct Packets {
    walk: PacketWalk<STAMP_LEN>,
    counter: Counter,
}

/// What [`Packets`] counts: the operation and the expected body size.
#[derive(Debug)]
struct Counter {
    operation: i32,
    body: Option<usize>,
}

impl Packets {
    /// Counts packets of `operation`, expecting bodies of `body` bytes when given.
    pub fn new(operation: i32, body: Option<usize>) -> Self {
        Self {
            walk: PacketWalk::default(),
            counter: Counter { operation, body },
        }
    }

    /// Consumes `data`, counting into `tally`.
    pub fn feed(&mut self, data: &[u8], tally: &mut Tally) {
        self.walk.feed(data, &mut self.counter, tally);
    }
}

impl PacketVisitor for Counter {
    fn header(&mut self, code: i32, body: Option<usize>, tally: &mut Tally) -> BodyPlan {
        let Some(body) = body else {
            tally.malformed += 1;
            return BodyPlan::Skip;
        };
        match code {
            op::RAW => {
                tally.batches += 1;
                return BodyPlan::Enter;
            }
            code if code == self.operation => {
                tally.messages += 1;
                tally.malformed += u64::from(self.body.is_some_and(|want| want != body));
                if body >= STAMP_LEN {
                    return BodyPlan::Capture(STAMP_LEN);
                } // shorter bodies are too short to carry a stamp
            }
            op::AUTH_REPLY => tally.authed = true,
            op::HEARTBEAT_REPLY => tally.heartbeat_replies += 1,
            _ => {}
        }
        BodyPlan::Skip
    }

    fn captured(&mut self, _code: i32, _body: usize, prefix: &[u8], tally: &mut Tally) {
        tally.stamps.extend(stamp(prefix));
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
