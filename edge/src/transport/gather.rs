//! Writing queued frames straight from their shared buffers, with no per-connection copy.
//!
//! A push is encoded once and its `Bytes` shared by every recipient; what a connection adds is only
//! framing: nothing for TCP (which gets the inner packets, see PROTOCOL.md), a WebSocket frame header
//! and, when several pushes leave as one op-9 message, one outer goim header. Those few header bytes
//! are built on the stack and written with the frames' own buffers in one vectored write
//! (`writev`), so no connection ever holds a write buffer: a 64 KiB push costs a recipient nothing
//! once written, where a buffered writer (tungstenite's) keeps a copy's capacity for the connection's
//! life.
//!
//! The vectored write is resumable: [`write_frames`] keeps only the count of bytes written across
//! polls and rebuilds the slices past it on each poll ([`Gather`]), so the header bytes and slice
//! arrays live on the poll's stack, not in every connection's future, and a short write resumes at
//! the exact byte it stopped at.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;

use rim_proto::HEADER_LEN;
use tokio::io::AsyncWrite;

use crate::outbox::Frame;

/// Largest merged op-9 WebSocket message; a longer run of pushes is split into several messages.
pub const MAX_BATCH: usize = 256 * 1024;
/// Slices handed to one `writev` (Linux takes up to 1024; the arrays are rebuilt on every poll, so
/// they stay small: a queue of one frame, the usual case, needs one to three).
const MAX_SLICES: usize = 16;

/// How frames are laid out on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// A byte stream of packets: a push's inner packet(s) without the op-9 header, replies as they are.
    Stream,
    /// One goim packet per WebSocket binary message: consecutive pushes merge into one op-9 message.
    WebSocket,
}

/// A piece of the output: header bytes built here, or a slice of a frame's shared buffer.
#[derive(Clone, Copy)]
enum Piece<'a> {
    Head { bytes: [u8; HEADER_LEN], len: u8 },
    Data(&'a [u8]),
}

impl Piece<'_> {
    fn head(bytes: &[u8]) -> Self {
        let mut head = [0; HEADER_LEN];
        head[..bytes.len()].copy_from_slice(bytes);
        Piece::Head {
            bytes: head,
            len: bytes.len() as u8,
        }
    }
}

/// Calls `emit` with each piece of `frames` laid out by `framing`, in order, until it returns false.
fn pieces<'a>(frames: &'a [Frame], framing: Framing, mut emit: impl FnMut(Piece<'a>) -> bool) {
    let mut rest = frames;
    while let Some((first, after)) = rest.split_first() {
        match (framing, first) {
            (Framing::Stream, Frame::Push(push)) => {
                rest = after;
                if !emit(Piece::Data(inner(push))) {
                    return;
                }
            }
            (Framing::Stream, Frame::Packet(packet)) => {
                rest = after;
                if !emit(Piece::Data(packet)) {
                    return;
                }
            }
            (Framing::WebSocket, Frame::Packet(packet)) => {
                rest = after;
                if !(emit(ws_head(packet.len())) && emit(Piece::Data(packet))) {
                    return;
                }
            }
            (Framing::WebSocket, Frame::Push(push)) => {
                // The run of pushes that fits one message (at least this one).
                let mut inner_len = inner(push).len();
                let mut run = 1;
                while let Some(Frame::Push(next)) = rest.get(run) {
                    let next_len = inner(next).len();
                    if HEADER_LEN + inner_len + next_len > MAX_BATCH {
                        break;
                    }
                    inner_len += next_len;
                    run += 1;
                }
                let (batch, after) = rest.split_at(run);
                rest = after;
                if run == 1 {
                    // Already a complete op-9 message (a batch of one, or one merged by the fan-out).
                    if !(emit(ws_head(push.len())) && emit(Piece::Data(push))) {
                        return;
                    }
                    continue;
                }
                let outer = rim_proto::batch::header(inner_len);
                if !(emit(ws_head(HEADER_LEN + inner_len)) && emit(Piece::head(&outer))) {
                    return;
                }
                for frame in batch {
                    let (Frame::Push(push) | Frame::Packet(push)) = frame;
                    if !emit(Piece::Data(inner(push))) {
                        return;
                    }
                }
            }
        }
    }
}

