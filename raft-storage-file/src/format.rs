//! The bytes on disk, written and read here and nowhere else: segment headers, batches (a header,
//! the record frames of the entries of one `append`, a trailer; encoded by [`encode_batch`], a
//! truncation record by [`encode_truncation`]; read back by [`parse_batch_header`],
//! [`trailer_state`], [`parse_frame`] and [`decode_record`]), and the small checksummed files (hard
//! state, log metadata, clean shutdown, snapshot). The layout is described in the
//! [crate docs](crate#on-disk-format).

use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use raft_core::{
    Entry, EntryPayload, HardState, LogId, LogIndex, SnapshotMeta, StorageError, Term,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The version of every file format below. A file with another version is refused (see
/// [`version_error`]).
pub(crate) const FORMAT_VERSION: u32 = 3;

/// Length of the magic that starts every file (segments and small files).
const MAGIC_LEN: usize = 8;
/// Offset of the format version (u32) in every file: right after the magic.
const VERSION_AT: usize = MAGIC_LEN;
/// Length of every checksum (a CRC-32).
pub(crate) const CRC_LEN: usize = 4;

/// Magic of a segment file.
pub(crate) const SEGMENT_MAGIC: [u8; MAGIC_LEN] = *b"raftLOG\0";
/// Offset of the first index (u64) in a segment header: after the magic and the version.
pub(crate) const SEGMENT_FIRST_INDEX_AT: usize = VERSION_AT + 4;
/// Offset of the CRC in a segment header, which covers the bytes before it.
const SEGMENT_CRC_AT: usize = SEGMENT_FIRST_INDEX_AT + 8;
/// Size of a segment header: magic, version, first index, CRC.
pub(crate) const SEGMENT_HEADER_LEN: usize = SEGMENT_CRC_AT + CRC_LEN;

/// Offset of the CRC in a record frame's header: after the payload length (u32).
const FRAME_CRC_AT: usize = 4;
/// Size of a record frame's header: payload length, CRC.
pub(crate) const FRAME_HEADER_LEN: usize = FRAME_CRC_AT + CRC_LEN;

/// Magic of the hard state file.
pub(crate) const HARD_STATE_MAGIC: [u8; MAGIC_LEN] = *b"raftHS\0\0";
/// Magic of the log metadata file.
pub(crate) const LOG_META_MAGIC: [u8; MAGIC_LEN] = *b"raftMETA";
/// Magic of the snapshot file.
pub(crate) const SNAPSHOT_MAGIC: [u8; MAGIC_LEN] = *b"raftSNAP";
/// Magic of the clean shutdown file.
pub(crate) const CLEAN_MAGIC: [u8; MAGIC_LEN] = *b"raftCLEN";

/// Magic that starts a batch header.
const BATCH_MAGIC: [u8; 4] = *b"rBAT";
/// Offset of the first index (u64) in a batch header.
const BATCH_FIRST_AT: usize = 4;
/// Offset of the entry count (u32) in a batch header.
const BATCH_COUNT_AT: usize = BATCH_FIRST_AT + 8;
/// Offset of the length of the records (u64) in a batch header.
const BATCH_RECORDS_LEN_AT: usize = BATCH_COUNT_AT + 4;
/// Offset of the CRC in a batch header, which covers the bytes before it.
const BATCH_CRC_AT: usize = BATCH_RECORDS_LEN_AT + 8;
/// Size of a batch header: magic, first index, entry count, records length, CRC.
pub(crate) const BATCH_HEADER_LEN: usize = BATCH_CRC_AT + CRC_LEN;
/// Magic that starts a batch trailer.
const TRAILER_MAGIC: [u8; 4] = *b"rEND";
/// Size of a batch trailer: magic, then the CRC of its batch's header (a copy of the header's last
/// four bytes).
pub(crate) const BATCH_TRAILER_LEN: usize = TRAILER_MAGIC.len() + CRC_LEN;
/// The bytes a batch takes besides its records.
pub(crate) const BATCH_OVERHEAD: usize = BATCH_HEADER_LEN + BATCH_TRAILER_LEN;

/// Magic that starts an end mark.
const END_MARK_MAGIC: [u8; 4] = *b"rEOL";
/// Offset of the byte offset (u64) at which an end mark stands, in the mark.
const END_MARK_OFFSET_AT: usize = END_MARK_MAGIC.len();
/// Offset of the CRC in an end mark, which covers the bytes before it.
const END_MARK_CRC_AT: usize = END_MARK_OFFSET_AT + 8;
/// Size of an end mark: magic, its own offset in the segment, CRC.
pub(crate) const END_MARK_LEN: usize = END_MARK_CRC_AT + CRC_LEN;

/// A CRC32 (IEEE) of several slices, as if they were one.
pub(crate) fn crc(parts: &[&[u8]]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for p in parts {
        h.update(p);
    }
    h.finalize()
}

pub(crate) fn corrupted(path: &Path, offset: u64, what: impl std::fmt::Display) -> StorageError {
    StorageError::Corrupted(format!(
        "{} at byte offset {offset}: {what}",
        path.display()
    ))
}

/// The error for a file written in another format version than this build's: names both.
pub(crate) fn version_error(path: &Path, version: u32) -> StorageError {
    corrupted(
        path,
        VERSION_AT as u64,
        format_args!(
            "the file is in format version {version}, but this build reads only format version \
             {FORMAT_VERSION} (there is no upgrade path between versions: no deployment depends on \
             an older one)"
        ),
    )
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

// ----- segments -----

/// The header that starts every segment file.
pub(crate) fn segment_header(first_index: LogIndex) -> Vec<u8> {
    let mut b = Vec::with_capacity(SEGMENT_HEADER_LEN);
    b.extend_from_slice(&SEGMENT_MAGIC);
    b.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    b.extend_from_slice(&first_index.to_le_bytes());
    let c = crc(&[&b]);
    b.extend_from_slice(&c.to_le_bytes());
    b
}

/// Checks a segment header and returns the first index it declares.
pub(crate) fn parse_segment_header(path: &Path, data: &[u8]) -> Result<LogIndex, StorageError> {
    if data.len() < SEGMENT_HEADER_LEN {
        return Err(corrupted(
            path,
            0,
            format_args!(
                "segment is {} bytes long, shorter than its {SEGMENT_HEADER_LEN}-byte header \
                 (headers are written atomically, so this is not a torn write)",
                data.len()
            ),
        ));
    }
    let h = &data[..SEGMENT_HEADER_LEN];
    if h[..MAGIC_LEN] != SEGMENT_MAGIC {
        return Err(corrupted(path, 0, "not a segment file (bad magic)"));
    }
    let stored = u32_at(h, SEGMENT_CRC_AT);
    if crc(&[&h[..SEGMENT_CRC_AT]]) != stored {
        return Err(corrupted(path, 0, "segment header checksum mismatch"));
    }
    let version = u32_at(h, VERSION_AT);
    if version != FORMAT_VERSION {
        return Err(version_error(path, version));
    }
    Ok(u64_at(h, SEGMENT_FIRST_INDEX_AT))
}

// ----- encoding -----

/// Encodes a value as MessagePack with named struct fields: the encoding `raft-net-tcp` uses on the
/// wire, self-describing, so that every serde type round-trips (see the crate docs).
pub(crate) fn encode_value<T: Serialize + ?Sized>(
    buf: &mut Vec<u8>,
    value: &T,
) -> Result<(), String> {
    rmp_serde::encode::write_named(buf, value).map_err(|e| e.to_string())
}

/// Decodes exactly one value from `bytes` (trailing bytes are an error).
pub(crate) fn decode_value<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    // Read straight from the slice: strings and byte arrays are handed to the visitors borrowed,
    // where a reader-based deserializer copies each through `read_to_end` into a scratch buffer.
    let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
    let value = T::deserialize(&mut de).map_err(|e| e.to_string())?;
    if !at_end(&mut de) {
        return Err(format!(
            "{} trailing bytes after the value",
            trailing_bytes::<T>(bytes)
        ));
    }
    Ok(value)
}

/// Whether `de` has consumed its whole input: reading one more value must fail for want of even
/// its first byte (a marker). Any byte left, a whole value or not, is trailing.
fn at_end(de: &mut rmp_serde::Deserializer<rmp_serde::decode::ReadRefReader<'_, [u8]>>) -> bool {
    matches!(
        serde::de::IgnoredAny::deserialize(de),
        Err(rmp_serde::decode::Error::InvalidMarkerRead(e))
            if e.kind() == io::ErrorKind::UnexpectedEof
    )
}

/// How many bytes of `bytes` follow the `T` it starts with (which decodes): counted with the
/// position-tracking reader, on the error path only.
fn trailing_bytes<T: DeserializeOwned>(bytes: &[u8]) -> u64 {
    let mut de = rmp_serde::Deserializer::new(std::io::Cursor::new(bytes));
    match T::deserialize(&mut de) {
        Ok(_) => bytes.len() as u64 - de.position(),
        Err(_) => 0,
    }
}

/// Appends `v` as an unsigned LEB128 varint.
pub(crate) fn push_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// The most bytes a u64 takes as a LEB128 varint: 7 bits per byte, so 10 (the last holding 1 bit).
const MAX_VARINT_LEN: usize = 10;

/// Reads an unsigned LEB128 varint from the front of `b`: the value and the bytes it took.
pub(crate) fn read_varint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, &byte) in b.iter().enumerate().take(MAX_VARINT_LEN) {
        let bits = u64::from(byte & 0x7f);
        if i == MAX_VARINT_LEN - 1 && bits > 1 {
            return None; // over 64 bits
        }
        v |= bits << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// Appends the payload of a record: term and index as varints, then the entry's payload encoded by
/// [`encode_value`].
fn push_record<C: Serialize>(
    buf: &mut Vec<u8>,
    id: LogId,
    payload: &EntryPayload<C>,
) -> Result<(), String> {
    push_varint(buf, id.term);
    push_varint(buf, id.index);
    encode_value(buf, payload)
}

/// Reads the log id at the front of a record's payload, and where the entry's payload starts,
/// without decoding the entry's payload.
pub(crate) fn record_header(record: &[u8]) -> Option<(LogId, usize)> {
    let (term, a) = read_varint(record)?;
    let (index, b) = read_varint(&record[a..])?;
    Some((LogId::new(term, index), a + b))
}

/// Reads the log id at the front of a record's payload.
pub(crate) fn record_log_id(record: &[u8]) -> Option<LogId> {
    record_header(record).map(|(id, _)| id)
}

/// Decodes a whole record.
pub(crate) fn decode_record<C: DeserializeOwned>(
    record: &[u8],
) -> Result<(LogId, EntryPayload<C>), String> {
    let (id, at) = record_header(record).ok_or("no readable term and index")?;
    Ok((id, decode_value(&record[at..])?))
}

// ----- batches: writing -----

/// An encoded batch of entries, ready to be written with one `write`: its header, the entries'
/// frames back to back, its trailer; and what the store keeps in memory for each record.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    /// The index of the first entry.
    pub first: LogIndex,
    /// The whole batch: header, frames, trailer.
    pub bytes: Vec<u8>,
    /// For each frame, in order: its payload length and its entry's term. The first frame starts
    /// [`BATCH_HEADER_LEN`] bytes into the batch, each next one right after the previous one.
    pub records: Vec<(u32, Term)>,
}

/// The header of the frame of `payload`, `len` bytes long: the length, then the CRC of the length
/// bytes and the payload (what [`parse_frame`] checks).
fn frame_header(len: u32, payload: &[u8]) -> [u8; FRAME_HEADER_LEN] {
    let len = len.to_le_bytes();
    let c = crc(&[&len, payload]).to_le_bytes();
    let mut header = [0u8; FRAME_HEADER_LEN];
    header[..FRAME_CRC_AT].copy_from_slice(&len);
    header[FRAME_CRC_AT..].copy_from_slice(&c);
    header
}

/// The header of a batch of `count` entries from `first` whose frames take `records_len` bytes.
fn batch_header(first: LogIndex, count: u32, records_len: u64) -> [u8; BATCH_HEADER_LEN] {
    let mut h = [0u8; BATCH_HEADER_LEN];
    h[..BATCH_FIRST_AT].copy_from_slice(&BATCH_MAGIC);
    h[BATCH_FIRST_AT..BATCH_COUNT_AT].copy_from_slice(&first.to_le_bytes());
    h[BATCH_COUNT_AT..BATCH_RECORDS_LEN_AT].copy_from_slice(&count.to_le_bytes());
    h[BATCH_RECORDS_LEN_AT..BATCH_CRC_AT].copy_from_slice(&records_len.to_le_bytes());
    let c = crc(&[&h[..BATCH_CRC_AT]]);
    h[BATCH_CRC_AT..].copy_from_slice(&c.to_le_bytes());
    h
}

/// The trailer that ends the batch whose header's CRC is `header_crc`.
fn batch_trailer(header_crc: u32) -> [u8; BATCH_TRAILER_LEN] {
    let mut t = [0u8; BATCH_TRAILER_LEN];
    t[..TRAILER_MAGIC.len()].copy_from_slice(&TRAILER_MAGIC);
    t[TRAILER_MAGIC.len()..].copy_from_slice(&header_crc.to_le_bytes());
    t
}

/// Encodes `entries` into one batch: a header announcing them, their frames (each record as
/// [`push_record`] writes it), a trailer.
///
/// # Errors
/// [`StorageError::InvalidRequest`], and nothing encoded, if there are no entries or more than a
/// header can count (`u32::MAX`), if the entries are not consecutive from `first`, or if an entry
/// cannot be encoded, does not decode back with [`decode_record`] (its command type's `Serialize`
/// and `Deserialize` disagree: refused before it reaches the disk, where it would fail the next
/// open), or is over the 4 GiB a frame's length can state.
pub(crate) fn encode_batch<C>(first: LogIndex, entries: &[Entry<C>]) -> Result<Batch, StorageError>
where
    C: Serialize + DeserializeOwned,
{
    let count = u32::try_from(entries.len())
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| {
            StorageError::InvalidRequest(format!(
                "a batch holds 1 to {} entries, not {}",
                u32::MAX,
                entries.len()
            ))
        })?;
    let mut batch = Batch {
        first,
        bytes: vec![0u8; BATCH_HEADER_LEN],
        records: Vec::with_capacity(entries.len()),
    };
    for (expected, e) in (first..).zip(entries) {
        if e.log_id.index != expected {
            return Err(StorageError::InvalidRequest(format!(
                "append expected index {expected}, got {}",
                e.log_id.index
            )));
        }
        let start = batch.bytes.len();
        let bytes = &mut batch.bytes;
        bytes.extend_from_slice(&[0u8; FRAME_HEADER_LEN]);
        push_record(bytes, e.log_id, &*e.payload).map_err(|err| {
            StorageError::InvalidRequest(format!("entry {} cannot be encoded: {err}", e.log_id))
        })?;
        let record = &bytes[start + FRAME_HEADER_LEN..];
        if let Err(err) = decode_record::<C>(record) {
            return Err(StorageError::InvalidRequest(format!(
                "entry {} encodes but does not decode back ({err}); its command type's Serialize \
                 and Deserialize disagree",
                e.log_id
            )));
        }
        let len = u32::try_from(record.len()).map_err(|_| {
            StorageError::InvalidRequest(format!(
                "entry {} is {} bytes encoded, over the 4 GiB record limit",
                e.log_id,
                record.len()
            ))
        })?;
        let header = frame_header(len, record);
        bytes[start..start + FRAME_HEADER_LEN].copy_from_slice(&header);
        batch.records.push((len, e.log_id.term));
    }
    let records_len = (batch.bytes.len() - BATCH_HEADER_LEN) as u64;
    let header = batch_header(first, count, records_len);
    batch.bytes[..BATCH_HEADER_LEN].copy_from_slice(&header);
    batch
        .bytes
        .extend_from_slice(&batch_trailer(u32_at(&header, BATCH_CRC_AT)));
    // Room for the end mark the store writes after the batch, so that adding it copies nothing.
    batch.bytes.reserve_exact(END_MARK_LEN);
    Ok(batch)
}

