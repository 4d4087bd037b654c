//! The synchronous core: everything a [`FileStorage`](crate::FileStorage) does, as plain blocking file
//! I/O on a directory. The async trait methods run these on tokio's blocking pool.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use raft_core::{
    Entry, HardState, LogId, LogIndex, LogState, Snapshot, SnapshotChunk, StorageError, Term,
};
use serde::de::DeserializeOwned;

use crate::faults::Faults;
use crate::format::{self, corrupted, Batch, CleanShutdown, LogMeta};
use crate::report::{LogBehindSnapshot, RecoveryReport, TornTail};
use crate::scan::{self, Record};
use crate::snapshot_file::SnapshotFile;
use crate::{FsyncPolicy, Options};

/// Name of the lock file, in the storage directory.
pub(crate) const LOCK_FILE: &str = "LOCK";
/// Name of the hard state file.
pub(crate) const HARD_STATE_FILE: &str = "hard_state";
/// Name of the log metadata file.
pub(crate) const LOG_META_FILE: &str = "log_meta";
/// Name of the snapshot file.
pub(crate) const SNAPSHOT_FILE: &str = "snapshot";
/// Name of the clean shutdown file: present only between a clean close and the next open.
pub(crate) const CLEAN_FILE: &str = "clean";
/// Name of the directory of log segments.
pub(crate) const LOG_DIR: &str = "log";
/// Suffix of files being written, renamed into place once complete.
const TMP_SUFFIX: &str = ".tmp";
/// Suffix of segment files.
const SEGMENT_SUFFIX: &str = ".log";
/// Digits of the index in a segment file's name, zero-padded: as many as `u64::MAX` has, so that the
/// names sort in index order.
const SEGMENT_NAME_DIGITS: usize = 20;

/// How many times [`acquire_lock`] retries a directory lock that another descriptor holds, before it
/// reports the directory as locked.
const LOCK_RETRIES: u32 = 8;
/// The wait before the first retry of a held lock; each later wait doubles, up to
/// [`LOCK_RETRY_MAX_WAIT`].
const LOCK_RETRY_FIRST_WAIT: Duration = Duration::from_millis(1);
/// The longest wait between two retries of a held lock.
///
/// The retries exist because a child process that another thread of this process is starting holds
/// a copy of the lock's descriptor from its fork until it execs, so a lock just released can look
/// held for that long. With these values the waits are 1, 2, 4, 8, 16, 32, 64 and 64 ms: about
/// 200 ms in all, enough to outlast a fork-to-exec window even on a loaded machine, while an open of
/// a directory that really is in use still fails within a fraction of a second. Starting at 1 ms
/// keeps the usual case, a lock free at the first or second try, fast.
const LOCK_RETRY_MAX_WAIT: Duration = Duration::from_millis(64);

/// The file name of the segment whose first entry is `first`.
pub(crate) fn segment_file_name(first: LogIndex) -> String {
    format!("{first:0SEGMENT_NAME_DIGITS$}{SEGMENT_SUFFIX}")
}

/// The last component of `path`, to name a file system step.
fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

fn io_error(context: impl std::fmt::Display) -> impl FnOnce(io::Error) -> StorageError {
    move |source| StorageError::Io {
        context: context.to_string(),
        source,
    }
}

/// One segment file: consecutive records starting at `first` (truncation records applied).
#[derive(Debug)]
struct Segment {
    first: LogIndex,
    path: PathBuf,
    file: File,
    records: Vec<Record>,
    /// The end of its batches: where the next batch goes, over the end mark that stands there (or
    /// at the end of the file, where there is no mark: after a cut). The file may be longer: the
    /// free space after the mark, preallocated when the segment was created.
    end: u64,
}

impl Segment {
    /// The index after this segment's last record.
    fn next_index(&self) -> LogIndex {
        self.first + self.records.len() as u64
    }

    /// Closes and unlinks the file; returns its path.
    fn delete(self, faults: &Faults) -> Result<PathBuf, StorageError> {
        drop(self.file);
        remove_file(faults, &self.path)?;
        Ok(self.path)
    }
}

/// The storage files of a directory, read but not yet checked (only the snapshot file is).
struct StoredFiles {
    /// The bytes of `hard_state`, if it exists.
    hard_state: Option<Vec<u8>>,
    /// The bytes of `log_meta`, if it exists.
    log_meta: Option<Vec<u8>>,
    /// The bytes of the clean shutdown file, if it exists.
    clean: Option<Vec<u8>>,
    /// The snapshot file: checked whole (read in blocks) by [`SnapshotFile::open`], then kept open.
    snapshot: Option<SnapshotFile>,
    /// The segment files, by first index (their names checked, their contents not read yet).
    segments: Vec<(LogIndex, PathBuf)>,
}

impl StoredFiles {
    /// Reads the storage files of `dir` (segments in `log_dir`). Changes nothing.
    ///
    /// # Errors
    /// [`StorageError::Corrupted`] if the snapshot file is damaged or a file in `log_dir` has the
    /// segment suffix but not a valid name; [`StorageError::Io`] if a file cannot be read.
    fn read(dir: &Path, log_dir: &Path) -> Result<StoredFiles, StorageError> {
        Ok(StoredFiles {
            hard_state: read_optional(&dir.join(HARD_STATE_FILE))?,
            log_meta: read_optional(&dir.join(LOG_META_FILE))?,
            clean: read_optional(&dir.join(CLEAN_FILE))?,
            snapshot: SnapshotFile::open(dir.join(SNAPSHOT_FILE))?,
            segments: list_segments(log_dir)?,
        })
    }

    /// Whether the directory holds no storage file at all: a new storage.
    fn is_empty(&self) -> bool {
        self.hard_state.is_none()
            && self.log_meta.is_none()
            && self.clean.is_none()
            && self.snapshot.is_none()
            && self.segments.is_empty()
    }
}

/// What a crash left unfinished, found by [`Store::read_and_check`] and completed by
/// [`Store::complete_interrupted`]. (A truncation in progress is recorded in the log metadata, which
/// the store holds.)
#[derive(Debug)]
struct Interrupted {
    /// An incomplete batch at the end of the last segment, to cut off.
    torn_tail: Option<TornTail>,
    /// An `install_snapshot` that discards the log, committed (its snapshot file is in place) but
    /// not finished: the log is to be discarded up to this id.
    pending_discard: Option<LogId>,
    /// The log metadata file is missing (creation stopped after the hard state): it is to be
    /// written.
    meta_missing: bool,
    /// The previous run closed the storage cleanly: its record is to be removed before anything is
    /// written.
    clean_shutdown: bool,
}

/// The state of an open storage directory.
#[derive(Debug)]
pub(crate) struct Store {
    dir: PathBuf,
    log_dir: PathBuf,
    opts: Options,
    /// Holds the directory's lock while open.
    lock: Option<File>,
    hard_state: HardState,
    meta: LogMeta,
    /// The stored snapshot, its file open (see [`SnapshotFile`]).
    snapshot: Option<SnapshotFile>,
    segments: Vec<Segment>,
    /// Set when an operation failed half-way: memory and disk may disagree, so nothing more is done.
    failed: Option<String>,
    report: RecoveryReport,
    /// Crash injection for tests (empty otherwise): asked before every file system step.
    faults: Faults,
}

impl Store {
    // ----- opening and recovery -----

    /// Opens (creating if needed) the storage in `dir`: locks it, checks everything, and completes
    /// or rolls back what a crash interrupted (see the crate docs on recovery).
    pub(crate) fn open(dir: &Path, opts: Options) -> Result<Store, StorageError> {
        Self::open_with_faults(dir, opts, Faults::none())
    }

    /// [`Store::open`] that asks `faults` before every file system step (tests crash it there).
    ///
    /// The steps, in order: create the directory if there is none, take its lock, delete temporary
    /// files ([`remove_temp_files`]), read the storage files ([`StoredFiles::read`]); then either
    /// create an empty storage ([`Store::initialize`]) if there were none, or check them
    /// ([`Store::read_and_check`]) and only then change anything ([`Store::complete_interrupted`]).
    pub(crate) fn open_with_faults(
        dir: &Path,
        opts: Options,
        faults: Faults,
    ) -> Result<Store, StorageError> {
        if !dir.is_dir() {
            faults.step(|| format!("create directory {}", file_name(dir)))?;
            fs::create_dir_all(dir)
                .map_err(io_error(format_args!("creating {}", dir.display())))?;
        }
        let lock = acquire_lock(dir)?;
        let mut store = Store {
            dir: dir.to_path_buf(),
            log_dir: dir.join(LOG_DIR),
            opts,
            lock: Some(lock),
            hard_state: HardState::default(),
            meta: LogMeta::default(),
            snapshot: None,
            segments: Vec::new(),
            failed: None,
            report: RecoveryReport::default(),
            faults,
        };

        let removed = &mut store.report.removed_temp_files;
        remove_temp_files(&store.faults, &store.dir, removed)?;
        if store.log_dir.is_dir() {
            remove_temp_files(&store.faults, &store.log_dir, removed)?;
        }

        let files = StoredFiles::read(&store.dir, &store.log_dir)?;
        if files.is_empty() {
            store.initialize()?;
            return Ok(store);
        }
        let interrupted = store.read_and_check(files)?;
        store.complete_interrupted(interrupted)?;
        Ok(store)
    }

