//! Reading one segment file's bytes back into records, batch by batch, and judging its end: the one
//! place that decides which damage recovery cuts (an incomplete last batch, and only without a clean
//! shutdown) and which it refuses (everything else). The rule and its argument are in the
//! [crate docs](crate#recovery-and-why-it-is-correct); this module only reads bytes, it changes
//! nothing.

use std::path::Path;

use raft_core::{LogIndex, StorageError, Term};

use crate::format::{
    self, corrupted, BatchHeader, TrailerState, BATCH_HEADER_LEN, BATCH_TRAILER_LEN, END_MARK_LEN,
    FRAME_HEADER_LEN, SEGMENT_HEADER_LEN,
};
use crate::report::{CutEntries, TailDamage, TornTail, MIN_RECORD_BYTES};

/// Where one record sits in its segment.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Record {
    /// Byte offset of the frame in the segment file.
    pub offset: u64,
    /// Length of the frame's payload.
    pub len: u32,
    /// The entry's term (its index follows from its position in the segment's records).
    pub term: Term,
    /// Whether the record is the first of its batch: the batch's header is then right before it,
    /// and cutting the file there leaves only complete batches.
    pub first_in_batch: bool,
}

impl Record {
    /// The offset just past the record's frame.
    pub(crate) fn frame_end(&self) -> u64 {
        self.offset + FRAME_HEADER_LEN as u64 + u64::from(self.len)
    }

    /// The offset of the header of the batch the record starts, if it starts one.
    pub(crate) fn batch_start(&self) -> Option<u64> {
        self.first_in_batch
            .then(|| self.offset - BATCH_HEADER_LEN as u64)
    }
}

/// A segment read back: its live records (consecutive indexes from its first index, truncation
/// records applied), where its complete batches end, and the incomplete last batch to cut, if any.
#[derive(Debug)]
pub(crate) struct ScannedSegment {
    pub records: Vec<Record>,
    /// The end of the last complete batch: where the next append writes (the end mark stands
    /// there, or the file ends there once a torn tail is cut).
    pub end: u64,
    pub torn_tail: Option<TornTail>,
}

/// What follows the complete batches read so far.
enum Next {
    /// A complete batch (its trailer is valid), ending at this offset.
    Complete(BatchHeader, usize),
    /// The end mark of this offset, then only zero bytes (free space) to the end of the file: the
    /// batches end here.
    End,
    /// An incomplete batch: it may be cut, if it is the end of the log of a storage that did not
    /// shut down cleanly.
    Incomplete(TailDamage, CutEntries),
}

/// Reads the segment `data`, found in the file `path` whose name says it starts at `first`, and
/// checks it whole: its header, then every batch. Every complete batch must be intact; the bytes
/// after the last complete batch may be an incomplete batch only if `is_last` (appends write to the
/// last segment only) and not `clean_shutdown` (every write was complete then).
///
/// # Errors
/// [`StorageError::Corrupted`], naming the file and the byte offset, for anything else: a damaged
/// segment header, damage inside a complete batch (a record, the trailer, the header of a batch
/// followed by more than a header's bytes), a batch or record at the wrong index, bytes after an
/// incomplete batch, an incomplete batch that may not be cut.
pub(crate) fn scan_segment(
    path: &Path,
    first: LogIndex,
    data: &[u8],
    is_last: bool,
    clean_shutdown: bool,
) -> Result<ScannedSegment, StorageError> {
    let declared = format::parse_segment_header(path, data)?;
    if declared != first {
        return Err(corrupted(
            path,
            format::SEGMENT_FIRST_INDEX_AT as u64,
            format_args!(
                "the header says the segment starts at index {declared}, its name says {first}"
            ),
        ));
    }
    let mut records = Vec::new();
    let mut pos = SEGMENT_HEADER_LEN;
    let mut torn_tail = None;
    let data_end = end_of_data(data);
    while pos < data.len() {
        let expected = first + records.len() as u64;
        match next_batch(path, data, data_end, pos, first, expected)? {
            Next::Complete(header, end) => {
                read_batch(path, data, pos, &header, first, &mut records)?;
                pos = end;
            }
            Next::End => break,
            Next::Incomplete(damage, entries) => {
                if !is_last {
                    return Err(corrupted(
                        path,
                        pos as u64,
                        format_args!(
                            "{damage}, in a segment that is not the last one (appends write to the \
                             last segment only, so no crash leaves an incomplete batch here)"
                        ),
                    ));
                }
                if clean_shutdown {
                    return Err(corrupted(
                        path,
                        pos as u64,
                        format_args!(
                            "{damage}, after a clean shutdown (every write was complete when the \
                             storage was closed, so this is damage, not a torn write)"
                        ),
                    ));
                }
                torn_tail = Some(TornTail {
                    segment: path.to_path_buf(),
                    offset: pos as u64,
                    discarded_bytes: (data.len() - pos) as u64,
                    written_bytes: data_end.saturating_sub(pos) as u64,
                    damage,
                    entries,
                });
                break;
            }
        }
    }
    Ok(ScannedSegment {
        records,
        end: pos as u64,
        torn_tail,
    })
}