/// A truncation record: a batch of no entries whose first index is `from`, meaning "every entry at
/// `from` and after, written before this record, is deleted". Written when a truncation falls
/// inside a batch, where cutting the file would leave that batch incomplete.
pub(crate) fn encode_truncation(from: LogIndex) -> Vec<u8> {
    let header = batch_header(from, 0, 0);
    let mut b = Vec::with_capacity(BATCH_OVERHEAD + END_MARK_LEN);
    b.extend_from_slice(&header);
    b.extend_from_slice(&batch_trailer(u32_at(&header, BATCH_CRC_AT)));
    b
}

// ----- batches: reading -----

/// A valid batch header (magic and checksum correct).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BatchHeader {
    /// The index of the first entry (of a truncation record: the first index deleted).
    pub first: LogIndex,
    /// How many entries the batch holds (0: a truncation record).
    pub count: u32,
    /// How many bytes its record frames take.
    pub records_len: u64,
    /// The header's CRC, which the trailer repeats.
    crc: u32,
}

impl BatchHeader {
    /// The length of the whole batch, header and trailer included; `None` if it does not fit a u64
    /// (no file holds it).
    pub(crate) fn batch_len(&self) -> Option<u64> {
        self.records_len.checked_add(BATCH_OVERHEAD as u64)
    }

