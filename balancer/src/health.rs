//! Health: which candidates may be handed to a client at all.
//!
//! This is a yes/no gate, separate from selection's "how good is it": a node that fails here is never returned,
//! however near or idle it is. The gate is a pure function of the candidate, the current time and the staleness
//! bound, so it can also explain to an operator why a node is missing from answers, and, through [`NoEligibleNode`],
//! to a client why its answer is empty.

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::ser::SerializeStruct as _;
use serde::{Deserialize, Serialize, Serializer};

use crate::client::Platform;
use crate::discovery::{NodeCandidate, NodeState};

/// Why a node is excluded from answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Ineligible {
    /// An operator is emptying the node.
    #[error("node is draining")]
    Draining,
    /// The node is gone.
    #[error("node is dead")]
    Dead,
    /// The operator gave the node no weight: it takes no new clients.
    #[error("node has weight 0")]
    NoWeight,
    /// The node's last report is further from now than the staleness bound allows (in either direction:
    /// a report from the future beyond the bound means a broken clock, which is no better than silence).
    #[error("last report is {skew:?} away from now, more than the staleness bound")]
    Stale {
        /// Distance between the last report and now.
        skew: Duration,
    },
}

/// Decides whether `node` may be answered at time `now` when reports older than `max_staleness` are not trusted.
pub fn check(
    node: &NodeCandidate,
    now: SystemTime,
    max_staleness: Duration,
) -> Result<(), Ineligible> {
    match node.state {
        NodeState::Active => {}
        NodeState::Draining => return Err(Ineligible::Draining),
        NodeState::Dead => return Err(Ineligible::Dead),
    }
    if node.weight == 0 {
        return Err(Ineligible::NoWeight);
    }
    let skew = match now.duration_since(node.last_seen) {
        Ok(age) => age,
        Err(ahead) => ahead.duration(),
    };
    if skew > max_staleness {
        return Err(Ineligible::Stale { skew });
    }
    Ok(())
}

/// Why an answer lists no node: how many known nodes were excluded for each cause. An empty answer carries this
/// instead of a made-up host, so a client (or the person debugging it) sees "all drained" or "none known".
///
/// Serialized with the counts and a human-readable `message`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct NoEligibleNode {
    /// Nodes in the snapshot.
    pub known: usize,
    /// Nodes being drained.
    pub draining: usize,
    /// Nodes declared dead.
    pub dead: usize,
    /// Nodes with weight 0.
    pub weightless: usize,
    /// Nodes whose last report is too old (or too far in the future).
    pub stale: usize,
    /// Healthy nodes with nothing this client's platform can dial (no host or address, or no port it can use).
    pub undialable: usize,
}

impl NoEligibleNode {
    /// Counts why each of `candidates` cannot be answered to a `platform` client at `now`; only meaningful when
    /// none can (the answer builder calls it for empty answers only, so answers with nodes pay nothing).
    pub fn tally(
        candidates: &[NodeCandidate],
        platform: Platform,
        now: SystemTime,
        max_staleness: Duration,
    ) -> Self {
        let mut why = Self {
            known: candidates.len(),
            ..Self::default()
        };
        for node in candidates {
            let count = match check(node, now, max_staleness) {
                Err(Ineligible::Draining) => &mut why.draining,
                Err(Ineligible::Dead) => &mut why.dead,
                Err(Ineligible::NoWeight) => &mut why.weightless,
                Err(Ineligible::Stale { .. }) => &mut why.stale,
                Ok(()) if !node.dialable(platform) => &mut why.undialable,
                Ok(()) => continue,
            };
            *count += 1;
        }
        why
    }
}

impl fmt::Display for NoEligibleNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.known == 0 {
            return f.write_str("no eligible edge node: no edge node is registered");
        }
        write!(f, "no eligible edge node among {} known:", self.known)?;
        let causes = [
            (self.draining, "draining"),
            (self.dead, "dead"),
            (self.weightless, "with weight 0"),
            (self.stale, "silent for too long"),
            (self.undialable, "with nothing this platform can dial"),
        ];
        let mut separator = " ";
        for (count, cause) in causes.into_iter().filter(|(count, _)| *count > 0) {
            write!(f, "{separator}{count} {cause}")?;
            separator = ", ";
        }
        Ok(())
    }
}