    /// Creates an empty storage in a directory that holds no storage file: the log directory, then
    /// the hard state, then the log metadata, each durable before the next (with fsync on). The hard
    /// state goes first: a crash before the log metadata is written leaves a directory that
    /// [`Store::read_and_check`] accepts and [`Store::complete_interrupted`] finishes.
    fn initialize(&mut self) -> Result<(), StorageError> {
        if !self.log_dir.is_dir() {
            self.faults.step(|| format!("create directory {LOG_DIR}"))?;
            fs::create_dir_all(&self.log_dir).map_err(io_error(format_args!(
                "creating {}",
                self.log_dir.display()
            )))?;
        }
        self.sync_dir(&self.dir)?;
        self.write_hard_state(HardState::default())?;
        self.write_meta(LogMeta::default())?;
        self.report.initialized = true;
        Ok(())
    }

    /// Checks `files` and everything they refer to, and loads them: the hard state, the log
    /// metadata, the clean shutdown record, the snapshot and every segment (see the crate docs on
    /// recovery, steps 2 to 4).
    /// Changes nothing on disk: segments are opened for writing but not written. Returns what a
    /// crash left unfinished, for [`Store::complete_interrupted`].
    ///
    /// # Errors
    /// [`StorageError::Corrupted`], naming the file (and byte offset where there is one), if the
    /// hard state is missing, if the log metadata is missing while segments or a snapshot exist, if
    /// a file is damaged in a way a crash cannot explain (anything but an incomplete last batch at
    /// the end of the last segment, and that only without a clean shutdown), if the segments that
    /// matter are not one contiguous run from the purge point to the newest segment the metadata
    /// names (not checked while a discard of the whole log is pending: it deletes every segment), or
    /// if the log does not end where a clean shutdown recorded it; [`StorageError::Io`] if a file
    /// cannot be read.
    fn read_and_check(&mut self, files: StoredFiles) -> Result<Interrupted, StorageError> {
        let hs_path = self.dir.join(HARD_STATE_FILE);
        let meta_path = self.dir.join(LOG_META_FILE);
        self.hard_state = match files.hard_state {
            Some(b) => format::decode_hard_state(&hs_path, &b)?,
            None => {
                return Err(StorageError::Corrupted(format!(
                    "{} is missing, but the directory holds other storage files: refusing to start \
                     with no record of the term and vote",
                    hs_path.display()
                )))
            }
        };
        let meta_missing = files.log_meta.is_none();
        self.meta = match files.log_meta {
            Some(b) => format::decode_log_meta(&meta_path, &b)?,
            // Creation stopped between the hard state and the log metadata: nothing else was ever
            // written.
            None if files.segments.is_empty() && files.snapshot.is_none() => LogMeta::default(),
            None => {
                return Err(StorageError::Corrupted(format!(
                "{} is missing, but the directory holds log segments or a snapshot: refusing to \
                     guess where the log starts",
                meta_path.display()
            )))
            }
        };
        let clean_path = self.dir.join(CLEAN_FILE);
        let clean = match &files.clean {
            Some(b) => Some(format::decode_clean_shutdown(&clean_path, b)?),
            None => None,
        };
        let mut torn_tail = None;
        let count = files.segments.len();
        for (i, (first, path)) in files.segments.into_iter().enumerate() {
            let (segment, tail) = read_segment(first, path, i + 1 == count, clean.is_some())?;
            torn_tail = tail;
            self.segments.push(segment);
        }
        let last_purged = self.meta.last_purged();
        // An install_snapshot that discards the log and was interrupted after its snapshot file was
        // written: the snapshot file is the commit point, the discard is completed afterwards.
        let pending_discard = files
            .snapshot
            .as_ref()
            .filter(|s| s.discards_log())
            .map(|s| s.meta().last_log_id)
            .filter(|id| *id != last_purged && last_purged.index <= id.index);
        self.snapshot = files.snapshot;
        if pending_discard.is_none() {
            self.check_segments_contiguous(&meta_path)?;
        }
        if let Some(clean) = &clean {
            self.check_clean_end(clean, &clean_path)?;
        }
        Ok(Interrupted {
            torn_tail,
            pending_discard,
            meta_missing,
            clean_shutdown: clean.is_some(),
        })
    }

    /// After a clean shutdown, checks that the log ends exactly where it ended then: the same newest
    /// segment, of the same length, the same last entry. (Damage inside the log, its end included,
    /// was refused while the segments were read.) This catches what no segment can show by itself:
    /// complete batches lost from the end of the log, or bytes added after it.
    fn check_clean_end(
        &self,
        clean: &CleanShutdown,
        clean_path: &Path,
    ) -> Result<(), StorageError> {
        let newest = self.meta.last_segment;
        if newest != clean.newest_segment {
            return Err(StorageError::Corrupted(format!(
                "{} names {} as the newest segment, but {} recorded {} at the clean shutdown",
                self.dir.join(LOG_META_FILE).display(),
                describe_segment(newest),
                clean_path.display(),
                describe_segment(clean.newest_segment),
            )));
        }
        if let Some(seg) = newest.and_then(|n| self.segments.iter().find(|s| s.first == n)) {
            let was = clean.newest_segment_len;
            if seg.end != was {
                let what = if seg.end < was {
                    "the end of the log was lost after the shutdown"
                } else {
                    "batches were added after the shutdown"
                };
                return Err(corrupted(
                    &seg.path,
                    seg.end.min(was),
                    format_args!(
                        "the segment's batches end at byte {}, but they ended at byte {was} at the \
                         clean shutdown recorded in {}: {what}",
                        seg.end,
                        clean_path.display()
                    ),
                ));
            }
        }
        let end = self.log_end_up_to(newest.unwrap_or(0));
        if end != clean.last_log_id() {
            return Err(StorageError::Corrupted(format!(
                "the log ends at entry {end}, but it ended at entry {} at the clean shutdown \
                 recorded in {}",
                clean.last_log_id(),
                clean_path.display()
            )));
        }
        Ok(())
    }

    /// Completes what a crash interrupted, as found by [`Store::read_and_check`] (which must have
    /// passed), and records each completion in the recovery report (see the crate docs on recovery,
    /// step 5). In order: cuts the torn tail; discards the log for a pending snapshot install;
    /// completes a truncation recorded in the log metadata, then clears the record; deletes the
    /// segments past the newest one the metadata names (unless the log was just discarded) and the
    /// segments all of whose entries are purged; and rewrites the log metadata if it is missing or
    /// names another newest segment than the one left. Then it reports a log that ends before the
    /// snapshot, and removes the clean shutdown record if there was one (crate docs, step 6).
    ///
    /// What it may change on disk: the end of the last segment (cut at the torn tail, or at a
    /// recorded truncation, then its end mark and free space restored), the set of segment files
    /// (only those deletions), the log metadata, and the clean shutdown record (removed).
    /// It never deletes a record that an append acknowledged, and a crash part-way through leaves a
    /// directory from which the next open reaches the same state.
    ///
    /// # Errors
    /// [`StorageError::Io`] if a file system step fails.
    fn complete_interrupted(&mut self, interrupted: Interrupted) -> Result<(), StorageError> {
        let Interrupted {
            torn_tail,
            pending_discard,
            meta_missing,
            clean_shutdown,
        } = interrupted;
        if let Some(tail) = torn_tail {
            self.cut_torn_tail(tail)?;
        }
        if let Some(id) = pending_discard {
            tracing::info!(dir = %self.dir.display(), snapshot = %id,
                "completing an interrupted snapshot install: discarding the log");
            self.discard_log(id)?;
            self.report.completed_snapshot_install = Some(id);
        }
        if let Some(from) = self.meta.truncate_from {
            tracing::info!(dir = %self.dir.display(), from,
                "completing an interrupted truncation");
            self.truncate_files(from)?;
            self.write_meta(LogMeta {
                truncate_from: None,
                ..self.meta
            })?;
            self.report.completed_truncation = Some(from);
        }
        if pending_discard.is_none() {
            let newest = self.meta.last_segment.unwrap_or(0);
            let keep = self.segments.partition_point(|s| s.first <= newest);
            self.report.removed_unreferenced_segments = self.delete_segments_from(keep)?;
        }
        let removed = self.remove_purged_segments()?;
        self.report.removed_purged_segments = removed;
        let newest = self.segments.last().map(|s| s.first);
        if meta_missing || self.meta.last_segment != newest {
            // Only after the deletions above (an empty newest segment left by a torn first append
            // is one): the record follows the segments that remain.
            self.write_meta(LogMeta {
                last_segment: newest,
                ..self.meta
            })?;
        }
        self.report_log_behind_snapshot();
        if clean_shutdown {
            // Before anything is written: from now on a crash may tear a write again.
            remove_file(&self.faults, &self.dir.join(CLEAN_FILE))?;
            self.sync_dir(&self.dir)?;
            self.report.clean_shutdown = true;
        }
        Ok(())
    }

