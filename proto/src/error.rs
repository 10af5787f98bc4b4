//! Why a byte sequence is not a valid goim packet.
//!
//! Every decoder returns one of these instead of panicking or guessing, so that the edge can close the one
//! offending connection with a reason a human can read.

/// A decoding failure; the connection that sent it is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The packet length field is below the 16-byte header (negative values included).
    #[error("packet length {0} is smaller than the 16-byte header")]
    PacketTooShort(i32),
    /// The header length field is not 16.
    #[error("header length {0} is not 16")]
    BadHeaderLength(i16),
    /// The body is larger than the configured limit.
    #[error("body of {len} bytes exceeds the limit of {max}")]
    BodyTooLarge {
        /// Body length the header claims.
        len: usize,
        /// Configured maximum.
        max: usize,
    },
    /// A message-framed packet (WebSocket, batch) claims a length different from the bytes present.
    #[error("packet claims {claimed} bytes but {present} are present")]
    LengthMismatch {
        /// Packet length from the header.
        claimed: usize,
        /// Bytes actually available.
        present: usize,
    },
    /// Fewer than 16 bytes are present where a header must be.
    #[error("{0} bytes are too few for a 16-byte header")]
    Truncated(usize),
}
