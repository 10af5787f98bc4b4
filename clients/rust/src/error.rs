//! Why a connection could not be opened or ended.

/// A connection's failure, as the client sees it.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket failed (connect refused, reset, ...).
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    /// The server sent bytes that are not a valid goim packet.
    #[error("bad packet from the server: {0}")]
    Decode(#[from] rim_proto::DecodeError),
    /// The server closed the connection.
    #[error("closed by the server")]
    Closed,
    /// The server refused the auth request; its reason (the op-8 body) is kept.
    #[error("auth refused: {0}")]
    AuthRefused(String),
    /// HTTPDNS could not say where to connect.
    #[error("httpdns: {0}")]
    Httpdns(String),
    /// The server did not answer in time (auth reply or heartbeat replies).
    #[error("timed out: {0}")]
    Timeout(&'static str),
}