    /// Records in the report, and logs, a log that ends before the stored snapshot's last entry.
    fn report_log_behind_snapshot(&mut self) {
        let Some(snapshot) = self.snapshot.as_ref().map(|s| s.meta().last_log_id) else {
            return;
        };
        let last_log_id = self.last_log_id();
        if last_log_id.index < snapshot.index {
            tracing::warn!(
                dir = %self.dir.display(),
                last_log_id = %last_log_id,
                snapshot = %snapshot,
                "the log ends at entry {last_log_id}, before the stored snapshot's last entry \
                 {snapshot}: entries the snapshot covers are missing from the end of the log (a \
                 node never truncates them, so they were lost after they were written)"
            );
            self.report.log_behind_snapshot = Some(LogBehindSnapshot {
                last_log_id,
                snapshot,
            });
        }
    }

    /// Truncates the torn tail found by recovery, then gives the segment its end mark and free
    /// space back ([`restore_free_space`]).
    fn cut_torn_tail(&mut self, tail: TornTail) -> Result<(), StorageError> {
        tracing::warn!(
            segment = %tail.segment.display(),
            offset = tail.offset,
            bytes = tail.discarded_bytes,
            written = tail.written_bytes,
            damage = %tail.damage,
            entries = %tail.entries,
            "cutting an incomplete last batch off the log: bytes {}..{} of {} ({}; data in the \
             first {} of them, zeros after), which held {}; no clean shutdown was recorded, so it \
             is taken as the remains of an append that a crash interrupted before it returned",
            tail.offset,
            tail.offset + tail.discarded_bytes,
            tail.segment.display(),
            tail.damage,
            tail.written_bytes,
            tail.entries,
        );
        let sync = self.sync();
        let seg = self
            .segments
            .last_mut()
            .expect("a torn tail is found in the last segment");
        cut_segment(&self.faults, &self.opts, seg, tail.offset, sync)?;
        self.report.torn_tail = Some(tail);
        Ok(())
    }

    /// Checks that the newest segment recorded in the log metadata exists, and that the segments
    /// that matter hold one contiguous run of entries starting at or before the entry after the purge
    /// point. Segments an interrupted purge left (all their records purged), or an interrupted
    /// truncation left (past the newest segment or the recorded truncation) are not checked against
    /// each other: the unlinks of such a step need not reach the disk in order, and recovery deletes
    /// them anyway.
    fn check_segments_contiguous(&self, meta_path: &Path) -> Result<(), StorageError> {
        let last_purged = self.meta.last_purged();
        let truncated = self.meta.truncate_from.unwrap_or(LogIndex::MAX);
        if let Some(newest) = self.meta.last_segment {
            if !self.segments.iter().any(|s| s.first == newest) {
                return Err(StorageError::Corrupted(format!(
                    "{} is missing: {} records it as the newest segment",
                    self.log_dir.join(segment_file_name(newest)).display(),
                    meta_path.display()
                )));
            }
        }
        let newest = self.meta.last_segment.unwrap_or(0);
        let is_leftover = |s: &Segment| s.next_index() <= last_purged.index + 1;
        let leftovers = self.segments.iter().take_while(|s| is_leftover(s)).count();
        let live: Vec<&Segment> = self.segments[leftovers..]
            .iter()
            .take_while(|s| s.first < truncated && s.first <= newest)
            .collect();
        if let Some(s) = live.iter().find(|s| is_leftover(s)) {
            return Err(corrupted(
                &s.path,
                0,
                format_args!(
                    "segment holds only entries up to {}, at or below the purge point {}, yet \
                     follows a segment holding later entries: segments overlap",
                    s.next_index().saturating_sub(1),
                    last_purged.index
                ),
            ));
        }
        for pair in live.windows(2) {
            if pair[1].first != pair[0].next_index() {
                return Err(corrupted(
                    &pair[1].path,
                    0,
                    format_args!(
                        "segment starts at index {} but the previous segment ({}) ends at index \
                         {}: a segment is missing",
                        pair[1].first,
                        pair[0].path.display(),
                        pair[0].next_index() - 1
                    ),
                ));
            }
        }
        if let Some(first) = live.first() {
            if first.first > last_purged.index + 1 {
                return Err(corrupted(
                    &first.path,
                    0,
                    format_args!(
                        "the log resumes at index {} but the last purged index is {}: the \
                         segments holding the entries in between are missing",
                        first.first, last_purged.index
                    ),
                ));
            }
        }
        if last_purged.index > 0 {
            if let Some(term) = self.term_at_physical(last_purged.index) {
                if term != last_purged.term {
                    return Err(StorageError::Corrupted(format!(
                        "{} says entry {} (the last purged) has term {}, but the log holds it with \
                         term {term}",
                        meta_path.display(),
                        last_purged.index,
                        last_purged.term
                    )));
                }
            }
        }
        Ok(())
    }

    // ----- accessors -----

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn report(&self) -> &RecoveryReport {
        &self.report
    }

    /// The crash injection of this store (tests only).
    #[cfg(test)]
    pub(crate) fn faults(&self) -> &Faults {
        &self.faults
    }

    pub(crate) fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// Fails if an earlier operation failed half-way or the storage was closed.
    pub(crate) fn check_usable(&self) -> Result<(), StorageError> {
        match &self.failed {
            None => Ok(()),
            Some(why) => Err(StorageError::Other(
                format!(
                    "the storage in {} is stopped ({why}); reopen it to recover from what is on disk",
                    self.dir.display()
                )
                .into(),
            )),
        }
    }

    /// Closes the storage: records a clean shutdown if no write failed half-way (see
    /// [`Store::write_clean_shutdown`]), then releases the directory lock. The storage refuses every
    /// call afterwards; closing it again does nothing.
    ///
    /// # Errors
    /// If an earlier write failed, or recording the clean shutdown fails: no clean shutdown is then
    /// recorded, and the next open recovers as after a crash. The lock is released either way.
    pub(crate) fn close(&mut self) -> Result<(), StorageError> {
        if self.lock.is_none() {
            return Ok(());
        }
        let recorded = match &self.failed {
            None => self.write_clean_shutdown(),
            Some(why) => Err(StorageError::Other(
                format!(
                    "no clean shutdown recorded for {}: the storage had stopped ({why})",
                    self.dir.display()
                )
                .into(),
            )),
        };
        self.release();
        recorded
    }

    /// Releases the directory lock without recording a clean shutdown, as the death of the process
    /// would; the storage refuses every call afterwards.
    pub(crate) fn release(&mut self) {
        self.lock = None;
        self.segments.clear();
        if self.failed.is_none() {
            self.failed = Some("closed".to_string());
        }
    }

    /// Records that every write this storage made is complete: the clean shutdown file, replaced
    /// atomically (with fsync on, durable when this returns, and only after every write before it
    /// was: each was fsynced before it returned). It holds where the log ends, which the next open
    /// checks. The next open removes it before anything is written.
    fn write_clean_shutdown(&self) -> Result<(), StorageError> {
        let newest = self.meta.last_segment;
        let newest_len = newest
            .and_then(|n| self.segments.iter().find(|s| s.first == n))
            .map_or(0, |s| s.end);
        let last = self.last_log_id();
        let clean = CleanShutdown {
            last_log_term: last.term,
            last_log_index: last.index,
            newest_segment: newest,
            newest_segment_len: newest_len,
        };
        self.write_atomic(
            &self.dir,
            CLEAN_FILE,
            &[&format::encode_clean_shutdown(&clean)],
        )
    }

