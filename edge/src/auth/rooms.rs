//! Which rooms a connection may change to (op 12), as its credentials say.
//!
//! goim let any client move to any room: the room in its auth body was only a starting point. rim
//! asks the identity. A signed token (or the auth webhook's answer) lists rooms or room patterns in
//! `rooms`, for example `["live://1000", "live://*"]`:
//!
//! - an entry without `*` is one room, exactly;
//! - an entry ending in `*` is every room starting with what comes before it (`live://*` is every
//!   live room, `*` every room); a `*` elsewhere has no special meaning.
//!
//! The identity's own room (`room_id`) is always allowed, and so is leaving the room (an empty op-12
//! body). A token without `rooms` therefore keeps its connection in the room it names. The insecure
//! development verifier trusts the client for everything, rooms included ([`RoomGrant::Any`]).

/// The rooms an identity may enter besides its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomGrant {
    /// Every room (insecure development mode: the client is trusted anyway).
    Any,
    /// Only these rooms and patterns (see the module docs); empty: only the identity's own room.
    Listed(Box<[Box<str>]>),
}

impl Default for RoomGrant {
    /// No room besides the identity's own.
    fn default() -> Self {
        Self::Listed(Box::default())
    }
}

impl RoomGrant {
    /// The grant of a `rooms` claim (empty entries ignored).
    pub fn patterns(patterns: Vec<String>) -> Self {
        Self::Listed(
            patterns
                .into_iter()
                .filter(|p| !p.is_empty())
                .map(String::into_boxed_str)
                .collect(),
        )
    }

    /// True if `room` (not empty) is covered by the grant.
    pub fn allows(&self, room: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Listed(patterns) => {
                patterns
                    .iter()
                    .any(|pattern| match pattern.strip_suffix('*') {
                        Some(prefix) => room.starts_with(prefix),
                        None => **pattern == *room,
                    })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RoomGrant;

    #[test]
    fn exact_rooms_and_prefix_patterns() {
        let grant = RoomGrant::patterns(vec!["live://1000".into(), "chat://team-*".into()]);
        assert!(grant.allows("live://1000"));
        assert!(!grant.allows("live://10000"));
        assert!(!grant.allows("live://100"));
        assert!(grant.allows("chat://team-a"));
        assert!(grant.allows("chat://team-"));
        assert!(!grant.allows("chat://other"));
        assert!(RoomGrant::patterns(vec!["*".into()]).allows("any://thing"));
        assert!(!RoomGrant::patterns(vec!["live://*1".into()]).allows("live://x"));
        assert!(!RoomGrant::default().allows("live://1"));
        assert!(!RoomGrant::patterns(vec![String::new()]).allows("live://1"));
        assert!(RoomGrant::Any.allows("live://1"));
    }
}