/// The length of `data` without the zero bytes that end it: one pass from the end, over the free
/// space of a preallocated segment (megabytes), done once per segment. Compares 16 bytes at a time,
/// so that it stays quick in unoptimized builds too.
fn end_of_data(data: &[u8]) -> usize {
    let whole = data.len() - data.len() % 16;
    if let Some(i) = data[whole..].iter().rposition(|&b| b != 0) {
        return whole + i + 1;
    }
    let zero_chunks = data[..whole]
        .rchunks_exact(16)
        .take_while(|c| u128::from_ne_bytes((*c).try_into().expect("16 bytes")) == 0)
        .count();
    let nonzero_chunk_end = whole - 16 * zero_chunks;
    data[..nonzero_chunk_end]
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |i| i + 1)
}

/// Judges the bytes at `pos`, where a batch starts (the end of the last complete batch), in a
/// segment starting at `seg_first` whose next entry is `expected`; `data_end` is where the zero
/// bytes that end `data` start ([`end_of_data`]).
fn next_batch(
    path: &Path,
    data: &[u8],
    data_end: usize,
    pos: usize,
    seg_first: LogIndex,
    expected: LogIndex,
) -> Result<Next, StorageError> {
    let rest = &data[pos..];
    // How many bytes of `rest` come before the zero bytes that end it.
    let written = data_end.saturating_sub(pos);
    if format::is_end_mark(rest, pos as u64) {
        // The free space after the mark is zeros until the next append writes over the mark. Data
        // there means the mark is stale (a write at its offset was lost) or was put there by
        // damage; either way the end of the log cannot be told, so it is refused, not cut.
        if written <= END_MARK_LEN {
            return Ok(Next::End);
        }
        let free = &rest[END_MARK_LEN..];
        let first_data = free.iter().position(|&b| b != 0).unwrap_or(0);
        return Err(corrupted(
            path,
            (pos + END_MARK_LEN + first_data) as u64,
            format_args!(
                "data in the free space after the end mark at offset {pos} (an append writes over \
                 the mark before anything after it, so only zero bytes may follow it)"
            ),
        ));
    }
    let unknown = || unknown_entries(expected, rest.len() as u64);
    if written == 0 {
        return Ok(Next::Incomplete(TailDamage::Zeroed, unknown()));
    }
    if format::is_torn_prefix(&rest[..written], &format::end_mark(pos as u64)) {
        // The mark's first bytes, then zeros or nothing: the write of the batch before it (complete)
        // and of this mark never finished. A batch written after it would have overwritten it.
        return Ok(Next::Incomplete(TailDamage::TornEndMark, CutEntries::None));
    }
    if rest.len() < BATCH_HEADER_LEN {
        return Ok(Next::Incomplete(TailDamage::ShortHeader, unknown()));
    }
    let Some(header) = format::parse_batch_header(rest) else {
        if written <= BATCH_HEADER_LEN {
            return Ok(Next::Incomplete(TailDamage::TornHeader, unknown()));
        }
        return Err(corrupted(
            path,
            pos as u64,
            format_args!(
                "damaged batch header (bad magic or checksum) followed by {} more bytes of data \
                 (a torn write leaves a header cut short or followed by zero bytes only)",
                written - BATCH_HEADER_LEN
            ),
        ));
    };
    check_batch_index(path, pos, &header, seg_first, expected)?;
    let announced = || match header.entries() {
        Some(r) => CutEntries::Announced(r),
        None => CutEntries::None,
    };
    let end = header
        .batch_len()
        .and_then(|len| (pos as u64).checked_add(len))
        .and_then(|end| usize::try_from(end).ok())
        .filter(|&end| end <= data.len());
    let Some(end) = end else {
        return Ok(Next::Incomplete(TailDamage::ShortBatch, announced()));
    };
    let trailer_at = end - BATCH_TRAILER_LEN;
    match format::trailer_state(&data[trailer_at..end], &header) {
        TrailerState::Valid => Ok(Next::Complete(header, end)),
        TrailerState::Missing if pos + written <= end => {
            Ok(Next::Incomplete(TailDamage::MissingTrailer, announced()))
        }
        TrailerState::Missing => Err(corrupted(
            path,
            trailer_at as u64,
            format_args!(
                "the batch at offset {pos} has no trailer (zero bytes), yet {} bytes of data \
                 follow it (a torn write leaves only zero bytes, or nothing, after its missing \
                 trailer)",
                pos + written - end
            ),
        )),
        TrailerState::Damaged => Err(corrupted(
            path,
            trailer_at as u64,
            format_args!(
                "damaged trailer of the batch at offset {pos} (neither its trailer nor zero bytes)"
            ),
        )),
    }
}