    fn sync(&self) -> bool {
        self.opts.fsync == FsyncPolicy::Always
    }

    pub(crate) fn last_purged(&self) -> LogId {
        self.meta.last_purged()
    }

    pub(crate) fn last_log_id(&self) -> LogId {
        self.log_end_up_to(LogIndex::MAX)
    }

    /// The last entry of the log held by the segments starting at or before `newest` (the purge
    /// point if they hold none after it).
    fn log_end_up_to(&self, newest: LogIndex) -> LogId {
        let last_purged = self.meta.last_purged();
        let physical = self
            .segments
            .iter()
            .rev()
            .filter(|s| s.first <= newest)
            .find_map(|s| {
                s.records
                    .last()
                    .map(|r| LogId::new(r.term, s.next_index() - 1))
            });
        match physical {
            Some(id) if id.index > last_purged.index => id,
            _ => last_purged,
        }
    }

    pub(crate) fn log_state(&self) -> LogState {
        LogState {
            last_purged: self.last_purged(),
            last_log_id: self.last_log_id(),
        }
    }

    /// The position of `index` in the segments, if a segment holds it (purged or not).
    fn locate(&self, index: LogIndex) -> Option<(usize, usize)> {
        let si = self
            .segments
            .partition_point(|s| s.first <= index)
            .checked_sub(1)?;
        let seg = &self.segments[si];
        let ri = (index - seg.first) as usize;
        (ri < seg.records.len()).then_some((si, ri))
    }

    fn term_at_physical(&self, index: LogIndex) -> Option<Term> {
        self.locate(index)
            .map(|(si, ri)| self.segments[si].records[ri].term)
    }

    /// The term of the entry at `index`, if the log holds it (not purged).
    fn term_at(&self, index: LogIndex) -> Option<Term> {
        if index <= self.meta.last_purged_index || index > self.last_log_id().index {
            return None;
        }
        self.term_at_physical(index)
    }