    /// The indexes of the entries it announces; `None` for a truncation record.
    pub(crate) fn entries(&self) -> Option<std::ops::RangeInclusive<LogIndex>> {
        (self.count > 0).then(|| self.first..=self.first.saturating_add(u64::from(self.count) - 1))
    }
}

/// Reads the batch header at the start of `data` (at least [`BATCH_HEADER_LEN`] bytes); `None` if
/// its magic or checksum is wrong.
pub(crate) fn parse_batch_header(data: &[u8]) -> Option<BatchHeader> {
    let h = data.get(..BATCH_HEADER_LEN)?;
    if h[..BATCH_FIRST_AT] != BATCH_MAGIC {
        return None;
    }
    let stored = u32_at(h, BATCH_CRC_AT);
    if crc(&[&h[..BATCH_CRC_AT]]) != stored {
        return None;
    }
    Some(BatchHeader {
        first: u64_at(h, BATCH_FIRST_AT),
        count: u32_at(h, BATCH_COUNT_AT),
        records_len: u64_at(h, BATCH_RECORDS_LEN_AT),
        crc: stored,
    })
}

/// What the trailer of a batch holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TrailerState {
    /// The trailer of this batch: the whole batch was written.
    Valid,
    /// Zero bytes, or the trailer's first bytes then zero bytes: the end of the batch never
    /// reached the disk.
    Missing,
    /// Anything else.
    Damaged,
}

