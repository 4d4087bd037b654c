//! How much CPU a measured window cost the process, and how much of the machine's time the
//! hypervisor took away meanwhile: on a shared virtual machine, throughput alone swings by a
//! third between identical runs, while the process's CPU per write moves far less, so A/B
//! comparisons read both.

use std::time::Duration;

/// A window opened by [`CpuWindow::open`]: the process's CPU time and the machine's steal
/// counters at that moment.
pub struct CpuWindow {
    process: Option<Duration>,
    machine: Option<MachineTicks>,
}

/// What a window cost.
#[derive(Clone, Copy, Debug)]
pub struct CpuUse {
    /// User + system CPU time of the whole process (every thread) over the window; `None` where
    /// `getrusage` failed.
    pub process: Option<Duration>,
    /// The share of all CPUs' time the hypervisor gave to other guests (`steal` in
    /// `/proc/stat`), 0.0-1.0; `None` where `/proc/stat` cannot be read (not Linux).
    pub steal: Option<f64>,
}

impl CpuWindow {
    /// Opens a window now.
    pub fn open() -> Self {
        CpuWindow {
            process: process_cpu(),
            machine: MachineTicks::read(),
        }
    }

    /// Closes the window: what it cost since [`open`](Self::open).
    pub fn close(self) -> CpuUse {
        let process = match (self.process, process_cpu()) {
            (Some(start), Some(end)) => end.checked_sub(start),
            _ => None,
        };
        let steal = match (self.machine, MachineTicks::read()) {
            (Some(start), Some(end)) => {
                let total = end.total.saturating_sub(start.total);
                let steal = end.steal.saturating_sub(start.steal);
                (total > 0).then(|| steal as f64 / total as f64)
            }
            _ => None,
        };
        CpuUse { process, steal }
    }
}

/// User + system CPU time of the process so far.
fn process_cpu() -> Option<Duration> {
    // SAFETY: `getrusage` writes a `rusage` into the zeroed struct it is given and reads nothing
    // else; all-zero bytes are a valid `rusage`.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a `rusage` the call may overwrite.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return None;
    }
    let time = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).ok()?)
            .checked_add(Duration::from_micros(u64::try_from(t.tv_usec).ok()?))
    };
    time(usage.ru_utime)?.checked_add(time(usage.ru_stime)?)
}

/// The machine's CPU time counters (all CPUs, in clock ticks), from the first line of `/proc/stat`.
#[derive(Clone, Copy)]
struct MachineTicks {
    total: u64,
    steal: u64,
}

impl MachineTicks {
    fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        Self::parse(stat.lines().next()?)
    }

    /// `cpu  user nice system idle iowait irq softirq steal guest guest_nice`: the guest fields
    /// are already counted in user and nice, so the total is the first eight.
    fn parse(line: &str) -> Option<Self> {
        let mut fields = line.split_whitespace();
        if fields.next()? != "cpu" {
            return None;
        }
        let ticks: Vec<u64> = fields
            .take(8)
            .map(|f| f.parse().ok())
            .collect::<Option<_>>()?;
        if ticks.len() < 8 {
            return None;
        }
        Some(MachineTicks {
            total: ticks.iter().try_fold(0u64, |sum, t| sum.checked_add(*t))?,
            steal: ticks[7],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steal_is_the_eighth_counter_of_the_cpu_line() {
        let t = MachineTicks::parse("cpu  10 1 5 80 2 0 1 7 3 0").unwrap();
        assert_eq!((t.total, t.steal), (106, 7));
        assert!(MachineTicks::parse("cpu0 10 1 5 80 2 0 1 7").is_none());
        assert!(MachineTicks::parse("cpu  10 1 5 80").is_none());
        assert!(MachineTicks::parse("cpu  10 x 5 80 2 0 1 7").is_none());
    }

    /// This thread's own CPU time, by a clock independent of `getrusage`.
    fn thread_cpu() -> Duration {
        // SAFETY: `clock_gettime` writes the `timespec` it is given; all-zero bytes are valid.
        let mut t: libc::timespec = unsafe { std::mem::zeroed() };
        // SAFETY: a valid pointer to a `timespec` the call may overwrite.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
        assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
        Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
    }

    #[test]
    fn a_window_counts_the_cpu_spent_in_it() {
        let w = CpuWindow::open();
        // Spin until this thread alone has used 20 ms of CPU, however long a loaded machine makes
        // that take: the process's CPU over the window is at least that.
        let start = thread_cpu();
        let mut x = 0u64;
        while thread_cpu() - start < Duration::from_millis(20) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        std::hint::black_box(x);
        let used = w.close().process.expect("getrusage works on this machine");
        assert!(used >= Duration::from_millis(20), "{used:?}");
    }
}
