//! Bounded exponential backoff with jitter: how every rim client paces its retries (job workers
//! retrying an edge or the bus, edges retrying the control plane).
//!
//! Each failure doubles the pause up to a ceiling; the pause actually taken is a random point in its
//! upper half, so many clients retrying one recovering server do not arrive in lockstep.

use std::time::Duration;

/// Pauses between retries of one failing operation.
#[derive(Clone, Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    /// Starts at `initial`, doubles per failure, never exceeds `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            current: initial,
        }
    }

    /// The pause before the next attempt (and grows the following one).
    pub fn next_pause(&mut self) -> Duration {
        let pause = self.current.mul_f64(rand::random_range(0.5..=1.0));
        self.current = (self.current * 2).min(self.max);
        pause
    }

    /// Back to the initial pause after a success.
    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_the_ceiling_and_reset() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let ceilings = [100, 200, 350, 350];
        for ceiling in ceilings {
            let pause = backoff.next_pause();
            let ceiling = Duration::from_millis(ceiling);
            assert!(
                pause <= ceiling && pause >= ceiling / 2,
                "{pause:?} vs {ceiling:?}"
            );
        }
        backoff.reset();
        assert!(backoff.next_pause() <= Duration::from_millis(100));
    }
}
