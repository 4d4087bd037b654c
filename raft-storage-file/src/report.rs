//! What [`FileStorage::open`](crate::FileStorage::open) found and did: the [`RecoveryReport`] and
//! the description of a cut tail ([`TornTail`]). Which damage is cut and which is refused, and why,
//! is in the [crate docs](crate#recovery-and-why-it-is-correct).

use std::ops::RangeInclusive;
use std::path::PathBuf;

use raft_core::{LogId, LogIndex};

/// What was wrong with the incomplete last batch that [`FileStorage::open`](crate::FileStorage::open)
/// cut off the end of the log. Every variant is a way for a batch to be *incomplete* (its trailer
/// never reached the disk); damage inside a complete batch is never cut (see the
/// [crate docs](crate#recovery-and-why-it-is-correct)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TailDamage {
    /// Only zero bytes follow the last complete batch: a file system that extended the file before
    /// the data of the last write reached the disk.
    Zeroed,
    /// The file ends inside the next batch's header.
    ShortHeader,
    /// The next batch's header is not valid, and every byte after its first bytes is zero: a header
    /// whose write reached the disk only in part, the rest of the file extended with zeros.
    TornHeader,
    /// The batch's header is valid, but the file ends before the end that header announces.
    ShortBatch,
    /// The batch's header is valid and the file reaches the end it announces, but the trailer that
    /// ends the batch is zero bytes (or its first bytes, then zero bytes), and only zero bytes
    /// follow it: the last part of the write never reached the disk.
    MissingTrailer,
    /// The end mark after the last complete batch reached the disk only in part (its first bytes,
    /// then zero bytes or the end of the file): the append that wrote that batch and mark never
    /// returned. Nothing after the batch held an entry.
    TornEndMark,
}

impl std::fmt::Display for TailDamage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TailDamage::Zeroed => "only zero bytes follow the last complete batch",
            TailDamage::ShortHeader => "the file ends inside a batch header",
            TailDamage::TornHeader => {
                "a batch header reached the disk only in part (zero bytes follow its first bytes)"
            }
            TailDamage::ShortBatch => "the file ends before the end its batch header announces",
            TailDamage::MissingTrailer => "the batch's trailer is missing (zero bytes)",
            TailDamage::TornEndMark => {
                "the end mark after the last batch reached the disk only in part"
            }
        })
    }
}

/// The entries that the bytes of a cut tail held, as far as those bytes tell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CutEntries {
    /// The cut bytes cannot have held an entry: they are too few to hold a batch header and the
    /// start of a record, or the batch they began was a truncation record (a batch of no entries).
    None,
    /// The batch's header survived and announced exactly these entries.
    Announced(RangeInclusive<LogIndex>),
    /// No valid batch header survived, so which entries the bytes held is unknown: at most these,
    /// from the index after the last complete batch, as many as there is room for in the cut bytes
    /// (each record takes at least [`MIN_RECORD_BYTES`] bytes).
    AtMost(RangeInclusive<LogIndex>),
}

/// The fewest bytes one record takes in a segment: its frame's header (length and checksum, 8
/// bytes), its term and index (one byte each at the least) and its payload (one byte at the least).
/// [`CutEntries::AtMost`] counts with it.
pub const MIN_RECORD_BYTES: u64 = 11;

impl std::fmt::Display for CutEntries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CutEntries::None => f.write_str("no entry"),
            CutEntries::Announced(r) => write!(
                f,
                "entries {}..={}, announced by the batch's header",
                r.start(),
                r.end()
            ),
            CutEntries::AtMost(r) => write!(
                f,
                "at most entries {}..={} (no valid batch header survived)",
                r.start(),
                r.end()
            ),
        }
    }
}

impl CutEntries {
    /// The indexes of the entries the cut bytes held or may have held; `None` if they cannot have
    /// held any.
    pub fn range(&self) -> Option<RangeInclusive<LogIndex>> {
        match self {
            CutEntries::None => None,
            CutEntries::Announced(r) | CutEntries::AtMost(r) => Some(r.clone()),
        }
    }
}

