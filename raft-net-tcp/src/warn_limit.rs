//! Rate-limited warnings about bad input: a peer (or a stranger) that sends garbage a thousand times
//! a second must not write a thousand warnings a second.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// At most one warning per [`BadInput`] kind per this interval; the rest go to DEBUG and are
/// counted in the next warning's `suppressed` field.
pub(crate) const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// The kinds of bad input the server (and, for bad responses, the client) warns about, each limited
/// on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BadInput {
    /// The TLS handshake failed (no certificate, another CA, not TLS at all).
    Tls,
    /// The protocol handshake was refused or malformed (wrong cluster, forged `from`, bad magic).
    Handshake,
    /// A frame or message after the handshake was bad (over the limit, undecodable, cut short).
    Frame,
    /// A handshake or a frame took longer than its timeout.
    Timeout,
    /// A connection was closed at once because the server holds `max_connections` already.
    ConnectionCap,
    /// `accept` failed (e.g. out of file descriptors).
    Accept,
    /// A connection was closed at once because it took one of the descriptors kept for storage.
    DescriptorReserve,
}

const KINDS: usize = 7;

impl BadInput {
    fn index(self) -> usize {
        match self {
            BadInput::Tls => 0,
            BadInput::Handshake => 1,
            BadInput::Frame => 2,
            BadInput::Timeout => 3,
            BadInput::ConnectionCap => 4,
            BadInput::Accept => 5,
            BadInput::DescriptorReserve => 6,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            BadInput::Tls => "tls",
            BadInput::Handshake => "handshake",
            BadInput::Frame => "frame",
            BadInput::Timeout => "timeout",
            BadInput::ConnectionCap => "connection_cap",
            BadInput::Accept => "accept",
            BadInput::DescriptorReserve => "descriptor_reserve",
        }
    }
}

#[derive(Clone, Copy, Default)]
struct KindState {
    last_warned: Option<Instant>,
    suppressed: u64,
}

/// Decides, per kind, whether a bad-input event is logged at WARN.
#[derive(Default)]
pub(crate) struct WarnLimiter {
    kinds: Mutex<[KindState; KINDS]>,
}

impl WarnLimiter {
    /// Whether an event of `kind` at `now` may warn: `Some(suppressed)`, the number of events of that
    /// kind that did not since the last warning; `None` if it must stay at DEBUG.
    pub(crate) fn check(&self, kind: BadInput, now: Instant) -> Option<u64> {
        let mut kinds = self.kinds.lock().unwrap_or_else(|p| p.into_inner());
        let state = &mut kinds[kind.index()];
        let due = state
            .last_warned
            .is_none_or(|at| now.saturating_duration_since(at) >= WARN_INTERVAL);
        if due {
            let suppressed = state.suppressed;
            *state = KindState {
                last_warned: Some(now),
                suppressed: 0,
            };
            Some(suppressed)
        } else {
            state.suppressed = state.suppressed.saturating_add(1);
            None
        }
    }

    /// Logs `message` with `reason`: at WARN if `kind` is due, else at DEBUG.
    pub(crate) fn log(&self, kind: BadInput, message: &str, reason: &dyn std::fmt::Display) {
        match self.check(kind, Instant::now()) {
            Some(suppressed) => tracing::warn!(
                kind = kind.as_str(),
                suppressed,
                %reason,
                "{message} (at most one warning of this kind per {} s; the rest are at DEBUG)",
                WARN_INTERVAL.as_secs()
            ),
            None => tracing::debug!(kind = kind.as_str(), %reason, "{message}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_warning_per_kind_per_interval_counting_the_rest() {
        let limiter = WarnLimiter::default();
        let t0 = Instant::now();
        assert_eq!(limiter.check(BadInput::Tls, t0), Some(0));
        for i in 1..=1000 {
            let t = t0 + Duration::from_millis(i);
            assert_eq!(limiter.check(BadInput::Tls, t), None);
        }
        // Other kinds have their own budget.
        assert_eq!(limiter.check(BadInput::Frame, t0), Some(0));
        assert_eq!(limiter.check(BadInput::Tls, t0 + WARN_INTERVAL), Some(1000));
        assert_eq!(
            limiter.check(BadInput::Tls, t0 + WARN_INTERVAL + Duration::from_secs(1)),
            None
        );
        assert_eq!(
            limiter.check(BadInput::Tls, t0 + 3 * WARN_INTERVAL),
            Some(1)
        );
    }
}
