//! The op-7 auth body as goim clients send it.
//!
//! goim's body is JSON (`{"mid":..,"key":..,"room_id":..,"platform":..,"accepts":[..]}`). rim adds a
//! signed token, either as a `token` field of that JSON or as the whole body, so that existing goim
//! clients only need to put a token where they already send a body.
//!
//! rim's durable-delivery extension adds one more optional field, `rim`
//! ([`rim_proto::durable::RimAuth`]), read by [`rim_field`] from the body whatever verifier decides
//! the identity (insecure goim JSON, a JSON body with a `token`, the auth webhook), since it is not
//! about who the client is but how it wants to be served. A body that is not JSON (a bare token)
//! cannot carry it.

use rim_proto::durable::RimAuth;
use serde::Deserialize;

use super::{AuthError, Identity, RoomGrant};

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

/// The `rim` field of an auth body: `Ok(None)` when there is none (or `null`, or the body is not a
/// JSON object, such as a bare token), `Ok(Some)` when the connection opts in, and a
/// [`AuthError::Malformed`] naming the problem when the field is there but not understood (another
/// version, an unknown field, a position out of range): an auth that asks for something must not be
/// half-understood, so it is refused.
pub fn rim_field(body: &[u8]) -> Result<Option<RimAuth>, AuthError> {
    /// Only the `rim` field, kept unparsed so that its errors are told apart from the body's.
    #[derive(Deserialize)]
    struct Probe {
        #[serde(default)]
        rim: Option<serde_json::Value>,
    }
    let Ok(Probe { rim: Some(rim) }) = serde_json::from_slice::<Probe>(body) else {
        return Ok(None);
    };
    if rim.is_null() {
        return Ok(None);
    }
    RimAuth::deserialize(rim)
        .map(Some)
        .map_err(|error| AuthError::Malformed(format!("the rim field: {error}")))
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

#[cfg(test)]
mod tests {
    use rim_proto::durable::Position;

    use super::*;

    #[test]
    fn the_rim_field_is_read_from_any_json_body_and_refused_when_malformed() {
        assert_eq!(rim_field(br#"{"mid":1,"key":"k"}"#), Ok(None));
        assert_eq!(rim_field(b"a.b.c"), Ok(None), "a bare token has no field");
        assert_eq!(rim_field(br#"{"rim":null}"#), Ok(None));
        let both = br#"{"token":"a.b.c","rim":{"v":1,"user":{"epoch":0,"seq":41},"room":{"epoch":9,"seq":7}}}"#;
        assert_eq!(
            rim_field(both),
            Ok(Some(RimAuth {
                user: Some(Position { epoch: 0, seq: 41 }),
                room: Some(Position { epoch: 9, seq: 7 }),
            }))
        );
        for (field, says) in [
            (r#"{"v":2}"#, "version"),
            (
                r#"{"v":1,"user":{"epoch":0,"seq":9007199254740992}}"#,
                "2^53",
            ),
            (r#"{"v":1,"resume":{"epoch":0,"seq":1}}"#, "resume"),
            (r#"{"v":1,"user":{"epoch":0}}"#, "seq"),
            (r#""yes""#, "rim field"),
        ] {
            let body = format!(r#"{{"mid":1,"rim":{field}}}"#);
            let error = rim_field(body.as_bytes()).unwrap_err();
            assert!(
                matches!(&error, AuthError::Malformed(text) if text.contains(says)),
                "{field}: {error}"
            );
        }
    }
}