/// The inner packets of an op-9 push frame.
fn inner(push: &[u8]) -> &[u8] {
    push.get(HEADER_LEN..).unwrap_or_default()
}

/// The header of an unmasked, final, binary WebSocket frame of `len` payload bytes (RFC 6455 5.2).
fn ws_head(len: usize) -> Piece<'static> {
    super::wsframe::header(super::wsframe::OP_BINARY, len, Piece::head)
}

/// Up to [`MAX_SLICES`] pieces of the output past its first `skip` bytes.
struct Gather<'a> {
    pieces: [Piece<'a>; MAX_SLICES],
    count: usize,
    /// Bytes left to skip of the first piece kept (it was partly written).
    cut: usize,
}

impl<'a> Gather<'a> {
    fn new(frames: &'a [Frame], framing: Framing, mut skip: usize) -> Self {
        let mut gather = Gather {
            pieces: [Piece::Data(&[]); MAX_SLICES],
            count: 0,
            cut: 0,
        };
        pieces(frames, framing, |piece| {
            let len = match piece {
                Piece::Head { len, .. } => usize::from(len),
                Piece::Data(data) => data.len(),
            };
            if gather.count == 0 && skip >= len {
                skip -= len;
                return true;
            }
            if gather.count == 0 {
                gather.cut = skip;
            }
            gather.pieces[gather.count] = piece;
            gather.count += 1;
            gather.count < MAX_SLICES
        });
        gather
    }

    /// Writes the gathered slices once; `None` when there is nothing left to write.
    fn poll_write<W: AsyncWrite + Unpin>(
        &self,
        io: &mut W,
        cx: &mut std::task::Context<'_>,
    ) -> Option<std::task::Poll<io::Result<usize>>> {
        if self.count == 0 {
            return None;
        }
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        for (slice, piece) in slices.iter_mut().zip(&self.pieces[..self.count]) {
            *slice = IoSlice::new(match piece {
                Piece::Head { bytes, len } => &bytes[..usize::from(*len)],
                Piece::Data(data) => data,
            });
        }
        let first = match &self.pieces[0] {
            Piece::Head { bytes, len } => &bytes[self.cut..usize::from(*len)],
            Piece::Data(data) => &data[self.cut..],
        };
        slices[0] = IoSlice::new(first);
        Some(Pin::new(io).poll_write_vectored(cx, &slices[..self.count]))
    }
}