    /// Runs a step that changes files; if it fails, the storage stops (see [`Store::check_usable`]).
    fn guard<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let r = f(self);
        if let Err(e) = &r {
            tracing::error!(dir = %self.dir.display(), error = %e, "storage write failed; the storage stops");
            self.failed = Some(format!("an earlier write failed: {e}"));
        }
        r
    }

    // ----- file helpers -----

    fn sync_dir(&self, dir: &Path) -> Result<(), StorageError> {
        if self.sync() {
            self.faults
                .step(|| format!("fsync directory {}", file_name(dir)))?;
            sync_dir(dir).map_err(io_error(format_args!(
                "syncing directory {}",
                dir.display()
            )))?;
        }
        Ok(())
    }

    /// Replaces `dir/name` with the concatenation of `parts` atomically: write `name.tmp`, fsync it,
    /// rename it over `name`, fsync the directory.
    fn write_atomic(&self, dir: &Path, name: &str, parts: &[&[u8]]) -> Result<(), StorageError> {
        self.write_atomic_allocated(dir, name, parts, 0)
    }

    /// [`Store::write_atomic`], with the file allocated to at least `allocate` bytes (zeros after
    /// `parts`) before it is fsynced: see [`allocate_file`].
    fn write_atomic_allocated(
        &self,
        dir: &Path,
        name: &str,
        parts: &[&[u8]],
        allocate: u64,
    ) -> Result<(), StorageError> {
        let tmp = dir.join(format!("{name}{TMP_SUFFIX}"));
        let path = dir.join(name);
        let tmp_name = || format!("{name}{TMP_SUFFIX}");
        self.faults.step(|| format!("create {}", tmp_name()))?;
        let mut f =
            File::create(&tmp).map_err(io_error(format_args!("creating {}", tmp.display())))?;
        self.faults.step(|| format!("write {}", tmp_name()))?;
        for part in parts {
            f.write_all(part)
                .map_err(io_error(format_args!("writing {}", tmp.display())))?;
        }
        let written: usize = parts.iter().map(|p| p.len()).sum();
        if allocate > written as u64 {
            self.faults.step(|| format!("allocate {}", tmp_name()))?;
            allocate_file(&f, allocate, &tmp)?;
        }
        if self.sync() {
            self.faults.step(|| format!("fsync {}", tmp_name()))?;
            f.sync_all()
                .map_err(io_error(format_args!("syncing {}", tmp.display())))?;
        }
        drop(f);
        self.faults
            .step(|| format!("rename {} to {name}", tmp_name()))?;
        fs::rename(&tmp, &path).map_err(io_error(format_args!(
            "renaming {} to {}",
            tmp.display(),
            path.display()
        )))?;
        self.sync_dir(dir)
    }

    fn write_hard_state(&mut self, hs: HardState) -> Result<(), StorageError> {
        self.write_atomic(
            &self.dir,
            HARD_STATE_FILE,
            &[&format::encode_hard_state(&hs)],
        )?;
        self.hard_state = hs;
        Ok(())
    }

    fn write_meta(&mut self, meta: LogMeta) -> Result<(), StorageError> {
        self.write_atomic(&self.dir, LOG_META_FILE, &[&format::encode_log_meta(&meta)])?;
        self.meta = meta;
        Ok(())
    }

    // ----- operations -----

    pub(crate) fn save_hard_state(&mut self, hs: HardState) -> Result<(), StorageError> {
        self.guard(|s| s.write_hard_state(hs))
    }

    pub(crate) fn check_append(&self, first: LogIndex) -> Result<(), StorageError> {
        let expected = self.last_log_id().index + 1;
        if first != expected {
            return Err(StorageError::InvalidRequest(format!(
                "append expected index {expected}, got {first}"
            )));
        }
        Ok(())
    }

    /// Writes a batch of frames, and the end mark after it, with one write and one fsync. `batch`
    /// is given back as it came.
    pub(crate) fn append(&mut self, batch: &mut Batch) -> Result<(), StorageError> {
        if batch.records.is_empty() {
            return Ok(());
        }
        self.check_append(batch.first)?;
        self.guard(|s| s.write_batch(batch))
    }

    fn write_batch(&mut self, batch: &mut Batch) -> Result<(), StorageError> {
        let roll = match self.segments.last() {
            None => true,
            Some(s) => {
                if s.next_index() != batch.first {
                    return Err(StorageError::Other(
                        format!(
                            "internal error: the last segment {} ends at index {} but the log ends \
                             at {}",
                            s.path.display(),
                            s.next_index() - 1,
                            batch.first - 1
                        )
                        .into(),
                    ));
                }
                s.end >= self.opts.segment_size && !s.records.is_empty()
            }
        };
        if roll {
            self.create_segment(batch.first)?;
        }
        debug_assert_eq!(
            self.meta.last_segment,
            self.segments.last().map(|s| s.first)
        );
        let sync = self.sync();
        let seg = self.segments.last_mut().expect("a segment to append to");
        write_and_sync(&self.faults, seg, &mut batch.bytes, sync)?;
        let mut offset = seg.end + format::BATCH_HEADER_LEN as u64;
        for (k, &(len, term)) in batch.records.iter().enumerate() {
            seg.records.push(Record {
                offset,
                len,
                term,
                first_in_batch: k == 0,
            });
            offset += format::FRAME_HEADER_LEN as u64 + u64::from(len);
        }
        offset += format::BATCH_TRAILER_LEN as u64;
        debug_assert_eq!(offset, seg.end + batch.bytes.len() as u64);
        seg.end = offset;
        Ok(())
    }

    /// Creates a new, empty segment starting at `first`: the header and the end mark after it are
    /// written to a temporary file, which is allocated to the segment size (if
    /// [`Options::preallocate`] is on), synced and renamed into place, so a segment file always has
    /// a whole header and a marked end.
    fn create_segment(&mut self, first: LogIndex) -> Result<(), StorageError> {
        let name = segment_file_name(first);
        let header = format::segment_header(first);
        let mark = format::end_mark(format::SEGMENT_HEADER_LEN as u64);
        let allocate = self.opts.preallocated_len();
        self.write_atomic_allocated(&self.log_dir, &name, &[&header, &mark], allocate)?;
        let path = self.log_dir.join(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_error(format_args!("opening {}", path.display())))?;
        // Only now that the file exists may the metadata name it; records are appended only after.
        self.write_meta(LogMeta {
            last_segment: Some(first),
            ..self.meta
        })?;
        self.segments.push(Segment {
            first,
            path,
            file,
            records: Vec::new(),
            end: format::SEGMENT_HEADER_LEN as u64,
        });
        Ok(())
    }

    /// Reads and checks the entries `start..end`.
    pub(crate) fn entries<C: DeserializeOwned>(
        &mut self,
        start: LogIndex,
        end: LogIndex,
    ) -> Result<Vec<Entry<C>>, StorageError> {
        let last_purged = self.meta.last_purged_index;
        if start <= last_purged {
            return Err(StorageError::Compacted {
                compacted_upto: last_purged,
                requested: start,
            });
        }
        let last = self.last_log_id().index;
        if end > last + 1 {
            return Err(StorageError::InvalidRequest(format!(
                "entries {start}..{end} requested but the log ends at {last}"
            )));
        }
        let mut out = Vec::with_capacity(end.saturating_sub(start) as usize);
        let mut index = start;
        while index < end {
            let (si, ri) = self
                .locate(index)
                .expect("every index after the purge point and up to the last is in a segment");
            let seg = &mut self.segments[si];
            let n = ((end - index) as usize).min(seg.records.len() - ri);
            let records = &seg.records[ri..ri + n];
            let from = records[0].offset;
            let to = records[n - 1].frame_end();
            let mut buf = vec![0u8; (to - from) as usize];
            let ctx = || format!("reading {}", seg.path.display());
            seg.file
                .seek(SeekFrom::Start(from))
                .map_err(io_error(ctx()))?;
            seg.file.read_exact(&mut buf).map_err(io_error(ctx()))?;
            for (k, r) in records.iter().enumerate() {
                let at = index + k as u64;
                let payload =
                    format::parse_frame(&buf[(r.offset - from) as usize..]).map_err(|d| {
                        corrupted(&seg.path, r.offset, format_args!("{d} (entry {at})"))
                    })?;
                if payload.len() != r.len as usize {
                    return Err(corrupted(
                        &seg.path,
                        r.offset,
                        format_args!("entry {at} changed length since the storage was opened"),
                    ));
                }
                let (id, entry_payload) = format::decode_record::<C>(payload).map_err(|e| {
                    corrupted(
                        &seg.path,
                        r.offset,
                        format_args!(
                            "entry {at} has a valid checksum but does not decode ({e}); was it \
                             written with another command type?"
                        ),
                    )
                })?;
                if id != LogId::new(r.term, at) {
                    return Err(corrupted(
                        &seg.path,
                        r.offset,
                        format_args!(
                            "record holds entry {id} where entry {}-{at} belongs",
                            r.term
                        ),
                    ));
                }
                out.push(Entry {
                    log_id: id,
                    payload: entry_payload.into(),
                });
            }
            index += n as u64;
        }
        Ok(out)
    }

    pub(crate) fn truncate(&mut self, from: LogIndex) -> Result<(), StorageError> {
        let last_purged = self.meta.last_purged_index;
        if from <= last_purged {
            return Err(StorageError::InvalidRequest(format!(
                "truncate from {from} reaches into the purged prefix (up to {last_purged})"
            )));
        }
        if from > self.last_log_id().index {
            return Ok(());
        }
        self.guard(|s| {
            let first_step = s.truncation_record(from);
            if let Some(meta) = first_step {
                s.write_meta(meta)?;
            }
            s.truncate_files(from)?;
            if s.meta.truncate_from.is_some() {
                s.write_meta(LogMeta {
                    truncate_from: None,
                    ..s.meta
                })?;
            }
            // A segment cut down to purged entries only is useless now (as after a purge).
            s.remove_purged_segments()?;
            debug_assert_eq!(s.meta.last_segment, s.segments.last().map(|seg| seg.first));
            Ok(())
        })
    }

    /// What a truncation at `from` records in the log metadata before it touches any segment, if
    /// anything. Cutting the tail of one segment (the usual case: the conflict is in the last
    /// segment) is atomic on its own and records nothing. Deleting segments from the end is made
    /// atomic by recording the new newest segment first (recovery deletes the segments past it).
    /// Both at once: the truncation itself is recorded too, and recovery completes it.
    fn truncation_record(&self, from: LogIndex) -> Option<LogMeta> {
        let keep = self.segments.partition_point(|seg| seg.first < from);
        let deletes = self.segments.len() > keep;
        let cuts = keep > 0 && self.segments[keep - 1].next_index() > from;
        // The newest segment afterwards: the one holding `from - 1`, unless that entry is the purge
        // point (then every segment left holds only purged entries, and goes too).
        let newest = if keep == 0 || from == self.meta.last_purged_index + 1 {
            None
        } else {
            Some(self.segments[keep - 1].first)
        };
        let marker = deletes && cuts && newest.is_some();
        (marker || newest != self.meta.last_segment).then_some(LogMeta {
            truncate_from: marker.then_some(from),
            last_segment: newest,
            ..self.meta
        })
    }

    /// Deletes every record at `from` and after: whole segments from the last one backwards (so the
    /// segments left are contiguous at every moment), then the entries from `from` on in the segment
    /// holding it. Each of these steps is atomic. The last one cuts the file if `from` starts a
    /// batch (only complete batches are left); otherwise cutting would leave that batch incomplete,
    /// so it appends a truncation record instead (one write and one fsync, complete or not at all
    /// like any batch), leaving the deleted records' bytes in the file until the segment is purged.
    fn truncate_files(&mut self, from: LogIndex) -> Result<(), StorageError> {
        let keep = self.segments.partition_point(|s| s.first < from);
        self.delete_segments_from(keep)?;
        if keep > 0 {
            let sync = self.sync();
            let seg = &mut self.segments[keep - 1];
            if seg.next_index() > from {
                let ri = (from - seg.first) as usize;
                match seg.records[ri].batch_start() {
                    Some(offset) => cut_segment(&self.faults, &self.opts, seg, offset, sync)?,
                    None => {
                        let mut record = format::encode_truncation(from);
                        write_and_sync(&self.faults, seg, &mut record, sync)?;
                        seg.end += record.len() as u64;
                    }
                }
                seg.records.truncate(ri);
            }
        }
        Ok(())
    }

    pub(crate) fn purge(&mut self, upto: LogIndex) -> Result<(), StorageError> {
        if upto <= self.meta.last_purged_index {
            return Ok(());
        }
        let last = self.last_log_id().index;
        if upto > last {
            return Err(StorageError::InvalidRequest(format!(
                "purge up to {upto} is past the last index {last}"
            )));
        }
        let term = self
            .term_at(upto)
            .expect("the log holds every index after the purge point");
        self.guard(|s| {
            // The metadata is the commit point; deleting the segments it makes useless is redone by
            // recovery if a crash interrupts it.
            let all_purged = s
                .segments
                .last()
                .is_some_and(|seg| seg.next_index() <= upto + 1);
            s.write_meta(LogMeta {
                last_purged_term: term,
                last_purged_index: upto,
                truncate_from: None,
                last_segment: if all_purged {
                    None
                } else {
                    s.meta.last_segment
                },
            })?;
            s.remove_purged_segments()?;
            Ok(())
        })
    }

    /// Deletes the segments all of whose records are at or below the purge point, from the first.
    fn remove_purged_segments(&mut self) -> Result<Vec<PathBuf>, StorageError> {
        let last_purged = self.meta.last_purged_index;
        let n = self
            .segments
            .iter()
            .take_while(|s| s.next_index() <= last_purged + 1)
            .count();
        let faults = &self.faults;
        self.segments.drain(..n).map(|s| s.delete(faults)).collect()
    }

    /// Deletes the segments from position `keep` on, the last first (so the segments left are
    /// contiguous at every moment), then fsyncs the log directory; returns their paths.
    fn delete_segments_from(&mut self, keep: usize) -> Result<Vec<PathBuf>, StorageError> {
        let mut removed = Vec::new();
        while self.segments.len() > keep {
            let seg = self.segments.pop().expect("a segment to delete");
            removed.push(seg.delete(&self.faults)?);
        }
        if !removed.is_empty() {
            self.sync_dir(&self.log_dir)?;
        }
        Ok(removed)
    }

    /// Stores `snapshot` unless the stored one is at the same index or later (then nothing is
    /// written). The snapshot file is the commit point: written whole under a temporary name and
    /// renamed into place; a snapshot that discards the log records so in that file, and the discard
    /// that follows is completed by recovery if a crash interrupts it.
    pub(crate) fn install_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StorageError> {
        let id = snapshot.meta.last_log_id;
        if let Some(stored) = &self.snapshot {
            if id.index <= stored.meta().last_log_id.index {
                // A snapshot never moves backwards.
                return Ok(());
            }
        }
        let last_purged = self.last_purged();
        let holds_it = self.term_at(id.index) == Some(id.term);
        let at_base = id == last_purged;
        let discards_log = !holds_it && !at_base && id.index >= last_purged.index;
        let (head, tail, layout) =
            format::snapshot_file_parts(&snapshot.meta, discards_log, &snapshot.data);
        self.guard(|s| {
            // The old file is closed before the new one is renamed over it (not every platform
            // renames over an open file). Should the write fail, the storage stops anyway.
            s.snapshot = None;
            s.write_atomic(&s.dir, SNAPSHOT_FILE, &[&head, &snapshot.data, &tail])?;
            s.snapshot = Some(SnapshotFile::written(s.dir.join(SNAPSHOT_FILE), layout)?);
            if discards_log {
                s.discard_log(id)?;
            }
            Ok(())
        })
    }

    /// If the log ends before the stored snapshot's last entry (see [`LogBehindSnapshot`]), discards
    /// the whole log and makes that entry the purge point, so that the log goes on after the
    /// snapshot, and returns it; otherwise does nothing and returns `None`. The log metadata is the
    /// commit point: it is replaced first (the new purge point, no newest segment), after which every
    /// segment holds only entries at or below the purge point and is deleted, by recovery if a crash
    /// comes first.
    pub(crate) fn reset_log_to_snapshot(&mut self) -> Result<Option<LogId>, StorageError> {
        let Some(id) = self.snapshot.as_ref().map(|s| s.meta().last_log_id) else {
            return Ok(None);
        };
        if self.last_log_id().index >= id.index {
            return Ok(None);
        }
        self.guard(|s| {
            tracing::warn!(dir = %s.dir.display(), snapshot = %id, last_log_id = %s.last_log_id(),
                "discarding the log, which ends before the stored snapshot: the log goes on after it");
            s.write_meta(LogMeta {
                last_purged_term: id.term,
                last_purged_index: id.index,
                truncate_from: None,
                last_segment: None,
            })?;
            s.delete_segments_from(0)?;
            Ok(Some(id))
        })
    }

    /// Deletes every segment (from the last) and makes `id` the purge point.
    fn discard_log(&mut self, id: LogId) -> Result<(), StorageError> {
        self.delete_segments_from(0)?;
        self.write_meta(LogMeta {
            last_purged_term: id.term,
            last_purged_index: id.index,
            truncate_from: None,
            last_segment: None,
        })
    }

    /// The stored snapshot, read whole and its checksum checked again.
    pub(crate) fn snapshot(&self) -> Result<Option<Snapshot>, StorageError> {
        self.snapshot.as_ref().map(SnapshotFile::read).transpose()
    }

    /// Up to `max_len` bytes of the stored snapshot's data from `offset`, if the stored snapshot is
    /// `id`: one read of that range from the open snapshot file.
    pub(crate) fn snapshot_chunk(
        &self,
        id: LogId,
        offset: u64,
        max_len: usize,
    ) -> Result<Option<SnapshotChunk>, StorageError> {
        match &self.snapshot {
            Some(f) if f.meta().last_log_id == id => f.chunk(offset, max_len).map(Some),
            _ => Ok(None),
        }
    }
}

