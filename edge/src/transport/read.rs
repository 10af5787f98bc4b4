//! Reading client bytes without a read buffer while the connection waits.
//!
//! Most of a connection's life is spent waiting for its next packet (a heartbeat every half
//! minute). A buffer reserved before that wait would be kept by every idle connection, so
//! [`read_more`] reserves nothing while no partial packet is held: it reads into a buffer on the
//! stack of the poll that finds bytes, and copies out only what arrived. Once part of a packet or
//! frame is held, its announced remainder is read straight into the owned buffer (no copy for a
//! large body).

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::BytesMut;
use tokio::io::{AsyncRead, ReadBuf};

/// Largest read into the stack buffer: more than any heartbeat or small upstream message, so one
/// read usually takes what the client sent.
const SCRATCH: usize = 1024;

/// Reads more bytes into `buf`, at least `want` of room when it already holds some; returns how many
/// were read (0: end of stream). Cancel-safe: bytes read are in `buf` before the poll returns.
pub async fn read_more<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut BytesMut,
    want: usize,
) -> io::Result<usize> {
    std::future::poll_fn(|cx| poll_read_more(Pin::new(&mut *io), cx, buf, want)).await
}

fn poll_read_more<S: AsyncRead>(
    io: Pin<&mut S>,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
    want: usize,
) -> Poll<io::Result<usize>> {
    if !buf.is_empty() {
        buf.reserve(want);
        let spare = buf.spare_capacity_mut();
        let mut read = ReadBuf::uninit(spare);
        ready!(io.poll_read(cx, &mut read))?;
        let n = read.filled().len();
        // SAFETY: `poll_read` initialized the first `n` bytes of the spare capacity.
        unsafe { buf.set_len(buf.len() + n) };
        return Poll::Ready(Ok(n));
    }
    let mut scratch = [MaybeUninit::<u8>::uninit(); SCRATCH];
    let mut read = ReadBuf::uninit(&mut scratch);
    ready!(io.poll_read(cx, &mut read))?;
    buf.extend_from_slice(read.filled());
    Poll::Ready(Ok(read.filled().len()))
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use tokio::io::AsyncWriteExt;

    use super::read_more;

    #[tokio::test]
    async fn an_empty_buffer_stays_unallocated_until_bytes_arrive() {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        let mut buf = BytesMut::new();
        let pending = tokio::time::timeout(
            std::time::Duration::from_millis(20),
            read_more(&mut server, &mut buf, 100),
        )
        .await;
        assert!(pending.is_err(), "nothing to read yet");
        assert_eq!(buf.capacity(), 0, "waiting reserved nothing");

        client.write_all(b"hello").await.unwrap();
        assert_eq!(read_more(&mut server, &mut buf, 100).await.unwrap(), 5);
        assert_eq!(&buf[..], b"hello");

        let body = vec![7u8; 5000];
        client.write_all(&body).await.unwrap();
        let mut total = 0;
        while total < body.len() {
            total += read_more(&mut server, &mut buf, body.len() - total)
                .await
                .unwrap();
        }
        assert_eq!(
            buf.len(),
            5 + body.len(),
            "a held partial reads straight on"
        );
        assert_eq!(&buf[5..], &body[..]);

        drop(client);
        let mut rest = BytesMut::new();
        assert_eq!(read_more(&mut server, &mut rest, 1).await.unwrap(), 0);
    }
}
