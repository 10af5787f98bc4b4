//! Spread: how one request's seed picks among equally near nodes, in proportion to their free weighted capacity.
//!
//! Load reports arrive every few seconds, so an order decided by load alone sends every client that asks between
//! two reports to the same node: the stampede HTTPDNS exists to prevent. Instead, inside one group (same distance
//! band and region match), each node gets
//!
//! - a **free weighted capacity** `weight × (level − load)`, floored at 0, where `level` is the group's mean load
//!   (`Σ connections / Σ weight`) plus a configured headroom per weight unit: the share of the next arrivals that
//!   would bring the group to an even load. Idle groups split by weight alone; a node far above the mean gets
//!   nothing until its load comes down.
//! - a **draw** `−ln(u) / free`, with `u` in (0, 1] derived from (seed, node id). Sorting by draw is an exponential
//!   race: the first node is node *i* with probability `free_i / Σ free`, and the whole order is a weighted random
//!   permutation (sampling without replacement, Efraimidis–Spirakis).
//!
//! Each node's draw depends only on the seed, its id and its group's sums, so an answer is a pure function of the
//! snapshot and the seed, whatever order the snapshot lists nodes in.

/// Connections and weight of one group, the inputs of its level.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct GroupLoad {
    connections: u64,
    weight: u64,
}

impl GroupLoad {
    /// Adds one node to the group.
    pub(crate) fn add(&mut self, connections: u64, weight: u32) {
        self.connections = self.connections.saturating_add(connections);
        self.weight += u64::from(weight);
    }

    /// `weight × (mean load + headroom) − connections`, floored at 0, for a node of this group.
    pub(crate) fn free_capacity(
        &self,
        connections: u64,
        weight: u32,
        headroom_per_weight: u32,
    ) -> f64 {
        let mean_load = self.connections as f64 / self.weight.max(1) as f64;
        let level = mean_load + f64::from(headroom_per_weight);
        (f64::from(weight) * level - connections as f64).max(0.0)
    }
}

/// The node's place in the seeded race (smaller goes first); `None` when it has no free capacity and so takes part
/// only after every node that has.
pub(crate) fn draw(seed: u64, node_id: &str, free_capacity: f64) -> Option<f64> {
    (free_capacity > 0.0).then(|| -unit_interval(seed, node_id).ln() / free_capacity)
}

/// A uniform number in (0, 1] from (seed, node id): the top 53 bits of a stable hash, plus one, over 2^53.
fn unit_interval(seed: u64, node_id: &str) -> f64 {
    const SCALE: f64 = 1.0 / (1u64 << 53) as f64;
    ((stable_hash(seed, node_id) >> 11) + 1) as f64 * SCALE
}

/// A stable 64-bit hash of (seed, node id): FNV-1a over the bytes, then the splitmix64 finalizer so that nearby
/// seeds give unrelated draws. Written out rather than taken from `std` because std's hashers are not promised to
/// stay the same across Rust releases, and answers should not change with a compiler upgrade.
fn stable_hash(seed: u64, node_id: &str) -> u64 {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = FNV_OFFSET;
    for byte in seed.to_le_bytes().iter().chain(node_id.as_bytes()) {
        h ^= u64::from(*byte);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_depends_on_seed_and_node() {
        assert_eq!(stable_hash(7, "a"), stable_hash(7, "a"));
        assert_ne!(stable_hash(7, "a"), stable_hash(8, "a"));
        assert_ne!(stable_hash(7, "a"), stable_hash(7, "b"));
    }

    #[test]
    fn unit_interval_excludes_zero_and_includes_no_more_than_one() {
        for seed in 0..10_000 {
            let u = unit_interval(seed, "n");
            assert!(u > 0.0 && u <= 1.0, "{u}");
        }
    }

    #[test]
    fn free_capacity_is_the_share_that_evens_the_group_out() {
        let mut group = GroupLoad::default();
        group.add(0, 10);
        group.add(1_000, 10);
        // mean load 50, level 150: the empty node may take 1500, the busy one 500.
        assert_eq!(group.free_capacity(0, 10, 100), 1_500.0);
        assert_eq!(group.free_capacity(1_000, 10, 100), 500.0);
        assert_eq!(group.free_capacity(5_000, 10, 100), 0.0);
        assert_eq!(draw(1, "n", 0.0), None);
        assert!(draw(1, "n", 1.0).is_some_and(|d| d >= 0.0));
    }
}
