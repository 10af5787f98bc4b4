//! Health: which candidates may be handed to a client at all.
//!
//! This is a yes/no gate, separate from selection's "how good is it": a node that fails here is never returned,
//! however near or idle it is. The gate is a pure function of the candidate, the current time and the staleness
//! bound, so it can also explain to an operator why a node is missing from answers.

use std::time::{Duration, SystemTime};

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
}