/// What may have been cut when no valid batch header says: nothing if `len` bytes cannot hold a
/// header and the start of a record, else at most as many entries from `expected` as could start in
/// them.
fn unknown_entries(expected: LogIndex, len: u64) -> CutEntries {
    let room = len.saturating_sub(BATCH_HEADER_LEN as u64);
    if room == 0 {
        return CutEntries::None;
    }
    let at_most = room.div_ceil(MIN_RECORD_BYTES);
    CutEntries::AtMost(expected..=expected.saturating_add(at_most - 1))
}

/// Checks that a valid batch header at `pos` names the right indexes: a batch of entries starts at
/// `expected`; a truncation record deletes from an index after the segment's first (the truncation
/// of a segment's first entry deletes the segment instead) and before `expected`, and has no
/// records.
fn check_batch_index(
    path: &Path,
    pos: usize,
    header: &BatchHeader,
    seg_first: LogIndex,
    expected: LogIndex,
) -> Result<(), StorageError> {
    if header.count > 0 {
        if header.first != expected {
            return Err(corrupted(
                path,
                pos as u64,
                format_args!(
                    "batch of entries {}..={} where index {expected} belongs",
                    header.first,
                    header.first.saturating_add(u64::from(header.count) - 1)
                ),
            ));
        }
        return Ok(());
    }
    if header.records_len != 0 || header.first <= seg_first || header.first >= expected {
        return Err(corrupted(
            path,
            pos as u64,
            format_args!(
                "truncation record from index {} ({} bytes of records) where the segment holds \
                 entries {seg_first}..{expected}",
                header.first, header.records_len
            ),
        ));
    }
    Ok(())
}