// ----- free helpers -----

/// Writes `bytes` at the end of the batches of `seg`, over its end mark, followed by the end mark
/// of their new end, with one `write` (so a process that dies during it leaves a prefix: the mark
/// is overwritten first); then, if `sync`, `fdatasync`s it. `bytes` is given back as it came (the
/// mark is added to it for the write and removed after). Leaves the segment's end and records to
/// the caller.
fn write_and_sync(
    faults: &Faults,
    seg: &mut Segment,
    bytes: &mut Vec<u8>,
    sync: bool,
) -> Result<(), StorageError> {
    let ctx = || format!("appending to {}", seg.path.display());
    faults.step(|| format!("write {}", file_name(&seg.path)))?;
    let len = bytes.len();
    bytes.extend_from_slice(&format::end_mark(seg.end + len as u64));
    let written = write_all_at(&mut seg.file, bytes, seg.end);
    bytes.truncate(len);
    written.map_err(io_error(ctx()))?;
    if sync {
        sync_segment(faults, seg, SyncScope::Data)?;
    }
    Ok(())
}

/// What [`sync_segment`] makes durable.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SyncScope {
    /// The data (`fdatasync`): what an append needs, its file's length unchanged or not.
    Data,
    /// The data and all of the metadata (`fsync`): after a change of length or allocation.
    All,
}

/// Fsyncs the file of `seg` (`what` says how much), one crash-injection step.
fn sync_segment(faults: &Faults, seg: &Segment, what: SyncScope) -> Result<(), StorageError> {
    faults.step(|| format!("fsync {}", file_name(&seg.path)))?;
    let synced = match what {
        SyncScope::Data => seg.file.sync_data(),
        SyncScope::All => seg.file.sync_all(),
    };
    synced.map_err(io_error(format_args!("syncing {}", seg.path.display())))
}

/// Cuts the file of `seg` at `offset`, the end of one of its batches (only complete batches are
/// left), fsynced if `sync`; then gives it its end mark and free space back
/// ([`restore_free_space`]).
fn cut_segment(
    faults: &Faults,
    opts: &Options,
    seg: &mut Segment,
    offset: u64,
    sync: bool,
) -> Result<(), StorageError> {
    faults.step(|| format!("truncate {} to {offset} bytes", file_name(&seg.path)))?;
    seg.file
        .set_len(offset)
        .map_err(io_error(format_args!("truncating {}", seg.path.display())))?;
    if sync {
        sync_segment(faults, seg, SyncScope::All)?;
    }
    seg.end = offset;
    restore_free_space(faults, opts, seg, sync)
}

/// Writes all of `bytes` at `offset`: one positioned write (`pwrite`) where the platform has one,
/// so an append costs no `lseek`.
#[cfg(unix)]
fn write_all_at(file: &mut File, bytes: &[u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, bytes, offset)
}

#[cfg(not(unix))]
fn write_all_at(file: &mut File, bytes: &[u8], offset: u64) -> io::Result<()> {
    file.seek(SeekFrom::Start(offset))?;
    file.write_all(bytes)
}

/// Puts an end mark and free space back after the batches of `seg`, whose file a cut has just made
/// end there (and, with `sync`, made durable): the mark is written (and fsynced) first, then the
/// file is allocated to the segment size (and fsynced), so that appends to it keep writing inside
/// its length. A crash at any step leaves the file ending at its batches, a torn mark, or a marked
/// end followed by zeros: none of them is read as a loss. Does nothing if preallocation is off or
/// the batches already reach the segment size.
fn restore_free_space(
    faults: &Faults,
    opts: &Options,
    seg: &mut Segment,
    sync: bool,
) -> Result<(), StorageError> {
    let size = opts.preallocated_len();
    if seg.end + format::END_MARK_LEN as u64 >= size {
        return Ok(());
    }
    write_and_sync(faults, seg, &mut Vec::new(), sync)?;
    faults.step(|| format!("allocate {}", file_name(&seg.path)))?;
    allocate_file(&seg.file, size, &seg.path)?;
    if sync {
        sync_segment(faults, seg, SyncScope::All)?;
    }
    Ok(())
}

/// Allocates `file` (at `path`, for error messages) to at least `len` bytes, the new bytes reading
/// as zeros: `fallocate` where the file system has it, so that later writes inside that length
/// neither allocate blocks nor change the file's length. A file system that cannot preallocate
/// (`EOPNOTSUPP`) is not an error: the file then grows with each write, as without preallocation.
///
/// # Errors
/// [`StorageError::Io`] for any other failure (a full disk among them: better refused here than
/// in the middle of appends).
fn allocate_file(file: &File, len: u64, path: &Path) -> Result<(), StorageError> {
    #[cfg(target_os = "linux")]
    let allocated = rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, len)
        .map_err(io::Error::from);
    #[cfg(not(target_os = "linux"))]
    let allocated = <File as fs4::FileExt>::allocate(file, len);
    match allocated {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::Unsupported => {
            tracing::debug!(file = %path.display(), error = %e,
                "the file system cannot preallocate; the segment will grow with each append");
            Ok(())
        }
        Err(e) => Err(io_error(format_args!(
            "allocating {len} bytes for {}",
            path.display()
        ))(e)),
    }
}

