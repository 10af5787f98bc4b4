//! Bounded exponential backoff with jitter for calls to the control plane.
//!
//! Each failure doubles the pause up to a ceiling; the pause taken is a random point in its upper
//! half, so the edges of a cluster that lost the control plane together do not return in lockstep.

use std::time::Duration;

/// Pauses between retries of one failing call.
#[derive(Clone, Debug)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    /// Starts at `initial`, doubles per failure, never exceeds `max`.
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            current: initial,
        }
    }

    /// The pause before the next attempt (and grows the following one).
    pub(crate) fn next_pause(&mut self) -> Duration {
        let pause = self.current.mul_f64(rand::random_range(0.5..=1.0));
        self.current = (self.current * 2).min(self.max);
        pause
    }

    /// Back to the initial pause after a success.
    pub(crate) fn reset(&mut self) {
        self.current = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_the_ceiling_and_reset() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        for ceiling in [100, 200, 350, 350] {
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
