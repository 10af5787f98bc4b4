//! The client asking "which edges should I connect to?", as far as the control plane could tell from its request.

use crate::location::GeoPoint;

/// What kind of client asks; decides whether the answer lists host names or addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Platform {
    /// A browser: it needs host names (TLS certificates, mixed-content rules).
    Web,
    /// Anything else (mobile, desktop, server SDKs): it can dial addresses directly.
    Native,
}

impl Platform {
    /// Reads goim's optional `platform` query parameter: `web` (any case) means [`Platform::Web`], anything else,
    /// including no parameter, means [`Platform::Native`], as in goim.
    pub fn from_query(platform: Option<&str>) -> Self {
        match platform {
            Some(p) if p.eq_ignore_ascii_case("web") => Platform::Web,
            _ => Platform::Native,
        }
    }
}

/// Everything the ranking knows about the client; all of it is optional knowledge except the platform.
#[derive(Clone, Debug, PartialEq)]
pub struct Client {
    /// Client position (see [`crate::locate`] for where it may come from), if known.
    pub location: Option<GeoPoint>,
    /// Region the client believes it is in, if known; nodes of that region are preferred among equally near ones.
    pub region: Option<String>,
    /// Host names or addresses in the answer.
    pub platform: Platform,
    /// The request's seed: the control plane draws a fresh random one per request, so simultaneous clients spread
    /// over equally near nodes in proportion to their free capacity (see the `spread` module); the answer is a pure
    /// function of snapshot and seed, so a seed replays an answer exactly. `None` gives the deterministic order
    /// (emptiest node first), for explanations and tests; it is the stampede order, not for serving clients.
    pub seed: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_web_means_web() {
        assert_eq!(Platform::from_query(Some("web")), Platform::Web);
        assert_eq!(Platform::from_query(Some("WEB")), Platform::Web);
        assert_eq!(Platform::from_query(Some("android")), Platform::Native);
        assert_eq!(Platform::from_query(Some("")), Platform::Native);
        assert_eq!(Platform::from_query(None), Platform::Native);
    }
}
