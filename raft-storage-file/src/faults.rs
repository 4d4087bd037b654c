//! A seam for crash tests, compiled in only for this crate's own unit tests (`cfg(test)`): every step
//! that changes the file system (creating, writing, fsyncing, renaming, truncating or unlinking a
//! file, fsyncing a directory) first calls [`Faults::step`]. A test can make the step with a chosen
//! number fail, and every step after it, as if the process had died just before it; it then reopens
//! the directory and checks what recovery makes of it. In every other build `Faults` is an empty
//! type and `step` does nothing, so the release API and code are unchanged.

#[cfg(not(test))]
use raft_core::StorageError;

/// The crash-injection state of one store (empty outside tests).
#[cfg(not(test))]
#[derive(Debug, Default)]
pub(crate) struct Faults;

#[cfg(not(test))]
impl Faults {
    /// No crash injection.
    pub(crate) fn none() -> Faults {
        Faults
    }

    /// Called before each file system step; does nothing outside tests.
    #[inline(always)]
    pub(crate) fn step(&self, _what: impl FnOnce() -> String) -> Result<(), StorageError> {
        Ok(())
    }
}

#[cfg(test)]
pub(crate) use counting::Faults;

#[cfg(test)]
mod counting {
    use std::cell::{Cell, RefCell};

    use raft_core::StorageError;

    /// Counts the file system steps of a store, names them, and fails every step from a chosen one.
    #[derive(Debug, Default)]
    pub(crate) struct Faults {
        taken: Cell<u64>,
        crash_at: Cell<Option<u64>>,
        trace: RefCell<Vec<String>>,
    }

    impl Faults {
        /// No crash injection (steps are still counted and named).
        pub(crate) fn none() -> Faults {
            Faults::default()
        }

        /// Faults that let `steps` steps happen, then fail every later one.
        pub(crate) fn crash_after(steps: u64) -> Faults {
            let f = Faults::default();
            f.crash_at.set(Some(steps));
            f
        }

        /// Lets `more` further steps happen (`None`: all of them), then fails every later one.
        pub(crate) fn allow(&self, more: Option<u64>) {
            self.crash_at.set(more.map(|m| self.taken.get() + m));
        }

        /// How many steps happened.
        pub(crate) fn taken(&self) -> u64 {
            self.taken.get()
        }

        /// The names of the steps that happened, from step `from` on.
        pub(crate) fn trace_since(&self, from: u64) -> Vec<String> {
            self.trace.borrow()[from as usize..].to_vec()
        }

        /// Called before each file system step: fails, as a crash just before the step, if the
        /// allowed steps are used up.
        pub(crate) fn step(&self, what: impl FnOnce() -> String) -> Result<(), StorageError> {
            let n = self.taken.get();
            if self.crash_at.get().is_some_and(|at| n >= at) {
                return Err(StorageError::Io {
                    context: format!("injected crash before step {n} ({})", what()),
                    source: std::io::Error::other("injected crash"),
                });
            }
            self.taken.set(n + 1);
            self.trace.borrow_mut().push(what());
            Ok(())
        }
    }
}
