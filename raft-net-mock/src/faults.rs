//! What can go wrong on the way, and the seeded dice that decide it for each message.
//!
//! Every random choice of the router comes from one [`Dice`], in a fixed order per message, so a run
//! replays exactly from its seed. Settings that are off draw nothing: switching on a new kind of
//! fault changes the draws of the runs that use it, never those of the runs that do not.

/// Message faults, applied independently to each request and each response.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Faults {
    /// Probability that a message is lost (the sender then sees no answer and times out).
    pub drop_prob: f64,
    /// Each message is delayed by a uniform random number of milliseconds in this inclusive range.
    pub delay_ms: (u64, u64),
    /// Probability that a request is delivered twice (the second copy's answer is discarded).
    pub duplicate_prob: f64,
    /// Probability that a message gets an extra delay of up to three times the maximum delay, so that
    /// later messages overtake it.
    pub reorder_prob: f64,
}

impl Default for Faults {
    /// No faults: instant, reliable delivery.
    fn default() -> Self {
        Faults {
            drop_prob: 0.0,
            delay_ms: (0, 0),
            duplicate_prob: 0.0,
            reorder_prob: 0.0,
        }
    }
}

/// How a request fails when its sender cannot reach its target (partition, isolation, disconnection,
/// or a target that is not registered, i.e. crashed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UnreachableMode {
    /// The request fails at once with [`NetworkError::Unreachable`](raft_core::NetworkError), like a
    /// refused connection. The default.
    #[default]
    Refuse,
    /// The request gets no answer for a uniform random `0..=max_ms` milliseconds, then fails with
    /// [`NetworkError::Unreachable`](raft_core::NetworkError), like a request sent into a dead network
    /// (the "long delays" of MIT 6.824's `labrpc`). A sender whose RPCs block its other work shows up
    /// here. The wait is `tokio::time::sleep`, so it passes in virtual time on a paused clock; a
    /// sender with a shorter timeout of its own (the driver's `rpc_timeout`) gives up first.
    Hang {
        /// The longest wait, in milliseconds.
        max_ms: u64,
    },
}

impl UnreachableMode {
    /// The longest wait of [`UnreachableMode::hang`]: 7 seconds, as in `labrpc`'s long-delay mode.
    pub const DEFAULT_HANG_MAX_MS: u64 = 7_000;

    /// [`UnreachableMode::Hang`] with waits of up to [`DEFAULT_HANG_MAX_MS`](Self::DEFAULT_HANG_MAX_MS).
    pub fn hang() -> Self {
        UnreachableMode::Hang {
            max_ms: Self::DEFAULT_HANG_MAX_MS,
        }
    }
}

/// The router's seeded random number generator, and the fault decisions drawn from it.
pub(crate) struct Dice {
    rng: fastrand::Rng,
}

impl Dice {
    pub(crate) fn new(seed: u64) -> Self {
        Dice {
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// A uniform number in `range`, for callers' own schedules.
    pub(crate) fn u64(&mut self, range: std::ops::Range<u64>) -> u64 {
        self.rng.u64(range)
    }

    /// True with probability `p`; draws nothing when `p` is zero or less.
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.f64() < p
    }

    /// A delay for one message under `faults`: uniform in `delay_ms`, plus, with `reorder_prob`, an
    /// extra delay of up to three times the maximum.
    pub(crate) fn delay_ms(&mut self, faults: &Faults) -> u64 {
        let (lo, hi) = faults.delay_ms;
        let mut d = self.within(lo, hi);
        if self.chance(faults.reorder_prob) {
            d += self.rng.u64(0..=hi.max(1) * 3);
        }
        d
    }

    /// How long an unreachable request waits before it fails under `mode`: nothing drawn and no wait
    /// for [`UnreachableMode::Refuse`].
    pub(crate) fn unreachable_wait_ms(&mut self, mode: UnreachableMode) -> u64 {
        match mode {
            UnreachableMode::Refuse => 0,
            UnreachableMode::Hang { max_ms } => self.rng.u64(0..=max_ms),
        }
    }

    /// How long an answer is held back besides its faults' delay: uniform in the inclusive range, or
    /// nothing (and nothing drawn) without one.
    pub(crate) fn reply_delay_ms(&mut self, range: Option<(u64, u64)>) -> u64 {
        range.map_or(0, |(lo, hi)| self.within(lo, hi))
    }

    /// Uniform in `lo..=hi`; `lo`, without a draw, when the range holds one value or none.
    fn within(&mut self, lo: u64, hi: u64) -> u64 {
        if hi > lo {
            self.rng.u64(lo..=hi)
        } else {
            lo
        }
    }
}