/// Checks `trailer` ([`BATCH_TRAILER_LEN`] bytes) against the header of its batch.
pub(crate) fn trailer_state(trailer: &[u8], header: &BatchHeader) -> TrailerState {
    let valid = batch_trailer(header.crc);
    if trailer == valid {
        TrailerState::Valid
    } else if is_torn_prefix(trailer, &valid) {
        TrailerState::Missing
    } else {
        TrailerState::Damaged
    }
}

/// Whether `data` is what a write of `whole` that reached the disk only in part leaves: its first
/// bytes (maybe none), then only zero bytes; or, if `data` is shorter than `whole`, a prefix of it
/// so made. `whole` itself is not.
pub(crate) fn is_torn_prefix(data: &[u8], whole: &[u8]) -> bool {
    let written = data.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    written < whole.len() && data[..written] == whole[..written]
}

/// The end mark that stands at byte `offset` of a segment: written right after the segment's
/// header and after every batch, in the same `write`, it says "the batches end here; what follows,
/// up to the end of the file, is free space". The next append starts at `offset`, over the mark.
pub(crate) fn end_mark(offset: u64) -> [u8; END_MARK_LEN] {
    let mut m = [0u8; END_MARK_LEN];
    m[..END_MARK_OFFSET_AT].copy_from_slice(&END_MARK_MAGIC);
    m[END_MARK_OFFSET_AT..END_MARK_CRC_AT].copy_from_slice(&offset.to_le_bytes());
    let c = crc(&[&m[..END_MARK_CRC_AT]]);
    m[END_MARK_CRC_AT..].copy_from_slice(&c.to_le_bytes());
    m
}

/// Whether `data` starts with the end mark of byte `offset` (magic, offset and checksum right).
pub(crate) fn is_end_mark(data: &[u8], offset: u64) -> bool {
    data.get(..END_MARK_LEN) == Some(&end_mark(offset)[..])
}

/// Why a frame could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FrameDamage {
    /// Fewer bytes than a frame header are left.
    ShortHeader,
    /// The header declares more payload bytes than are left.
    ShortPayload,
    /// The checksum does not match the length and payload.
    BadChecksum,
}

impl std::fmt::Display for FrameDamage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FrameDamage::ShortHeader => "the record ends inside its header",
            FrameDamage::ShortPayload => "the record's length runs past its batch",
            FrameDamage::BadChecksum => "record checksum mismatch",
        })
    }
}

/// Reads the frame at the start of `data`: returns its payload (the frame is [`FRAME_HEADER_LEN`]
/// `+ payload.len()` bytes long).
pub(crate) fn parse_frame(data: &[u8]) -> Result<&[u8], FrameDamage> {
    if data.len() < FRAME_HEADER_LEN {
        return Err(FrameDamage::ShortHeader);
    }
    let len = u32_at(data, 0) as usize;
    let stored = u32_at(data, FRAME_CRC_AT);
    let Some(payload) = data[FRAME_HEADER_LEN..].get(..len) else {
        return Err(FrameDamage::ShortPayload);
    };
    if crc(&[&data[..FRAME_CRC_AT], payload]) != stored {
        return Err(FrameDamage::BadChecksum);
    }
    Ok(payload)
}

// ----- small checksummed files -----

/// Offset of the body length (u64) in a small file: after the magic and the version.
const SMALL_BODY_LEN_AT: usize = VERSION_AT + 4;
/// Length of the fixed start of a small file: magic, version, body length. The body starts here.
const SMALL_HEAD_LEN: usize = SMALL_BODY_LEN_AT + 8;

