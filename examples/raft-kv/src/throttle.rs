//! Rate-limited warnings: an attacker (or a broken client) can cause the same warning many times a
//! second; the log gets one line per interval, with how many were left out.

use std::time::Duration;

use tokio::time::Instant;

/// Decides when a repeated warning is logged: the first time, then at most once per `interval`,
/// each time with the count of occurrences left out since the last line.
#[derive(Debug)]
pub(crate) struct Throttle {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    pub(crate) fn new(interval: Duration) -> Self {
        Throttle {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// Records one occurrence. `Some(n)`: log it now, saying `n` earlier ones were not logged;
    /// `None`: leave it out (log it at debug level at most).
    pub(crate) fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        match self.last {
            Some(last) if now.duration_since(last) < self.interval => {
                self.suppressed = self.suppressed.saturating_add(1);
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn logs_the_first_then_once_per_interval_with_the_count_left_out() {
        let mut t = Throttle::new(Duration::from_secs(10));
        assert_eq!(t.allow(), Some(0));
        for _ in 0..5 {
            assert_eq!(t.allow(), None);
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(t.allow(), Some(5));
        assert_eq!(t.allow(), None);
    }
}
