//! Why a connection could not be opened or ended, and why a room change was refused.

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
    /// The server refused a room change (op 13 carried an error instead of the room). Unlike the
    /// other variants this does not end the connection: it stays open, in its old room.
    #[error(transparent)]
    RoomRefused(#[from] RoomRefused),
    /// HTTPDNS could not say where to connect.
    #[error("httpdns: {0}")]
    Httpdns(String),
    /// The server did not answer in time (auth reply or heartbeat replies).
    #[error("timed out: {0}")]
    Timeout(&'static str),
    /// A durable session cannot add its `rim` field to this auth body (it is neither a JSON
    /// object nor a token).
    #[error("auth body: {0}")]
    AuthBody(String),
    /// The server sent a malformed body of rim's durable-delivery extension (op 20 or 21).
    #[error("bad durable-delivery packet from the server: {0}")]
    Extension(#[from] rim_proto::durable::DurableError),
}

/// A room change the server refused. rim answers a refused op 12 with an op-13 JSON body
/// `{"error": ..., "reason": ..., "room": ...}` instead of echoing the room, and leaves the
/// connection where it was; this is that answer, parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("room change to {room:?} refused ({}): {message}", reason.label())]
pub struct RoomRefused {
    /// The room that was asked for.
    pub room: String,
    /// Why, as a stable code.
    pub reason: RoomRefusalReason,
    /// The server's explanation (its `error` field, or the whole body if it is not rim's JSON).
    pub message: String,
}

/// Why a room change was refused: the edge's `reason` codes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoomRefusalReason {
    /// `room_forbidden`: the connection's token does not grant the room.
    Forbidden,
    /// `room_too_long`: the room id is longer than [`rim_proto::limits::MAX_ROOM_LEN`] bytes.
    TooLong,
    /// A reason this client does not know (a newer server), kept as sent (empty if none).
    Other(String),
}

impl RoomRefusalReason {
    /// The reason as it appears on the wire.
    pub fn label(&self) -> &str {
        match self {
            Self::Forbidden => "room_forbidden",
            Self::TooLong => "room_too_long",
            Self::Other(label) => label,
        }
    }
}

impl RoomRefused {
    /// Reads the op-13 `body` the server sent instead of echoing `room`.
    pub fn parse(room: &str, body: &[u8]) -> RoomRefused {
        let json = serde_json::from_slice::<serde_json::Value>(body).ok();
        let field = |name: &str| {
            json.as_ref()
                .and_then(|json| json.get(name))
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
        };
        let reason = match field("reason").as_deref() {
            Some("room_forbidden") => RoomRefusalReason::Forbidden,
            Some("room_too_long") => RoomRefusalReason::TooLong,
            other => RoomRefusalReason::Other(other.unwrap_or_default().to_owned()),
        };
        RoomRefused {
            room: room.to_owned(),
            reason,
            message: field("error").unwrap_or_else(|| String::from_utf8_lossy(body).into_owned()),
        }
    }
}
