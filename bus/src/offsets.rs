//! Which offsets a consumer may commit, given the records it handed out and the ones marked done.
//!
//! A job worker finishes batches out of order (one slow edge holds its batch while later batches to
//! other edges complete), yet a log commit means "everything before this offset is done". So the
//! commit point of a partition is the earliest record handed out and not yet done, or, when none is
//! pending, the offset after the last record handed out: never beyond an unfinished record. Both bus
//! implementations use this one rule.
//!
//! One log record may carry several pushes (a group of one push's records, see the Kafka bus's
//! `group` module), all handed out with the same position: the record counts as done once every
//! one of them is marked done.
//!
//! Offsets are handed out in increasing order within a partition, so each partition keeps its
//! pending records in a queue sorted by offset: handing one out appends, marking one done finds it
//! by binary search, and the done records at the front leave the queue (a record done out of
//! order stays, at zero, until the ones before it are done too). A record handed out again (after
//! a seek back) is found, or put in its place, as in any sorted map.

use crate::LogPosition;
use std::collections::{HashMap, VecDeque};

/// Records handed out by one consumer and not yet done, per partition.
#[derive(Debug, Default)]
pub(crate) struct PendingOffsets {
    partitions: HashMap<i32, PartitionPending>,
}

#[derive(Debug, Default)]
struct PartitionPending {
    /// Offsets handed out, in increasing order, with how many of their pushes are not done yet;
    /// the first is never at zero (done records at the front are removed).
    pending: VecDeque<(i64, usize)>,
    /// The offset after the highest one handed out.
    next: i64,
}

impl PartitionPending {
    /// The offset to commit: nothing at or after it is known to be done for sure.
    fn commit_point(&self) -> i64 {
        self.pending
            .front()
            .map_or(self.next, |(offset, _)| *offset)
    }

    /// Notes `offset` as handed out with `pushes` pushes not done.
    fn hand_out(&mut self, offset: i64, pushes: usize) {
        match self.pending.back() {
            Some((last, _)) if *last >= offset => {
                match self.pending.binary_search_by_key(&offset, |(at, _)| *at) {
                    Ok(at) => self.pending[at].1 = pushes,
                    Err(at) => self.pending.insert(at, (offset, pushes)),
                }
            }
            _ => self.pending.push_back((offset, pushes)),
        }
        self.next = self.next.max(offset + 1);
    }

    /// Marks one push of the record at `offset` done; says whether the commit point moved.
    fn done(&mut self, offset: i64) -> bool {
        let Ok(at) = self.pending.binary_search_by_key(&offset, |(at, _)| *at) else {
            return false;
        };
        let left = &mut self.pending[at].1;
        if *left == 0 {
            return false;
        }
        *left -= 1;
        if *left > 0 || at > 0 {
            return false;
        }
        while self.pending.front().is_some_and(|(_, left)| *left == 0) {
            self.pending.pop_front();
        }
        true
    }
}

impl PendingOffsets {
    /// Notes a record handed out to the caller as `pushes` pushes (offsets grow within a
    /// partition).
    pub(crate) fn delivered(&mut self, position: LogPosition, pushes: usize) {
        self.partitions
            .entry(position.partition)
            .or_default()
            .hand_out(position.offset, pushes.max(1));
    }

    /// Marks pushes done (one position per push) and returns, for each partition whose commit point this moved, the
    /// partition and its new commit point (the next offset to read). Positions not handed out by
    /// this consumer (already done, or of a partition since taken away) are ignored.
    pub(crate) fn done(
        &mut self,
        positions: impl IntoIterator<Item = LogPosition>,
    ) -> Vec<(i32, i64)> {
        let mut moved: HashMap<i32, i64> = HashMap::new();
        for position in positions {
            let Some(partition) = self.partitions.get_mut(&position.partition) else {
                continue;
            };
            if partition.done(position.offset) {
                moved.insert(position.partition, partition.commit_point());
            }
        }
        let mut commits: Vec<(i32, i64)> = moved
            .into_keys()
            .filter_map(|p| {
                self.partitions
                    .get(&p)
                    .map(|state| (p, state.commit_point()))
            })
            .collect();
        commits.sort_unstable();
        commits
    }

    /// Forgets a partition this consumer no longer owns: its records will be delivered to whoever
    /// owns it now, and commits for them must not come from here.
    pub(crate) fn forget(&mut self, partition: i32) {
        self.partitions.remove(&partition);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(partition: i32, offset: i64) -> LogPosition {
        LogPosition { partition, offset }
    }

    #[test]
    fn commit_point_stops_at_the_earliest_unfinished_record() {
        let mut offsets = PendingOffsets::default();
        for offset in 10..15 {
            offsets.delivered(at(0, offset), 1);
        }
        assert_eq!(offsets.done([at(0, 12), at(0, 13)]), vec![]);
        assert_eq!(offsets.done([at(0, 10)]), vec![(0, 11)]);
        assert_eq!(offsets.done([at(0, 11)]), vec![(0, 14)]);
        assert_eq!(offsets.done([at(0, 14)]), vec![(0, 15)]);
    }

    #[test]
    fn partitions_move_independently_and_unknown_positions_are_ignored() {
        let mut offsets = PendingOffsets::default();
        offsets.delivered(at(0, 0), 1);
        offsets.delivered(at(1, 7), 1);
        offsets.delivered(at(1, 8), 1);
        assert_eq!(offsets.done([at(1, 7), at(2, 3), at(0, 5)]), vec![(1, 8)]);
        assert_eq!(offsets.done([at(1, 8), at(0, 0)]), vec![(0, 1), (1, 9)]);
        assert_eq!(
            offsets.done([at(1, 8)]),
            vec![],
            "done twice commits nothing new"
        );
    }

    #[test]
    fn a_record_of_several_pushes_is_done_when_all_of_them_are() {
        let mut offsets = PendingOffsets::default();
        offsets.delivered(at(0, 4), 3);
        offsets.delivered(at(0, 5), 1);
        assert_eq!(offsets.done([at(0, 4), at(0, 5)]), vec![]);
        assert_eq!(offsets.done([at(0, 4)]), vec![]);
        assert_eq!(offsets.done([at(0, 4)]), vec![(0, 6)]);
    }

    #[test]
    fn a_record_handed_out_again_after_a_seek_back_is_pending_again() {
        let mut offsets = PendingOffsets::default();
        for offset in [3, 5, 6] {
            offsets.delivered(at(0, offset), 1);
        }
        assert_eq!(offsets.done([at(0, 5)]), vec![]);
        // A seek back hands out 4 (never seen) and 5 (done) again.
        offsets.delivered(at(0, 4), 1);
        offsets.delivered(at(0, 5), 2);
        assert_eq!(offsets.done([at(0, 3)]), vec![(0, 4)]);
        assert_eq!(offsets.done([at(0, 4), at(0, 5)]), vec![(0, 5)]);
        assert_eq!(offsets.done([at(0, 5)]), vec![(0, 6)]);
        assert_eq!(offsets.done([at(0, 6)]), vec![(0, 7)]);
        assert_eq!(
            offsets.done([at(0, 6)]),
            vec![],
            "done twice commits nothing"
        );
    }

    #[test]
    fn a_forgotten_partition_commits_nothing() {
        let mut offsets = PendingOffsets::default();
        offsets.delivered(at(3, 1), 1);
        offsets.forget(3);
        assert_eq!(offsets.done([at(3, 1)]), vec![]);
    }
}