/// How an error message names a segment by its first index.
fn describe_segment(first: Option<LogIndex>) -> String {
    first.map_or_else(|| "no segment".to_string(), segment_file_name)
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    // Directories cannot be opened (and need not be synced) this way elsewhere.
    Ok(())
}

/// Tries to lock `file`, retrying a lock held elsewhere [`LOCK_RETRIES`] times with waits doubling
/// from [`LOCK_RETRY_FIRST_WAIT`] to [`LOCK_RETRY_MAX_WAIT`] (see there for why). Blocks for at most
/// the sum of those waits; returns the last attempt's outcome.
fn try_lock_retrying(file: &File) -> Result<(), fs4::TryLockError> {
    let mut attempt = 0;
    loop {
        match <File as fs4::FileExt>::try_lock(file) {
            Err(fs4::TryLockError::WouldBlock) if attempt < LOCK_RETRIES => {
                let wait = LOCK_RETRY_FIRST_WAIT.saturating_mul(1 << attempt);
                std::thread::sleep(wait.min(LOCK_RETRY_MAX_WAIT));
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Opens (creating it if needed) the lock file of `dir`, locks it (see [`try_lock_retrying`]) and
/// writes this process's pid into it, for the error a second open reports.
///
/// # Errors
/// [`StorageError::Io`] of kind [`io::ErrorKind::WouldBlock`], naming the directory and the holder,
/// if the lock is held; [`StorageError::Io`] if the file cannot be opened, locked or written.
fn acquire_lock(dir: &Path) -> Result<File, StorageError> {
    let path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_error(format_args!("opening {}", path.display())))?;
    match try_lock_retrying(&file) {
        Ok(()) => {}
        Err(fs4::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let holder = if holder.is_empty() {
                "another process".to_string()
            } else {
                holder.to_string()
            };
            return Err(StorageError::Io {
                context: format!(
                    "opening {}: the directory is locked ({} holds {}); a storage directory \
                     must be open in one FileStorage at a time",
                    dir.display(),
                    holder,
                    path.display()
                ),
                source: io::Error::new(io::ErrorKind::WouldBlock, "storage directory is locked"),
            });
        }
        Err(fs4::TryLockError::Error(e)) => {
            return Err(io_error(format_args!("locking {}", path.display()))(e))
        }
    }
    // Who holds the lock, for the error above (informational only).
    let note = format!("pid {}\n", std::process::id());
    file.set_len(0)
        .and_then(|()| file.seek(SeekFrom::Start(0)))
        .and_then(|_| file.write_all(note.as_bytes()))
        .map_err(io_error(format_args!("writing {}", path.display())))?;
    Ok(file)
}

fn remove_file(faults: &Faults, path: &Path) -> Result<(), StorageError> {
    faults.step(|| format!("unlink {}", file_name(path)))?;
    fs::remove_file(path).map_err(io_error(format_args!("removing {}", path.display())))
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, StorageError> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(format_args!("reading {}", path.display()))(e)),
    }
}

/// Removes files left by a write that a crash interrupted before its rename (never part of the
/// durable state).
fn remove_temp_files(
    faults: &Faults,
    dir: &Path,
    removed: &mut Vec<PathBuf>,
) -> Result<(), StorageError> {
    let entries = fs::read_dir(dir).map_err(io_error(format_args!("listing {}", dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(io_error(format_args!("listing {}", dir.display())))?;
        let path = entry.path();
        let is_tmp = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(TMP_SUFFIX));
        if is_tmp && path.is_file() {
            remove_file(faults, &path)?;
            removed.push(path);
        }
    }
    Ok(())
}

/// The segment files in `log_dir`, by first index.
fn list_segments(log_dir: &Path) -> Result<Vec<(LogIndex, PathBuf)>, StorageError> {
    let entries = match fs::read_dir(log_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error(format_args!("listing {}", log_dir.display()))(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_error(format_args!("listing {}", log_dir.display())))?;
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(stem) = name.strip_suffix(SEGMENT_SUFFIX) else {
            continue;
        };
        match stem.parse::<LogIndex>() {
            Ok(first) if stem.len() == SEGMENT_NAME_DIGITS && first > 0 => out.push((first, path)),
            _ => {
                return Err(StorageError::Corrupted(format!(
                    "{}: not a valid segment file name (expected {SEGMENT_NAME_DIGITS} digits and \
                     {SEGMENT_SUFFIX})",
                    path.display()
                )))
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Opens the segment file `path` (named for index `first`), reads it whole and checks it with
/// [`scan::scan_segment`]. Returns the segment (its file left open for writing, its end the end of
/// its complete batches) and the incomplete last batch to cut, if any.
fn read_segment(
    first: LogIndex,
    path: PathBuf,
    is_last: bool,
    clean_shutdown: bool,
) -> Result<(Segment, Option<TornTail>), StorageError> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(io_error(format_args!("opening {}", path.display())))?;
    let mut data = Vec::new();
    file.read_to_end(&mut data)
        .map_err(io_error(format_args!("reading {}", path.display())))?;
    let scanned = scan::scan_segment(&path, first, &data, is_last, clean_shutdown)?;
    let segment = Segment {
        first,
        path,
        file,
        records: scanned.records,
        end: scanned.end,
    };
    Ok((segment, scanned.torn_tail))
}

#[cfg(test)]
mod tests {
    //! Crashes in the middle of multi-step operations, simulated by running only their first steps.

    use raft_core::{EntryPayload, Membership, SnapshotMeta};

    use super::*;
    use crate::format::encode_batch;

    fn opts() -> Options {
        // Two or three entries per segment.
        Options::default()
            .segment_size(120)
            .fsync(FsyncPolicy::Never)
    }

    fn entry(term: Term, index: LogIndex) -> Entry<u64> {
        Entry {
            log_id: LogId::new(term, index),
            payload: EntryPayload::Command(index * 100 + term).into(),
        }
    }

    /// A store holding entries 1..=n of term 1.
    fn store_with(dir: &Path, n: u64) -> Store {
        let mut s = Store::open(dir, opts()).unwrap();
        for i in 1..=n {
            s.append(&mut encode_batch(i, &[entry(1, i)]).unwrap())
                .unwrap();
        }
        assert!(
            n < 10 || s.segments.len() >= 4,
            "{} segments",
            s.segments.len()
        );
        s
    }

    fn reopen(dir: &Path) -> Store {
        Store::open(dir, opts()).unwrap()
    }

    fn log(s: &mut Store) -> Vec<Entry<u64>> {
        let st = s.log_state();
        s.entries(st.last_purged.index + 1, st.last_log_id.index + 1)
            .unwrap()
    }

    fn count_segment_files(dir: &Path) -> usize {
        fs::read_dir(dir.join(LOG_DIR)).unwrap().count()
    }

    #[test]
    fn interrupted_purge_is_completed() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = store_with(dir.path(), 12);
        let files = count_segment_files(dir.path());
        // The commit point only: the segments are not deleted.
        s.write_meta(LogMeta {
            last_purged_term: 1,
            last_purged_index: 7,
            ..s.meta
        })
        .unwrap();
        s.release();
        drop(s);
        assert_eq!(count_segment_files(dir.path()), files);
        let mut s = reopen(dir.path());
        assert!(!s.report().removed_purged_segments.is_empty());
        assert_eq!(s.last_purged(), LogId::new(1, 7));
        assert_eq!(
            log(&mut s),
            (8..=12).map(|i| entry(1, i)).collect::<Vec<_>>()
        );
        assert!(count_segment_files(dir.path()) < files);
    }

    #[test]
    fn interrupted_truncation_is_completed_at_every_step() {
        // Cuts inside a segment and at segment boundaries, from near the start and the end.
        let probe = store_with(tempfile::tempdir().unwrap().path(), 12);
        let boundary = probe.segments[2].first;
        drop(probe);
        for from in [2, 3, 5, 8, boundary, boundary + 1, 12] {
            let mut steps = 0;
            loop {
                let dir = tempfile::tempdir().unwrap();
                let mut s = store_with(dir.path(), 12);
                // The first step of `truncate`, then `steps` of the physical ones: segment
                // deletions from the back, then the cut.
                let record = s.truncation_record(from);
                if let Some(meta) = record {
                    s.write_meta(meta).unwrap();
                }
                let keep = s.segments.partition_point(|seg| seg.first < from);
                let deletions = s.segments.len() - keep;
                let mut done = 0;
                while done < steps && s.segments.len() > keep {
                    let seg = s.segments.pop().unwrap();
                    fs::remove_file(&seg.path).unwrap();
                    done += 1;
                }
                let finished = steps > deletions;
                if finished {
                    s.truncate_files(from).unwrap();
                }
                s.release();
                drop(s);
                let mut s = reopen(dir.path());
                let what = format!("truncate({from}) interrupted after {steps} steps");
                if record.and_then(|m| m.truncate_from).is_some() {
                    assert_eq!(s.report().completed_truncation, Some(from), "{what}");
                }
                assert_eq!(s.meta.truncate_from, None);
                // All or nothing: nothing only if the crash came before the truncation's first
                // (and only) step, the cut.
                let end = if record.is_none() && !finished {
                    13
                } else {
                    from
                };
                assert_eq!(
                    log(&mut s),
                    (1..end).map(|i| entry(1, i)).collect::<Vec<_>>(),
                    "{what}"
                );
                // The log goes on from there, and a clean reopen does not truncate again.
                if end == 13 {
                    s.truncate(from).unwrap();
                }
                s.append(&mut encode_batch(from, &[entry(2, from)]).unwrap())
                    .unwrap();
                s.close().unwrap();
                drop(s);
                let mut s = reopen(dir.path());
                assert!(s.report().is_clean(), "{what}: {:?}", s.report());
                assert_eq!(log(&mut s).last(), Some(&entry(2, from)));
                if finished {
                    break;
                }
                steps += 1;
            }
        }
    }

    #[test]
    fn interrupted_snapshot_install_is_completed() {
        // A snapshot at 3-5 conflicts with the log's entry 1-5: installing it discards the log. The
        // crash comes after the snapshot file is in place and `deleted` segments are gone.
        for deleted in 0..=6 {
            let dir = tempfile::tempdir().unwrap();
            let mut s = store_with(dir.path(), 12);
            let id = LogId::new(3, 5);
            let meta = SnapshotMeta {
                last_log_id: id,
                membership: Membership::new([1, 2, 3]),
            };
            let bytes = format::encode_snapshot(&meta, true, &[1, 2, 3]);
            s.write_atomic(&s.dir.clone(), SNAPSHOT_FILE, &[&bytes])
                .unwrap();
            for _ in 0..deleted {
                if let Some(seg) = s.segments.pop() {
                    fs::remove_file(&seg.path).unwrap();
                }
            }
            s.release();
            drop(s);
            let mut s = reopen(dir.path());
            assert_eq!(s.report().completed_snapshot_install, Some(id));
            assert_eq!(
                s.log_state(),
                LogState {
                    last_purged: id,
                    last_log_id: id
                }
            );
            assert_eq!(log(&mut s), vec![]);
            assert_eq!(s.snapshot().unwrap().unwrap().data, vec![1, 2, 3]);
            // Appending after it survives reopening: the discard is not redone.
            s.append(&mut encode_batch(6, &[entry(3, 6)]).unwrap())
                .unwrap();
            s.close().unwrap();
            drop(s);
            let mut s = reopen(dir.path());
            assert!(s.report().is_clean(), "{:?}", s.report());
            assert_eq!(log(&mut s), vec![entry(3, 6)]);
        }
    }

    #[test]
    fn unlinks_that_reached_the_disk_out_of_order_are_tolerated_where_harmless() {
        // Purge: the segments before the purge point come back except one in the middle.
        let dir = tempfile::tempdir().unwrap();
        let mut s = store_with(dir.path(), 12);
        let paths: Vec<PathBuf> = s.segments.iter().map(|seg| seg.path.clone()).collect();
        let saved: Vec<Vec<u8>> = paths.iter().map(|p| fs::read(p).unwrap()).collect();
        let upto = s.segments[3].first; // inside the fourth segment
        s.purge(upto).unwrap();
        s.release();
        drop(s);
        fs::write(&paths[0], &saved[0]).unwrap();
        fs::write(&paths[2], &saved[2]).unwrap();
        let mut s = reopen(dir.path());
        assert_eq!(s.report().removed_purged_segments.len(), 2);
        assert_eq!(
            log(&mut s),
            (upto + 1..=12).map(|i| entry(1, i)).collect::<Vec<_>>()
        );
        drop(s);

        // Truncation recorded: of the segments after the cut, a middle one is gone, the last not.
        let dir = tempfile::tempdir().unwrap();
        let mut s = store_with(dir.path(), 12);
        let from = s.segments[1].first + 1;
        assert!(s.segments.len() >= 4);
        let record = s.truncation_record(from).unwrap();
        assert_eq!(record.truncate_from, Some(from));
        s.write_meta(record).unwrap();
        fs::remove_file(&s.segments[2].path).unwrap();
        s.release();
        drop(s);
        let mut s = reopen(dir.path());
        assert_eq!(s.report().completed_truncation, Some(from));
        assert_eq!(
            log(&mut s),
            (1..from).map(|i| entry(1, i)).collect::<Vec<_>>()
        );
        drop(s);

        // Without a recorded truncation the same gap is a missing segment.
        let dir = tempfile::tempdir().unwrap();
        let mut s = store_with(dir.path(), 12);
        fs::remove_file(&s.segments[2].path).unwrap();
        s.release();
        drop(s);
        let e = Store::open(dir.path(), opts()).unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
    }

    #[test]
    fn a_segment_created_just_before_a_crash_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = store_with(dir.path(), 5);
        let next = s.last_log_id().index + 1;
        // The new segment's file exists, the metadata does not name it yet.
        let log_dir = s.log_dir.clone();
        s.write_atomic(
            &log_dir,
            &segment_file_name(next),
            &[&format::segment_header(next)],
        )
        .unwrap();
        s.release();
        drop(s);
        let mut s = reopen(dir.path());
        assert_eq!(s.report().removed_unreferenced_segments.len(), 1);
        assert_eq!(
            log(&mut s),
            (1..=5).map(|i| entry(1, i)).collect::<Vec<_>>()
        );
        s.append(&mut encode_batch(6, &[entry(1, 6)]).unwrap())
            .unwrap();
        s.close().unwrap();
        drop(s);
        let mut s = reopen(dir.path());
        assert!(s.report().is_clean());
        assert_eq!(log(&mut s).len(), 6);
    }

    #[test]
    fn interrupted_creation_is_completed() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = Store::open(dir.path(), opts()).unwrap();
            assert!(s.report().initialized);
            s.release();
        }
        // A crash after the hard state was written, before the log metadata.
        fs::remove_file(dir.path().join(LOG_META_FILE)).unwrap();
        let mut s = reopen(dir.path());
        assert_eq!(s.log_state(), LogState::default());
        assert!(dir.path().join(LOG_META_FILE).exists());
        assert_eq!(log(&mut s), vec![]);
    }

    #[test]
    fn failed_write_stops_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = store_with(dir.path(), 5);
        // Make the next segment impossible to create: a directory where its temporary file goes.
        let next = s.last_log_id().index + 1;
        s.opts = s.opts.clone().segment_size(1);
        fs::create_dir(
            dir.path()
                .join(LOG_DIR)
                .join(format!("{}{TMP_SUFFIX}", segment_file_name(next))),
        )
        .unwrap();
        let e = s.append(&mut encode_batch(next, &[entry(1, next)]).unwrap());
        assert!(matches!(e, Err(StorageError::Io { .. })), "{e:?}");
        assert!(s.check_usable().is_err());
        assert!(s
            .append(&mut encode_batch(next, &[entry(1, next)]).unwrap())
            .is_err());
        // Closing it records no clean shutdown: the next open checks the log as after a crash.
        let e = s.close().unwrap_err();
        assert!(e.to_string().contains("no clean shutdown"), "{e}");
        assert!(!dir.path().join(CLEAN_FILE).exists());
        let s = reopen(dir.path());
        assert!(!s.report().clean_shutdown);
    }

    #[test]
    fn a_clean_close_is_recorded_and_removed_by_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = store_with(dir.path(), 5);
        s.close().unwrap();
        s.close().unwrap(); // again: nothing more
        assert!(dir.path().join(CLEAN_FILE).exists());
        let mut s = reopen(dir.path());
        assert!(s.report().clean_shutdown);
        assert!(!dir.path().join(CLEAN_FILE).exists(), "removed at open");
        assert_eq!(log(&mut s).len(), 5);
        s.release();
        let s = reopen(dir.path());
        assert!(!s.report().clean_shutdown);
    }
}