/// Frames the body of a small file: magic, version, body length, body, CRC of all before it.
pub(crate) fn small_file(magic: [u8; MAGIC_LEN], body: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(SMALL_HEAD_LEN + body.len() + CRC_LEN);
    b.extend_from_slice(&magic);
    b.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    b.extend_from_slice(&(body.len() as u64).to_le_bytes());
    b.extend_from_slice(body);
    let c = crc(&[&b]);
    b.extend_from_slice(&c.to_le_bytes());
    b
}

/// Checks the fixed start of a small file `file_len` bytes long: its length, magic and declared body
/// length. `head` is the file's first [`SMALL_HEAD_LEN`] bytes (or the whole file if shorter).
/// Returns the body length.
fn check_small_file_head(
    path: &Path,
    magic: [u8; MAGIC_LEN],
    head: &[u8],
    file_len: u64,
) -> Result<u64, StorageError> {
    if file_len < (SMALL_HEAD_LEN + CRC_LEN) as u64 || head.len() < SMALL_HEAD_LEN {
        return Err(corrupted(
            path,
            0,
            format_args!("file is {file_len} bytes long, too short to be valid"),
        ));
    }
    if head[..MAGIC_LEN] != magic {
        return Err(corrupted(path, 0, "bad magic (not the file expected here)"));
    }
    let len = u64_at(head, SMALL_BODY_LEN_AT);
    let expected = (SMALL_HEAD_LEN as u64)
        .checked_add(len)
        .and_then(|n| n.checked_add(CRC_LEN as u64));
    if expected != Some(file_len) {
        return Err(corrupted(
            path,
            SMALL_BODY_LEN_AT as u64,
            format_args!("declared body length {len} does not match the file length {file_len}"),
        ));
    }
    Ok(len)
}

/// Checks the format version in a small file's fixed start (after its checksum matched).
fn check_small_file_version(path: &Path, head: &[u8]) -> Result<(), StorageError> {
    let version = u32_at(head, VERSION_AT);
    if version != FORMAT_VERSION {
        return Err(version_error(path, version));
    }
    Ok(())
}

/// Checks a small file and returns its body.
pub(crate) fn parse_small_file<'a>(
    path: &Path,
    magic: [u8; MAGIC_LEN],
    data: &'a [u8],
) -> Result<&'a [u8], StorageError> {
    check_small_file_head(path, magic, data, data.len() as u64)?;
    let body_end = data.len() - CRC_LEN;
    if crc(&[&data[..body_end]]) != u32_at(data, body_end) {
        return Err(corrupted(path, body_end as u64, "checksum mismatch"));
    }
    check_small_file_version(path, data)?;
    Ok(&data[SMALL_HEAD_LEN..body_end])
}

pub(crate) fn encode_hard_state(hs: &HardState) -> Vec<u8> {
    let mut body = Vec::new();
    encode_value(&mut body, hs).expect("encoding integers cannot fail");
    small_file(HARD_STATE_MAGIC, &body)
}

pub(crate) fn decode_hard_state(path: &Path, data: &[u8]) -> Result<HardState, StorageError> {
    let body = parse_small_file(path, HARD_STATE_MAGIC, data)?;
    decode_value(body).map_err(|e| {
        corrupted(
            path,
            SMALL_HEAD_LEN as u64,
            format_args!("cannot decode the hard state: {e}"),
        )
    })
}

/// What the log metadata file holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LogMeta {
    /// Term and index of the last purged entry.
    pub last_purged_term: u64,
    pub last_purged_index: u64,
    /// A truncation in progress: every entry at this index and after is deleted, whatever the segments
    /// still hold. Set only while a truncation both deletes segments and cuts one.
    pub truncate_from: Option<u64>,
    /// The first index of the newest segment, the one appends go to (`None`: no segment). Updated
    /// after a new segment file exists and before anything is appended to it, and before segments
    /// are deleted from the end, so that a missing newest segment is detected and any segment past
    /// it holds nothing acknowledged.
    pub last_segment: Option<u64>,
}

impl LogMeta {
    pub(crate) fn last_purged(&self) -> LogId {
        LogId::new(self.last_purged_term, self.last_purged_index)
    }
}

pub(crate) fn encode_log_meta(meta: &LogMeta) -> Vec<u8> {
    let mut body = Vec::new();
    encode_value(&mut body, meta).expect("encoding integers cannot fail");
    small_file(LOG_META_MAGIC, &body)
}

pub(crate) fn decode_log_meta(path: &Path, data: &[u8]) -> Result<LogMeta, StorageError> {
    let body = parse_small_file(path, LOG_META_MAGIC, data)?;
    decode_value(body).map_err(|e| {
        corrupted(
            path,
            SMALL_HEAD_LEN as u64,
            format_args!("cannot decode the log metadata: {e}"),
        )
    })
}

/// What the clean shutdown file holds: where the log ended when the storage was closed cleanly,
/// after its last write. Every write the storage made was complete then, so the next open refuses
/// any damage at the end of the log, and any other end than this one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CleanShutdown {
    /// Term and index of the last entry of the log (the purge point if the log was empty).
    pub last_log_term: u64,
    pub last_log_index: u64,
    /// The first index of the newest segment (`None`: no segment), as `log_meta` names it.
    pub newest_segment: Option<u64>,
    /// The byte offset where the batches of the newest segment end (0 if there is none): where its
    /// end mark stands. (The name is kept from when that was the file's length.)
    pub newest_segment_len: u64,
}

impl CleanShutdown {
    pub(crate) fn last_log_id(&self) -> LogId {
        LogId::new(self.last_log_term, self.last_log_index)
    }
}

pub(crate) fn encode_clean_shutdown(clean: &CleanShutdown) -> Vec<u8> {
    let mut body = Vec::new();
    encode_value(&mut body, clean).expect("encoding integers cannot fail");
    small_file(CLEAN_MAGIC, &body)
}

