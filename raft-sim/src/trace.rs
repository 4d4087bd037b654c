//! [`Tracer`]: prints every observation of the harness, stamped with virtual time, when the
//! environment variable `HARNESS_TRACE` is set (to anything but `0`), to follow a failing seed.

use tokio::time::Instant;

/// Prints observations when tracing is on; otherwise does nothing (and formats nothing).
#[derive(Debug)]
pub(crate) struct Tracer {
    enabled: bool,
    start: Instant,
}

impl Tracer {
    /// A tracer switched by `HARNESS_TRACE`, counting time from now.
    pub(crate) fn from_env() -> Self {
        Tracer {
            enabled: std::env::var_os("HARNESS_TRACE").is_some_and(|v| v != "0"),
            start: Instant::now(),
        }
    }

    /// Prints `what()` with the virtual time elapsed since the tracer was made, if tracing is on.
    /// `what` is called only then.
    pub(crate) fn trace(&self, what: impl FnOnce() -> String) {
        if self.enabled {
            println!("[{:>8.3}s] {}", self.start.elapsed().as_secs_f64(), what());
        }
    }
}