impl Serialize for NoEligibleNode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("NoEligibleNode", 7)?;
        s.serialize_field("message", &self.to_string())?;
        s.serialize_field("known", &self.known)?;
        s.serialize_field("draining", &self.draining)?;
        s.serialize_field("dead", &self.dead)?;
        s.serialize_field("weightless", &self.weightless)?;
        s.serialize_field("stale", &self.stale)?;
        s.serialize_field("undialable", &self.undialable)?;
        s.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::Ports;
    use crate::location::GeoPoint;

    const BOUND: Duration = Duration::from_secs(30);

    fn node(state: NodeState, weight: u32, last_seen: SystemTime) -> NodeCandidate {
        NodeCandidate {
            id: "n1".into(),
            region: "sh".into(),
            location: GeoPoint::new(31.2, 121.5).unwrap(),
            hostname: "n1.example.com".into(),
            addresses: vec!["10.0.0.1".into()],
            ports: Ports {
                tcp: 3101,
                ws: 3102,
                wss: 3103,
            },
            weight,
            connections: 0,
            state,
            last_seen,
        }
    }

    #[test]
    fn only_fresh_active_weighted_nodes_pass() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(check(&node(NodeState::Active, 1, now), now, BOUND), Ok(()));
        assert_eq!(
            check(&node(NodeState::Draining, 1, now), now, BOUND),
            Err(Ineligible::Draining)
        );
        assert_eq!(
            check(&node(NodeState::Dead, 1, now), now, BOUND),
            Err(Ineligible::Dead)
        );
        assert_eq!(
            check(&node(NodeState::Active, 0, now), now, BOUND),
            Err(Ineligible::NoWeight)
        );
    }

    #[test]
    fn staleness_bound_is_inclusive_and_applies_to_future_reports_too() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let at_bound = node(NodeState::Active, 1, now - BOUND);
        assert_eq!(check(&at_bound, now, BOUND), Ok(()));
        let old = node(NodeState::Active, 1, now - BOUND - Duration::from_millis(1));
        assert_eq!(
            check(&old, now, BOUND),
            Err(Ineligible::Stale {
                skew: BOUND + Duration::from_millis(1)
            })
        );
        let slightly_ahead = node(NodeState::Active, 1, now + Duration::from_secs(2));
        assert_eq!(check(&slightly_ahead, now, BOUND), Ok(()));
        let far_ahead = node(NodeState::Active, 1, now + Duration::from_secs(3600));
        assert_eq!(
            check(&far_ahead, now, BOUND),
            Err(Ineligible::Stale {
                skew: Duration::from_secs(3600)
            })
        );
    }

    #[test]
    fn empty_answers_say_why() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let none = NoEligibleNode::tally(&[], Platform::Web, now, BOUND);
        assert_eq!(
            none.to_string(),
            "no eligible edge node: no edge node is registered"
        );
        let mut no_tls = node(NodeState::Active, 1, now);
        no_tls.ports = Ports {
            tcp: 0,
            ws: 0,
            wss: 0,
        };
        let nodes = [
            node(NodeState::Draining, 1, now),
            node(NodeState::Draining, 1, now),
            node(NodeState::Dead, 1, now),
            node(NodeState::Active, 1, now - BOUND * 2),
            no_tls,
        ];
        let why = NoEligibleNode::tally(&nodes, Platform::Web, now, BOUND);
        assert_eq!(
            why.to_string(),
            "no eligible edge node among 5 known: 2 draining, 1 dead, 1 silent for too long, \
             1 with nothing this platform can dial"
        );
        assert_eq!((why.draining, why.undialable, why.weightless), (2, 1, 0));
    }
}
