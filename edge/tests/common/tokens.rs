//! Test JWTs: an HS256 shared secret and the RS256 key pair in `tests/fixtures`.

use std::path::{Path, PathBuf};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

pub const ISSUER: &str = "rim-test";
pub const HS_SECRET: &str = "hs256-test-secret-with-enough-entropy";
const RS_PRIVATE: &str = include_str!("../fixtures/jwt-rs256-private.pem");
const RS_PUBLIC: &str = include_str!("../fixtures/jwt-rs256-public.pem");

/// Writes the verification keys into `dir`; returns their paths (HS256 secret first).
pub fn write_key_files(dir: &Path) -> Vec<PathBuf> {
    let hs = dir.join("hs256.key");
    let rs = dir.join("rs256.pub.pem");
    std::fs::write(&hs, HS_SECRET).unwrap();
    std::fs::write(&rs, RS_PUBLIC).unwrap();
    vec![hs, rs]
}

fn now() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

/// Claims for `key` in `room` accepting `accepts`, expiring `ttl` seconds from now (negative: past);
/// the connection may change to any `live://` room.
pub fn claims(key: &str, room: &str, accepts: &[i32], ttl: i64) -> serde_json::Value {
    json!({"mid": 42, "key": key, "room_id": room, "rooms": ["live://*"], "accepts": accepts,
        "exp": now() + ttl, "iss": ISSUER})
}

/// Signs claims with HS256 and `secret`.
pub fn hs256_with(secret: &str, claims: &serde_json::Value) -> String {
    let key = EncodingKey::from_secret(secret.as_bytes());
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &key).unwrap()
}

/// Signs claims with the test HS256 secret.
pub fn hs256(claims: &serde_json::Value) -> String {
    hs256_with(HS_SECRET, claims)
}

/// Signs claims with the test RS256 private key.
pub fn rs256(claims: &serde_json::Value) -> String {
    let key = EncodingKey::from_rsa_pem(RS_PRIVATE.as_bytes()).unwrap();
    jsonwebtoken::encode(&Header::new(Algorithm::RS256), claims, &key).unwrap()
}

/// A goim JSON auth body carrying `token`.
pub fn token_body(token: &str) -> Vec<u8> {
    json!({"platform": "web", "token": token})
        .to_string()
        .into_bytes()
}

/// A valid auth body (HS256 token in goim JSON) for `key`.
pub fn body_for(key: &str, room: &str, accepts: &[i32]) -> Vec<u8> {
    token_body(&hs256(&claims(key, room, accepts, 3600)))
}

/// goim's unsigned JSON auth body (trusted only in insecure mode).
pub fn goim_body(mid: i64, key: &str, room: &str, accepts: &[i32]) -> Vec<u8> {
    json!({"mid": mid, "key": key, "room_id": room, "platform": "web", "accepts": accepts})
        .to_string()
        .into_bytes()
}
