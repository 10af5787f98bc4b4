//! The seed's adaptive heartbeat: as long a period as the network allows, found by trying.
//!
//! Mobile networks (NATs, carrier proxies) drop idle TCP connections after an unknown time, and
//! every heartbeat costs the phone radio time. So the client starts at 60 s, grows the period by
//! 30 s after each period whose heartbeat was answered, up to 300 s; when a heartbeat goes
//! unanswered (the connection died meanwhile) it steps back and never grows to the failed period
//! again, settling just under what the network tolerates. The state outlives connections: a
//! session keeps what it learnt across reconnects.

use std::time::Duration;

/// Shortest period.
pub const MIN: Duration = Duration::from_secs(60);
/// Longest period.
pub const MAX: Duration = Duration::from_secs(300);
/// Growth after an answered period, and the step back after a failure.
pub const STEP: Duration = Duration::from_secs(30);

/// The current period and what has been learnt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdaptiveHeartbeat {
    min: Duration,
    max: Duration,
    step: Duration,
    current: Duration,
    /// The shortest period that failed: never reached again.
    ceiling: Option<Duration>,
}

impl Default for AdaptiveHeartbeat {
    fn default() -> Self {
        Self::new(MIN, MAX, STEP)
    }
}

impl AdaptiveHeartbeat {
    /// Starts at `min`, grows by `step` up to `max`.
    pub fn new(min: Duration, max: Duration, step: Duration) -> Self {
        let max = max.max(min);
        Self {
            min,
            max,
            step,
            current: min,
            ceiling: None,
        }
    }

    /// A fixed period (no adaptation), for tests and load generators.
    pub fn fixed(period: Duration) -> Self {
        Self::new(period, period, Duration::ZERO)
    }

    /// Time until the next heartbeat.
    pub fn period(&self) -> Duration {
        self.current
    }

    /// The heartbeat of the current period was answered: try a longer one.
    pub fn answered(&mut self) {
        let next = (self.current + self.step).min(self.max);
        if self.ceiling.is_none_or(|ceiling| next < ceiling) {
            self.current = next;
        }
    }

    /// The heartbeat of the current period went unanswered: remember the period as too long and
    /// step back.
    pub fn failed(&mut self) {
        let failed = self.current;
        self.ceiling = Some(self.ceiling.map_or(failed, |ceiling| ceiling.min(failed)));
        self.current = failed.saturating_sub(self.step).max(self.min);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn grows_by_steps_to_the_maximum() {
        let mut heartbeat = AdaptiveHeartbeat::default();
        let mut periods = vec![heartbeat.period()];
        for _ in 0..10 {
            heartbeat.answered();
            periods.push(heartbeat.period());
        }
        assert_eq!(periods[..4], [S(60), S(90), S(120), S(150)]);
        assert_eq!(*periods.last().unwrap(), S(300));
    }

    #[test]
    fn a_failure_steps_back_and_the_failed_period_is_never_tried_again() {
        let mut heartbeat = AdaptiveHeartbeat::default();
        for _ in 0..3 {
            heartbeat.answered();
        }
        assert_eq!(heartbeat.period(), S(150));
        heartbeat.failed();
        assert_eq!(heartbeat.period(), S(120));
        for _ in 0..5 {
            heartbeat.answered();
        }
        assert_eq!(heartbeat.period(), S(120), "150 s failed: stay below it");
        heartbeat.failed();
        heartbeat.failed();
        heartbeat.failed();
        assert_eq!(heartbeat.period(), S(60), "never below the minimum");
    }
}