pub(crate) fn decode_clean_shutdown(
    path: &Path,
    data: &[u8],
) -> Result<CleanShutdown, StorageError> {
    let body = parse_small_file(path, CLEAN_MAGIC, data)?;
    decode_value(body).map_err(|e| {
        corrupted(
            path,
            SMALL_HEAD_LEN as u64,
            format_args!("cannot decode the clean shutdown record: {e}"),
        )
    })
}

/// Size of the field that starts a snapshot file's body: the length of the header after it (u64).
const SNAPSHOT_HEADER_LEN_FIELD: usize = 8;
/// Offset of the header in a snapshot file: after the small file's fixed start and the header's
/// length.
const SNAPSHOT_HEADER_AT: usize = SMALL_HEAD_LEN + SNAPSHOT_HEADER_LEN_FIELD;

/// The metadata at the front of the snapshot file's body.
#[derive(Serialize, Deserialize)]
struct SnapshotHeader {
    meta: SnapshotMeta,
    discards_log: bool,
}

/// What a snapshot file holds apart from its data, and where its data is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SnapshotLayout {
    pub meta: SnapshotMeta,
    /// Whether installing this snapshot discards the whole log (see the crate docs on recovery).
    pub discards_log: bool,
    /// Byte offset of the data in the file.
    pub data_start: u64,
    /// Length of the data.
    pub data_len: u64,
}

impl SnapshotLayout {
    /// The length of the whole file.
    pub(crate) fn file_len(&self) -> u64 {
        self.data_start + self.data_len + CRC_LEN as u64
    }
}

/// A snapshot file is a small file whose body is the header's length (u64), the header (metadata
/// and the "discards the log" flag, encoded by [`encode_value`]), then the data as raw bytes.
/// Returns the parts around the data: everything before it (`head`), the checksum after it
/// (`tail`), and where the data goes. The file is `head`, the data, `tail`: the data need not be
/// copied to be written.
pub(crate) fn snapshot_file_parts(
    meta: &SnapshotMeta,
    discards_log: bool,
    data: &[u8],
) -> (Vec<u8>, [u8; CRC_LEN], SnapshotLayout) {
    let mut header = Vec::new();
    encode_value(
        &mut header,
        &SnapshotHeader {
            meta: meta.clone(),
            discards_log,
        },
    )
    .expect("encoding integers cannot fail");
    let body_len = SNAPSHOT_HEADER_LEN_FIELD as u64 + header.len() as u64 + data.len() as u64;
    let mut head = Vec::with_capacity(SNAPSHOT_HEADER_AT + header.len());
    head.extend_from_slice(&SNAPSHOT_MAGIC);
    head.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    head.extend_from_slice(&body_len.to_le_bytes());
    head.extend_from_slice(&(header.len() as u64).to_le_bytes());
    head.extend_from_slice(&header);
    let tail = crc(&[&head, data]).to_le_bytes();
    let layout = SnapshotLayout {
        meta: meta.clone(),
        discards_log,
        data_start: head.len() as u64,
        data_len: data.len() as u64,
    };
    (head, tail, layout)
}

/// The size of the blocks in which [`crc_of_stream`] reads: the memory a check of a snapshot of any
/// size takes, and large enough that the reads cost little next to the checksum.
const CRC_STREAM_BLOCK: usize = 64 * 1024;

/// The CRC of the first `len` bytes of `r` (from its current position), read in blocks of
/// [`CRC_STREAM_BLOCK`] bytes: a file of any size is checked in bounded memory.
fn crc_of_stream<R: Read>(r: &mut R, len: u64) -> io::Result<u32> {
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; CRC_STREAM_BLOCK];
    let mut left = len;
    while left > 0 {
        let n = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
        r.read_exact(&mut buf[..n])?;
        h.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(h.finalize())
}

/// Reads and checks a whole snapshot file (`file_len` bytes long) through `r`, without holding it
/// in memory: its length, magic and declared length, the checksum over everything (streamed), the
/// format version, then the header. Returns its layout.
pub(crate) fn read_snapshot_layout<R: Read + Seek>(
    path: &Path,
    r: &mut R,
    file_len: u64,
) -> Result<SnapshotLayout, StorageError> {
    let io = |source| StorageError::Io {
        context: format!("reading {}", path.display()),
        source,
    };
    let mut head = [0u8; SNAPSHOT_HEADER_AT];
    let have = usize::try_from(file_len).map_or(head.len(), |l| l.min(head.len()));
    r.seek(SeekFrom::Start(0)).map_err(io)?;
    r.read_exact(&mut head[..have]).map_err(io)?;
    let body_len = check_small_file_head(path, SNAPSHOT_MAGIC, &head[..have], file_len)?;
    let crc_at = file_len - CRC_LEN as u64;
    r.seek(SeekFrom::Start(0)).map_err(io)?;
    let computed = crc_of_stream(r, crc_at).map_err(io)?;
    let mut stored = [0u8; CRC_LEN];
    r.read_exact(&mut stored).map_err(io)?;
    if computed != u32::from_le_bytes(stored) {
        return Err(corrupted(path, crc_at, "checksum mismatch"));
    }
    check_small_file_version(path, &head)?;
    let bad = |what: &str| {
        corrupted(
            path,
            SMALL_HEAD_LEN as u64,
            format_args!("cannot decode the snapshot: {what}"),
        )
    };
    if body_len < SNAPSHOT_HEADER_LEN_FIELD as u64 {
        return Err(bad("no header length"));
    }
    let header_len = u64_at(&head, SMALL_HEAD_LEN);
    if header_len > body_len - SNAPSHOT_HEADER_LEN_FIELD as u64 {
        return Err(bad("header length past the end"));
    }
    let mut header = vec![0u8; header_len as usize];
    r.seek(SeekFrom::Start(SNAPSHOT_HEADER_AT as u64))
        .map_err(io)?;
    r.read_exact(&mut header).map_err(io)?;
    let h: SnapshotHeader = decode_value(&header).map_err(|e| bad(&e))?;
    let data_start = SNAPSHOT_HEADER_AT as u64 + header_len;
    Ok(SnapshotLayout {
        meta: h.meta,
        discards_log: h.discards_log,
        data_start,
        data_len: crc_at - data_start,
    })
}

