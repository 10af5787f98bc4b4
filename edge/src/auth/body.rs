//! The op-7 auth body as goim clients send it.
//!
//! goim's body is JSON (`{"mid":..,"key":..,"room_id":..,"platform":..,"accepts":[..]}`). rim adds a
//! signed token, either as a `token` field of that JSON or as the whole body, so that existing goim
//! clients only need to put a token where they already send a body.

use serde::Deserialize;

use super::{Identity, RoomGrant};

/// goim's auth JSON, plus the optional `token`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct GoimAuthBody {
    /// Claimed user id.
    pub mid: i64,
    /// Claimed connection key.
    pub key: String,
    /// Claimed room.
    pub room_id: String,
    /// Platform.
    pub platform: String,
    /// Initial watch set.
    pub accepts: Vec<i32>,
    /// A signed token proving the identity (rim extension).
    pub token: Option<String>,
}

impl GoimAuthBody {
    /// Parses the body as goim JSON.
    pub fn parse(body: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(body)
    }

    /// The identity the body claims (trusted only by the insecure verifier), free to enter any room
    /// as with goim.
    pub fn claimed_identity(self) -> Identity {
        Identity {
            mid: self.mid,
            key: self.key,
            room: self.room_id,
            platform: self.platform,
            accepts: self.accepts,
            rooms: RoomGrant::Any,
        }
    }
}

/// Finds the token in an auth body: the `token` field of goim JSON, or the whole body when it has the
/// shape of a compact JWT (three dot-separated base64url parts). Returns the JSON too when there was one.
pub fn find_token(body: &[u8]) -> (Option<String>, Option<GoimAuthBody>) {
    if let Ok(json) = GoimAuthBody::parse(body) {
        return (json.token.clone(), Some(json));
    }
    let Ok(text) = std::str::from_utf8(body) else {
        return (None, None);
    };
    let text = text.trim();
    let parts: Vec<&str> = text.split('.').collect();
    let base64url = |part: &&str| {
        !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'=')
    };
    if parts.len() == 3 && parts.iter().all(base64url) {
        (Some(text.to_owned()), None)
    } else {
        (None, None)
    }
}