/// Writes `frames` laid out by `framing` to `io`, resuming where a short write stopped. Not
/// cancel-safe: a cancelled write may leave a frame half written (the connection is then closed).
///
/// A plain function returning the polling future (not an `async fn`, which would keep its
/// arguments twice): the future holds only its arguments and the count of bytes written.
pub fn write_frames<'a, W: AsyncWrite + Unpin>(
    io: &'a mut W,
    frames: &'a [Frame],
    framing: Framing,
) -> impl Future<Output = io::Result<()>> + 'a {
    let mut written = 0;
    std::future::poll_fn(move |cx| {
        loop {
            let gather = Gather::new(frames, framing, written);
            match gather.poll_write(io, cx) {
                None => return std::task::Poll::Ready(Ok(())),
                Some(std::task::Poll::Pending) => return std::task::Poll::Pending,
                Some(std::task::Poll::Ready(Err(error))) => {
                    return std::task::Poll::Ready(Err(error));
                }
                Some(std::task::Poll::Ready(Ok(0))) => {
                    return std::task::Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                Some(std::task::Poll::Ready(Ok(n))) => written += n,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use rim_proto::message::Packets;
    use rim_proto::{Packet, op};

    use super::{Framing, MAX_BATCH, write_frames};
    use crate::outbox::Frame;

    fn push(op_code: i32, body: &[u8]) -> Frame {
        Frame::Push(rim_proto::batch::encode_push(op_code, body))
    }

    /// A writer that takes at most `step` bytes per call, to exercise resuming mid-piece.
    struct Trickle {
        out: Vec<u8>,
        step: usize,
    }

    impl tokio::io::AsyncWrite for Trickle {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            let n = buf.len().min(self.step);
            self.out.extend_from_slice(&buf[..n]);
            std::task::Poll::Ready(Ok(n))
        }

        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    async fn written(frames: &[Frame], framing: Framing, step: usize) -> Vec<u8> {
        let mut io = Trickle {
            out: Vec::new(),
            step,
        };
        write_frames(&mut io, frames, framing).await.unwrap();
        io.out
    }

    /// Splits WebSocket output into (opcode, payload) frames, checking the server's framing.
    fn ws_messages(mut out: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut messages = Vec::new();
        while !out.is_empty() {
            assert_eq!(out[0] & 0xf0, 0x80, "final frame, no RSV bits");
            let (len, head) = match out[1] {
                126 => (usize::from(u16::from_be_bytes([out[2], out[3]])), 4),
                127 => (
                    usize::try_from(u64::from_be_bytes(out[2..10].try_into().unwrap())).unwrap(),
                    10,
                ),
                len => {
                    assert!(len < 126, "server frames are unmasked");
                    (usize::from(len), 2)
                }
            };
            messages.push((out[0] & 0x0f, out[head..head + len].to_vec()));
            out = &out[head + len..];
        }
        messages
    }

    #[tokio::test]
    async fn stream_gets_inner_packets_and_replies_in_order() {
        let reply = Packet::new(1, op::HEARTBEAT_REPLY, 3, vec![0, 0, 0, 1]).to_bytes();
        let frames = [
            push(1000, b"a"),
            Frame::Packet(reply.clone()),
            push(1001, b"bb"),
        ];
        let mut expected = Packet::new(1, 1000, 0, &b"a"[..]).to_bytes().to_vec();
        expected.extend_from_slice(&reply);
        expected.extend_from_slice(&Packet::new(1, 1001, 0, &b"bb"[..]).to_bytes());
        for step in [1, 7, usize::MAX] {
            assert_eq!(written(&frames, Framing::Stream, step).await, expected);
        }
    }

    #[tokio::test]
    async fn websocket_merges_consecutive_pushes_into_one_op9_message() {
        let reply = Packet::new(1, op::HEARTBEAT_REPLY, 3, vec![0, 0, 0, 1]).to_bytes();
        let big = vec![b'x'; 70_000];
        let frames = [
            push(1000, b"a"),
            push(1001, b"bb"),
            Frame::Packet(reply.clone()),
            push(1002, &big),
        ];
        for step in [1, 5, 4096, usize::MAX] {
            let out = written(&frames, Framing::WebSocket, step).await;
            let messages = ws_messages(&out);
            assert_eq!(messages.len(), 3);
            assert!(messages.iter().all(|(opcode, _)| *opcode == 2), "binary");
            let batch =
                rim_proto::message::decode(Bytes::from(messages[0].1.clone()), usize::MAX).unwrap();
            assert_eq!((batch.op, batch.ver, batch.seq), (op::RAW, 1, 0));
            let inner: Vec<_> = Packets::new(batch.body, usize::MAX)
                .map(|p| p.unwrap())
                .map(|p| (p.op, p.body))
                .collect();
            assert_eq!(
                inner,
                [
                    (1000, Bytes::from_static(b"a")),
                    (1001, Bytes::from_static(b"bb"))
                ]
            );
            assert_eq!(messages[1].1, reply);
            let Frame::Push(last) = &frames[3] else {
                unreachable!()
            };
            assert_eq!(messages[2].1, last[..], "a lone push is sent as encoded");
        }
    }

    #[tokio::test]
    async fn websocket_splits_runs_longer_than_a_batch() {
        let body = vec![b'y'; MAX_BATCH / 3];
        let frames: Vec<Frame> = (0..7).map(|i| push(1000 + i, &body)).collect();
        let out = written(&frames, Framing::WebSocket, usize::MAX).await;
        let mut ops = Vec::new();
        for (_, payload) in ws_messages(&out) {
            assert!(payload.len() <= MAX_BATCH);
            let batch = rim_proto::message::decode(Bytes::from(payload), usize::MAX).unwrap();
            assert_eq!(batch.op, op::RAW);
            ops.extend(Packets::new(batch.body, usize::MAX).map(|p| p.unwrap().op));
        }
        assert_eq!(
            ops,
            (1000..1007).collect::<Vec<_>>(),
            "every push, in order"
        );
    }
}