/// The whole snapshot file, in one buffer (tests write files with it).
#[cfg(test)]
pub(crate) fn encode_snapshot(meta: &SnapshotMeta, discards_log: bool, data: &[u8]) -> Vec<u8> {
    let (head, tail, _) = snapshot_file_parts(meta, discards_log, data);
    [&head[..], data, &tail[..]].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The frame of one entry, as the store writes it inside a batch.
    fn frame<C: Serialize + DeserializeOwned>(log_id: LogId, payload: EntryPayload<C>) -> Vec<u8> {
        let batch = encode_batch(log_id.index, &[Entry::new(log_id, payload)]).unwrap();
        let frame = batch.bytes[BATCH_HEADER_LEN..batch.bytes.len() - BATCH_TRAILER_LEN].to_vec();
        let payload_len = frame.len() - FRAME_HEADER_LEN;
        assert_eq!(batch.records, vec![(payload_len as u32, log_id.term)]);
        frame
    }

    /// Any byte after the value is refused, a whole second value, the start of one or a lone
    /// marker, and the error counts them.
    #[test]
    fn trailing_bytes_are_counted_and_refused() {
        let value = (String::from("key"), 7u64);
        let mut bytes = Vec::new();
        encode_value(&mut bytes, &value).unwrap();
        assert_eq!(decode_value::<(String, u64)>(&bytes), Ok(value));
        for (tail, n) in [
            (bytes.clone(), bytes.len()),
            (vec![0xd9], 1),
            (vec![0xc0, 0xc1], 2),
        ] {
            let mut with_tail = bytes.clone();
            with_tail.extend_from_slice(&tail);
            assert_eq!(
                decode_value::<(String, u64)>(&with_tail),
                Err(format!("{n} trailing bytes after the value"))
            );
        }
    }

    #[test]
    fn frame_round_trip_and_damage() {
        let buf = frame(LogId::new(3, 7), EntryPayload::Command(42u64));
        let payload = buf[FRAME_HEADER_LEN..].to_vec();
        assert_eq!(parse_frame(&buf), Ok(&payload[..]));
        assert_eq!(record_log_id(&payload), Some(LogId::new(3, 7)));
        assert_eq!(parse_frame(&buf[..5]), Err(FrameDamage::ShortHeader));
        assert_eq!(
            parse_frame(&buf[..buf.len() - 1]),
            Err(FrameDamage::ShortPayload)
        );
        let mut bad = buf.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(parse_frame(&bad), Err(FrameDamage::BadChecksum));
        let (id, p) = decode_record::<u64>(&payload).unwrap();
        assert_eq!(id, LogId::new(3, 7));
        assert_eq!(p, EntryPayload::Command(42));
        assert!(decode_record::<String>(&payload).is_err());
    }

    #[test]
    fn the_smallest_record_is_as_documented() {
        let f = frame(LogId::new(0, 1), EntryPayload::<u64>::Blank);
        assert!(f.len() as u64 >= crate::MIN_RECORD_BYTES, "{}", f.len());
    }

    #[test]
    fn a_batch_is_a_header_its_frames_and_a_trailer() {
        let entries: Vec<Entry<String>> = (5..8)
            .map(|i| Entry {
                log_id: LogId::new(2, i),
                payload: EntryPayload::Command("x".repeat(i as usize)).into(),
            })
            .collect();
        let batch = encode_batch(5, &entries).unwrap();
        assert_eq!(batch.first, 5);
        let header = parse_batch_header(&batch.bytes).unwrap();
        assert_eq!((header.first, header.count), (5, 3));
        assert_eq!(header.entries(), Some(5..=7));
        assert_eq!(header.batch_len(), Some(batch.bytes.len() as u64));
        let trailer = &batch.bytes[batch.bytes.len() - BATCH_TRAILER_LEN..];
        assert_eq!(trailer_state(trailer, &header), TrailerState::Valid);
        let mut at = BATCH_HEADER_LEN;
        for (e, &(len, term)) in entries.iter().zip(&batch.records) {
            let payload = parse_frame(&batch.bytes[at..]).unwrap();
            assert_eq!(payload.len(), len as usize);
            assert_eq!(term, e.log_id.term);
            assert_eq!(
                decode_record::<String>(payload).unwrap(),
                (e.log_id, (*e.payload).clone())
            );
            at += FRAME_HEADER_LEN + payload.len();
        }
        assert_eq!(at, BATCH_HEADER_LEN + header.records_len as usize);
        assert_eq!(at + BATCH_TRAILER_LEN, batch.bytes.len());

        // Every flip of a header byte is caught; a trailer is valid for its own header only.
        for i in 0..BATCH_HEADER_LEN {
            let mut bad = batch.bytes.clone();
            bad[i] ^= 0x40;
            assert_eq!(parse_batch_header(&bad), None, "flip at {i}");
        }
        let other = parse_batch_header(&encode_batch(5, &entries[..2]).unwrap().bytes).unwrap();
        assert_eq!(trailer_state(trailer, &other), TrailerState::Damaged);
        assert_eq!(
            trailer_state(&[0; BATCH_TRAILER_LEN], &header),
            TrailerState::Missing
        );
        // Its first bytes, then zeros: the write ended inside it.
        for k in 1..BATCH_TRAILER_LEN {
            let mut torn = trailer.to_vec();
            torn[k..].fill(0);
            assert_eq!(trailer_state(&torn, &header), TrailerState::Missing, "{k}");
            torn[k - 1] ^= 0x02;
            assert_eq!(trailer_state(&torn, &header), TrailerState::Damaged, "{k}");
        }

        // Not consecutive from `first`, or empty: refused.
        let e = encode_batch(4, &entries).unwrap_err();
        assert!(matches!(e, StorageError::InvalidRequest(_)), "{e}");
        let gap = [entries[0].clone(), entries[2].clone()];
        let e = encode_batch(5, &gap).unwrap_err();
        assert!(matches!(e, StorageError::InvalidRequest(_)), "{e}");
        let e = encode_batch::<String>(5, &[]).unwrap_err();
        assert!(matches!(e, StorageError::InvalidRequest(_)), "{e}");
    }

    #[test]
    fn a_truncation_record_is_a_batch_of_no_entries() {
        let bytes = encode_truncation(9);
        assert_eq!(bytes.len(), BATCH_OVERHEAD);
        let header = parse_batch_header(&bytes).unwrap();
        assert_eq!((header.first, header.count, header.records_len), (9, 0, 0));
        assert_eq!(header.entries(), None);
        assert_eq!(
            trailer_state(&bytes[BATCH_HEADER_LEN..], &header),
            TrailerState::Valid
        );
    }

    #[test]
    fn clean_shutdown_round_trip_and_damage() {
        let p = Path::new("clean");
        let clean = CleanShutdown {
            last_log_term: 3,
            last_log_index: 107,
            newest_segment: Some(90),
            newest_segment_len: 2_000_000,
        };
        let bytes = encode_clean_shutdown(&clean);
        assert_eq!(decode_clean_shutdown(p, &bytes).unwrap(), clean);
        assert_eq!(clean.last_log_id(), LogId::new(3, 107));
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x02;
            assert!(decode_clean_shutdown(p, &bad).is_err(), "flip at {i}");
        }
    }

    #[test]
    fn another_format_version_is_refused_naming_both() {
        let p = Path::new("hard_state");
        let mut bytes = encode_hard_state(&HardState::default());
        bytes[VERSION_AT..VERSION_AT + 4].copy_from_slice(&2u32.to_le_bytes());
        let end = bytes.len() - CRC_LEN;
        let c = crc(&[&bytes[..end]]);
        bytes[end..].copy_from_slice(&c.to_le_bytes());
        let e = decode_hard_state(p, &bytes).unwrap_err().to_string();
        assert!(
            e.contains("format version 2") && e.contains("format version 3"),
            "{e}"
        );
    }

    #[test]
    fn small_files_detect_damage() {
        let p = Path::new("hard_state");
        let hs = HardState {
            term: 9,
            voted_for: Some(2),
        };
        let bytes = encode_hard_state(&hs);
        assert_eq!(decode_hard_state(p, &bytes).unwrap(), hs);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(
                decode_hard_state(p, &bad).is_err(),
                "flip at {i} undetected"
            );
        }
        for n in 0..bytes.len() {
            assert!(decode_hard_state(p, &bytes[..n]).is_err());
        }
    }

    #[test]
    fn varints_round_trip() {
        for v in [
            0,
            1,
            127,
            128,
            300,
            u64::from(u32::MAX),
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut b = Vec::new();
            push_varint(&mut b, v);
            b.push(0xEE);
            assert_eq!(read_varint(&b), Some((v, b.len() - 1)), "{v}");
        }
        assert_eq!(read_varint(&[0x80, 0x80]), None);
        assert_eq!(read_varint(&[0xff; 11]), None);
    }

    #[test]
    fn snapshot_file_round_trip_and_damage() {
        let p = Path::new("snapshot");
        let meta = SnapshotMeta {
            last_log_id: LogId::new(4, 40),
            membership: raft_core::Membership::new([1, 5]),
        };
        // Data longer than the block the checksum is streamed in.
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let bytes = encode_snapshot(&meta, true, &data);
        let layout =
            read_snapshot_layout(p, &mut io::Cursor::new(&bytes), bytes.len() as u64).unwrap();
        assert_eq!(layout.meta, meta);
        assert!(layout.discards_log);
        assert_eq!(layout.file_len(), bytes.len() as u64);
        let start = layout.data_start as usize;
        assert_eq!(&bytes[start..start + layout.data_len as usize], &data[..]);

        let small = encode_snapshot(&meta, false, b"abc");
        let read = |b: &[u8]| read_snapshot_layout(p, &mut io::Cursor::new(b), b.len() as u64);
        assert!(!read(&small).unwrap().discards_log);
        for i in 0..small.len() {
            let mut bad = small.clone();
            bad[i] ^= 0x10;
            assert!(read(&bad).is_err(), "flip at {i} undetected");
        }
        for n in 0..small.len() {
            assert!(read(&small[..n]).is_err(), "cut at {n} undetected");
        }
        // A file shorter than it was when its length was taken.
        let e = read_snapshot_layout(p, &mut io::Cursor::new(&small[..30]), small.len() as u64);
        assert!(e.is_err());
    }

    #[test]
    fn segment_header_round_trip() {
        let p = Path::new("seg");
        let h = segment_header(12345);
        assert_eq!(h.len(), 24, "the crate docs' segment header size");
        assert_eq!(parse_segment_header(p, &h).unwrap(), 12345);
        let mut bad = h.clone();
        bad[13] ^= 1;
        assert!(parse_segment_header(p, &bad).is_err());
        assert!(parse_segment_header(p, &h[..10]).is_err());
    }
}