/// An incomplete last batch that [`FileStorage::open`](crate::FileStorage::open) cut off the end of
/// the log. Only ever the end of the last segment, and only when the previous run did not record a
/// clean shutdown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// The segment file (always the last one).
    pub segment: PathBuf,
    /// The byte offset where the incomplete batch started, the end of the last complete one: where
    /// the file was cut (with preallocation, an end mark and free space are put back after it).
    pub offset: u64,
    /// How many bytes were cut (the file was `offset + discarded_bytes` bytes long).
    pub discarded_bytes: u64,
    /// How many of the cut bytes come before the zero bytes that end the file: what the torn
    /// write may have reached. The rest were zeros (a preallocated segment's free space, or where
    /// the file grew and the data did not follow).
    pub written_bytes: u64,
    /// How the batch was incomplete.
    pub damage: TailDamage,
    /// The entries the cut bytes held, as far as they tell.
    pub entries: CutEntries,
}

/// The stored snapshot covers entries past the end of the log: the log ends at `last_log_id`, the
/// snapshot at `snapshot`, later.
///
/// Under the driver this means entries were lost after they were written: the driver never
/// truncates entries a snapshot covers (they are committed), and an `install_snapshot` that the
/// log does not reach discards the log. (Lost in a way no segment shows: complete batches gone from
/// the end of the log, which after a crash look like appends that never happened; see the
/// [crate docs](crate#recovery-and-why-it-is-correct).) The storage API itself allows the state:
/// `truncate` below the snapshot's index is not refused. The entries up to the snapshot are covered
/// by it; [`FileStorage::reset_log_to_snapshot`](crate::FileStorage::reset_log_to_snapshot) makes
/// the log go on after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogBehindSnapshot {
    /// The last entry of the log (the purge point if the log is empty).
    pub last_log_id: LogId,
    /// The last entry the stored snapshot covers.
    pub snapshot: LogId,
}

/// What [`FileStorage::open`](crate::FileStorage::open) found and did to recover.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The directory held no storage: it was created.
    pub initialized: bool,
    /// The previous run closed the storage cleanly: it recorded, after its last write, that every
    /// write it made was complete. Damage anywhere was then refused, the end of the log included,
    /// and the newest segment was checked to have the length that was recorded.
    pub clean_shutdown: bool,
    /// An incomplete last batch, cut off the end of the log (only without a clean shutdown).
    pub torn_tail: Option<TornTail>,
    /// Temporary files of interrupted writes, deleted.
    pub removed_temp_files: Vec<PathBuf>,
    /// Segments an interrupted purge had left, deleted.
    pub removed_purged_segments: Vec<PathBuf>,
    /// Segments past the newest one recorded in `log_meta`, deleted: left by an interrupted
    /// truncation, or created by an append that a crash stopped before it wrote anything.
    pub removed_unreferenced_segments: Vec<PathBuf>,
    /// An interrupted truncation, completed: entries from this index on were deleted.
    pub completed_truncation: Option<LogIndex>,
    /// An interrupted `install_snapshot` that discards the log, completed: the log now starts after
    /// this id.
    pub completed_snapshot_install: Option<LogId>,
    /// The log ends before the stored snapshot's last entry: a state, reported here, not a repair
    /// (nothing was changed; see [`LogBehindSnapshot`]).
    pub log_behind_snapshot: Option<LogBehindSnapshot>,
}

impl RecoveryReport {
    /// Whether the open found nothing to repair: no tail cut, no leftover file, no interrupted
    /// operation. (It does not say whether the previous run shut down cleanly, see
    /// [`RecoveryReport::clean_shutdown`], nor whether the log is behind the snapshot, see
    /// [`RecoveryReport::log_behind_snapshot`].)
    pub fn is_clean(&self) -> bool {
        self.torn_tail.is_none()
            && self.removed_temp_files.is_empty()
            && self.removed_purged_segments.is_empty()
            && self.removed_unreferenced_segments.is_empty()
            && self.completed_truncation.is_none()
            && self.completed_snapshot_install.is_none()
    }

    /// The entries this open cut off the end of the log, or may have: `None` if it cut nothing that
    /// held an entry. See [`CutEntries`] for how the range is known.
    ///
    /// What a cut means: the storage cuts only an *incomplete* last batch, and only when the previous
    /// run did not record a clean shutdown. Every `append` writes one batch and returns only after
    /// it is complete and fsynced, so on a disk that keeps what was fsynced, a cut batch belongs to
    /// an `append` that never returned: nothing cut was acknowledged by this storage. A disk that
    /// loses the end of a complete last batch (its trailer, or everything from its header on) after
    /// a crash makes the same bytes, which the storage cannot tell apart; a caller that must not
    /// trust the disk that far treats any `Some` as entries it may have acknowledged.
    pub fn cut_entries(&self) -> Option<RangeInclusive<LogIndex>> {
        self.torn_tail.as_ref().and_then(|t| t.entries.range())
    }
}
