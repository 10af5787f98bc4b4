//! Rate-limited logging for events that happen once per connection or per push.
//!
//! Connects, closes, refused auths and slow-consumer closes must be visible in the log, but an edge
//! with a million clients can see tens of thousands of them a second (a reconnect storm), and a log
//! line per event would cost more than the event. Each kind of event gets one [`RateLimit`]: at most
//! `per_second` lines a second are written, the rest are counted and the next line written says how
//! many were left out (`suppressed`), so the log stays readable and nothing disappears silently.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// One second: the window the limit applies to.
const WINDOW: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Window {
    started: Option<Instant>,
    written: u32,
    suppressed: u64,
}

/// Allows up to `per_second` log lines a second for one kind of event; see the module docs.
#[derive(Debug)]
pub struct RateLimit {
    per_second: u32,
    window: Mutex<Window>,
}

impl RateLimit {
    /// A limit of `per_second` lines a second (usable in a `static`).
    pub const fn new(per_second: u32) -> Self {
        Self {
            per_second,
            window: Mutex::new(Window {
                started: None,
                written: 0,
                suppressed: 0,
            }),
        }
    }

    /// `Some(left out since the last line written)` if a line may be written now, `None` if this
    /// one is to be left out (and counted).
    pub fn allow(&self) -> Option<u64> {
        let now = Instant::now();
        let mut window = self.window.lock();
        if window
            .started
            .is_none_or(|started| now.duration_since(started) >= WINDOW)
        {
            window.started = Some(now);
            window.written = 0;
        }
        if window.written >= self.per_second {
            window.suppressed += 1;
            return None;
        }
        window.written += 1;
        Some(std::mem::take(&mut window.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::RateLimit;

    #[test]
    fn lines_past_the_limit_are_counted_and_reported_with_the_next_line() {
        let limit = RateLimit::new(2);
        assert_eq!(limit.allow(), Some(0));
        assert_eq!(limit.allow(), Some(0));
        assert_eq!(limit.allow(), None);
        assert_eq!(limit.allow(), None);
        // A new window: the two left out are reported with the first line written.
        limit.window.lock().started = None;
        assert_eq!(limit.allow(), Some(2));
        assert_eq!(limit.allow(), Some(0));
    }
}