/// Reads the records of the complete batch at `pos` into `records` (the live records of the segment
/// starting at `seg_first`), or applies it if it is a truncation record. Every record must be
/// intact and hold the index its position implies, and the records must fill exactly the length the
/// header announces.
fn read_batch(
    path: &Path,
    data: &[u8],
    pos: usize,
    header: &BatchHeader,
    seg_first: LogIndex,
    records: &mut Vec<Record>,
) -> Result<(), StorageError> {
    if header.count == 0 {
        records.truncate((header.first - seg_first) as usize);
        return Ok(());
    }
    let start = pos + BATCH_HEADER_LEN;
    // Within the data: the batch is complete, its end is at most the file's length.
    let stop = start + header.records_len as usize;
    let trailer_at = stop;
    let mut at = start;
    for (k, index) in (header.first..).take(header.count as usize).enumerate() {
        let payload = format::parse_frame(&data[at..stop]).map_err(|damage| {
            corrupted(
                path,
                at as u64,
                format_args!(
                    "{damage} (entry {index}), inside a complete batch (its trailer at offset \
                     {trailer_at} shows the write completed): damage, not a torn write"
                ),
            )
        })?;
        let Some(id) = format::record_log_id(payload) else {
            return Err(corrupted(
                path,
                at as u64,
                "record has a valid checksum but no readable term and index",
            ));
        };
        if id.index != index {
            return Err(corrupted(
                path,
                at as u64,
                format_args!("record holds entry {id} where index {index} belongs"),
            ));
        }
        records.push(Record {
            offset: at as u64,
            len: payload.len() as u32,
            term: id.term,
            first_in_batch: k == 0,
        });
        at += FRAME_HEADER_LEN + payload.len();
    }
    if at != stop {
        return Err(corrupted(
            path,
            at as u64,
            format_args!(
                "the batch at offset {pos} announces {} records ending at offset {stop}, but they \
                 end here",
                header.count
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use raft_core::{Entry, EntryPayload, LogId};

    use super::*;
    use crate::format::{encode_batch, encode_truncation, end_mark, segment_header};

    fn batch(first: LogIndex, n: u64) -> Vec<u8> {
        let entries: Vec<Entry<u64>> = (first..first + n)
            .map(|i| Entry {
                log_id: LogId::new(1, i),
                payload: EntryPayload::Command(i).into(),
            })
            .collect();
        encode_batch(first, &entries).unwrap().bytes
    }

    fn scan(data: &[u8], is_last: bool, clean: bool) -> Result<ScannedSegment, StorageError> {
        scan_segment(Path::new("seg"), 1, data, is_last, clean)
    }

    fn indexes(s: &ScannedSegment) -> usize {
        s.records.len()
    }

    #[test]
    fn truncation_records_replace_the_end_of_the_log() {
        let mut data = segment_header(1);
        data.extend(batch(1, 5));
        data.extend(encode_truncation(3));
        data.extend(batch(3, 4));
        let s = scan(&data, true, true).unwrap();
        assert_eq!(indexes(&s), 6);
        assert!(s.torn_tail.is_none());
        assert_eq!(s.end, data.len() as u64);
        let firsts: Vec<bool> = s.records.iter().map(|r| r.first_in_batch).collect();
        assert_eq!(firsts, [true, false, true, false, false, false]);
        assert!(s.records.windows(2).all(|w| w[0].offset < w[1].offset));

        // A truncation record at the segment's first index, or at its end, is never written.
        for from in [1, 6, 7] {
            let mut bad = segment_header(1);
            bad.extend(batch(1, 5));
            bad.extend(encode_truncation(from));
            let e = scan(&bad, true, false).unwrap_err().to_string();
            assert!(e.contains("truncation record"), "{from}: {e}");
        }
    }

    #[test]
    fn the_end_of_the_data_is_found_across_chunk_boundaries() {
        for len in [0, 1, 15, 16, 17, 31, 32, 33, 100] {
            assert_eq!(end_of_data(&vec![0u8; len]), 0, "{len}");
            for at in 0..len {
                let mut data = vec![0u8; len];
                data[at] = 9;
                assert_eq!(end_of_data(&data), at + 1, "{len} {at}");
                if at > 0 {
                    data[0] = 1;
                    assert_eq!(end_of_data(&data), at + 1, "{len} {at}");
                }
            }
        }
    }

    #[test]
    fn how_much_an_unknown_cut_may_have_held() {
        assert_eq!(unknown_entries(5, 0), CutEntries::None);
        assert_eq!(
            unknown_entries(5, BATCH_HEADER_LEN as u64),
            CutEntries::None
        );
        assert_eq!(
            unknown_entries(5, BATCH_HEADER_LEN as u64 + 1),
            CutEntries::AtMost(5..=5)
        );
        assert_eq!(
            unknown_entries(5, BATCH_HEADER_LEN as u64 + 2 * MIN_RECORD_BYTES + 1),
            CutEntries::AtMost(5..=7)
        );
    }

    #[test]
    fn bytes_after_a_batch_without_trailer_are_refused() {
        let mut data = segment_header(1);
        let mut b = batch(1, 3);
        let n = b.len();
        b[n - BATCH_TRAILER_LEN..].fill(0);
        data.extend(b);
        let s = scan(&data, true, false).unwrap();
        assert_eq!(s.torn_tail.unwrap().damage, TailDamage::MissingTrailer);
        // Zero bytes after it are the free space of a preallocated segment; data is not.
        data.extend([0u8; 64]);
        let s = scan(&data, true, false).unwrap();
        assert_eq!(s.torn_tail.unwrap().damage, TailDamage::MissingTrailer);
        data.extend([7u8]);
        let e = scan(&data, true, false).unwrap_err().to_string();
        assert!(e.contains("65 bytes of data follow it"), "{e}");
    }

    /// A segment as the store writes it: the end mark after the last batch, then free space.
    fn marked(batches: &[Vec<u8>], free: usize) -> Vec<u8> {
        let mut data = segment_header(1);
        for b in batches {
            data.extend(b);
        }
        data.extend(end_mark(data.len() as u64));
        data.extend(vec![0u8; free]);
        data
    }

    #[test]
    fn the_end_mark_ends_the_batches_and_only_free_space_may_follow_it() {
        for free in [0, 1, 4096] {
            let data = marked(&[batch(1, 3), batch(4, 2)], free);
            for clean in [false, true] {
                let s = scan(&data, true, clean).unwrap();
                assert_eq!(indexes(&s), 5);
                assert!(s.torn_tail.is_none());
                assert_eq!(s.end, (data.len() - free - END_MARK_LEN) as u64);
            }
        }
        // An empty segment: its header and mark.
        let s = scan(&marked(&[], 100), false, true).unwrap();
        assert_eq!((indexes(&s), s.end), (0, SEGMENT_HEADER_LEN as u64));

        // Data in the free space: the mark is stale, or damage put it there.
        let mut data = marked(&[batch(1, 3)], 200);
        let at = data.len() - 50;
        data[at] = 1;
        let e = scan(&data, true, false).unwrap_err().to_string();
        assert!(e.contains("free space after the end mark"), "{e}");
        assert!(e.contains(&format!("offset {at}")), "{e}");

        // A mark that names another offset (moved, or left by an older write) is no mark: what
        // follows the batches is then a torn header, followed by data.
        let mut data = marked(&[batch(1, 3)], 0);
        let at = data.len() - END_MARK_LEN;
        data[at..].copy_from_slice(&end_mark(at as u64 + 1));
        let s = scan(&data, true, false).unwrap();
        assert_eq!(s.torn_tail.unwrap().damage, TailDamage::ShortHeader);

        // The mark written only in part, with or without free space after it: cut, no entries.
        for free in [0, 100] {
            for k in 1..END_MARK_LEN {
                let mut data = marked(&[batch(1, 3)], free);
                let at = data.len() - free - END_MARK_LEN;
                data[at + k..at + END_MARK_LEN].fill(0);
                if free == 0 {
                    data.truncate(at + k);
                }
                let tail = scan(&data, true, false).unwrap().torn_tail.unwrap();
                assert_eq!(
                    (tail.offset, tail.damage),
                    (at as u64, TailDamage::TornEndMark)
                );
                assert_eq!(tail.entries, CutEntries::None);
            }
        }

        // Zero bytes where the mark should be: a lost mark and a lost batch look the same, so the
        // zeros are cut and reported as possibly holding entries.
        let mut data = marked(&[batch(1, 3)], 500);
        let at = data.len() - 500 - END_MARK_LEN;
        data[at..at + END_MARK_LEN].fill(0);
        let tail = scan(&data, true, false).unwrap().torn_tail.unwrap();
        assert_eq!(tail.damage, TailDamage::Zeroed);
        assert!(matches!(tail.entries, CutEntries::AtMost(_)));
        assert!(scan(&data, true, true).is_err());

        // The next append torn part-way: its header over the mark, its trailer not written.
        let mut data = marked(&[batch(1, 3)], 0);
        let at = data.len() - END_MARK_LEN;
        data.truncate(at);
        let mut next = batch(4, 2);
        let n = next.len();
        next[n - BATCH_TRAILER_LEN..].fill(0);
        data.extend(next);
        data.extend(vec![0u8; 300]);
        let tail = scan(&data, true, false).unwrap().torn_tail.unwrap();
        assert_eq!(tail.damage, TailDamage::MissingTrailer);
        assert_eq!(tail.entries, CutEntries::Announced(4..=5));
    }
}
