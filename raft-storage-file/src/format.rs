//! The bytes on disk: segment headers, record frames, and the small checksummed files (hard state, log
//! metadata, snapshot). The layout is described in the [crate docs](crate#on-disk-format).

use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use raft_core::{EntryPayload, HardState, LogId, LogIndex, SnapshotMeta, StorageError};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The version of every file format below. A file with another version is refused.
pub(crate) const FORMAT_VERSION: u32 = 1;

/// Magic of a segment file.
pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"raftLOG\0";
/// Size of a segment header: magic, version, first index, CRC.
pub(crate) const SEGMENT_HEADER_LEN: usize = 8 + 4 + 8 + 4;
/// Size of a record frame's header: payload length, CRC.
pub(crate) const FRAME_HEADER_LEN: usize = 8;

/// Magic of the hard state file.
pub(crate) const HARD_STATE_MAGIC: [u8; 8] = *b"raftHS\0\0";
/// Magic of the log metadata file.
pub(crate) const LOG_META_MAGIC: [u8; 8] = *b"raftMETA";
/// Magic of the snapshot file.
pub(crate) const SNAPSHOT_MAGIC: [u8; 8] = *b"raftSNAP";

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
    if h[..8] != SEGMENT_MAGIC {
        return Err(corrupted(path, 0, "not a segment file (bad magic)"));
    }
    let stored = u32_at(h, 20);
    if crc(&[&h[..20]]) != stored {
        return Err(corrupted(path, 0, "segment header checksum mismatch"));
    }
    let version = u32_at(h, 8);
    if version != FORMAT_VERSION {
        return Err(corrupted(
            path,
            8,
            format_args!(
                "unsupported segment format version {version} (this build reads {FORMAT_VERSION})"
            ),
        ));
    }
    Ok(u64_at(h, 12))
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
    let mut de = rmp_serde::Deserializer::new(std::io::Cursor::new(bytes));
    let value = T::deserialize(&mut de).map_err(|e| e.to_string())?;
    let used = de.position();
    if used != bytes.len() as u64 {
        return Err(format!(
            "{} trailing bytes after the value",
            bytes.len() as u64 - used
        ));
    }
    Ok(value)
}

/// Appends `v` as an unsigned LEB128 varint.
pub(crate) fn push_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Reads an unsigned LEB128 varint from the front of `b`: the value and the bytes it took.
pub(crate) fn read_varint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, &byte) in b.iter().enumerate().take(10) {
        let bits = u64::from(byte & 0x7f);
        if i == 9 && bits > 1 {
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
pub(crate) fn push_record<C: Serialize>(
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

/// Appends the frame of one record (`payload` already encoded) to `buf`.
#[cfg(test)]
pub(crate) fn push_frame(buf: &mut Vec<u8>, payload: &[u8]) {
    let len = (payload.len() as u32).to_le_bytes();
    let c = crc(&[&len, payload]);
    buf.extend_from_slice(&len);
    buf.extend_from_slice(&c.to_le_bytes());
    buf.extend_from_slice(payload);
}

/// Why a frame could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameDamage {
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
            FrameDamage::ShortHeader => "the file ends inside a record header",
            FrameDamage::ShortPayload => "the file ends inside a record payload",
            FrameDamage::BadChecksum => "record checksum mismatch",
        })
    }
}

/// Reads the frame at the start of `data`: returns its payload (the frame is `8 + payload.len()`
/// bytes long).
pub(crate) fn parse_frame(data: &[u8]) -> Result<&[u8], FrameDamage> {
    if data.len() < FRAME_HEADER_LEN {
        return Err(FrameDamage::ShortHeader);
    }
    let len = u32_at(data, 0) as usize;
    let stored = u32_at(data, 4);
    let Some(payload) = data[FRAME_HEADER_LEN..].get(..len) else {
        return Err(FrameDamage::ShortPayload);
    };
    if crc(&[&data[..4], payload]) != stored {
        return Err(FrameDamage::BadChecksum);
    }
    Ok(payload)
}

/// Looks for an intact record (a frame with a valid checksum whose payload starts with an index at or
/// above `min_index`) at any byte offset in `data[from..]`. Returns its offset.
pub(crate) fn find_intact_record(data: &[u8], from: usize, min_index: LogIndex) -> Option<usize> {
    let end = data.len().checked_sub(FRAME_HEADER_LEN)?;
    (from..=end).find(|&p| {
        let len = u32_at(data, p) as usize;
        // Cheap rejections first: most garbage declares a length past the end of the file.
        if len > data.len() - p - FRAME_HEADER_LEN {
            return false;
        }
        match parse_frame(&data[p..]) {
            Ok(payload) => record_log_id(payload).is_some_and(|id| id.index >= min_index),
            Err(_) => false,
        }
    })
}

// ----- small checksummed files -----

/// Length of the fixed start of a small file: magic, version, body length.
const SMALL_HEAD_LEN: usize = 8 + 4 + 8;
/// Length of the checksum that ends a small file.
const SMALL_CRC_LEN: usize = 4;

/// Frames the body of a small file: magic, version, body length, body, CRC of all before it.
pub(crate) fn small_file(magic: [u8; 8], body: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(body.len() + 28);
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
    magic: [u8; 8],
    head: &[u8],
    file_len: u64,
) -> Result<u64, StorageError> {
    if file_len < (SMALL_HEAD_LEN + SMALL_CRC_LEN) as u64 || head.len() < SMALL_HEAD_LEN {
        return Err(corrupted(
            path,
            0,
            format_args!("file is {file_len} bytes long, too short to be valid"),
        ));
    }
    if head[..8] != magic {
        return Err(corrupted(path, 0, "bad magic (not the file expected here)"));
    }
    let len = u64_at(head, 12);
    let expected = (SMALL_HEAD_LEN as u64)
        .checked_add(len)
        .and_then(|n| n.checked_add(SMALL_CRC_LEN as u64));
    if expected != Some(file_len) {
        return Err(corrupted(
            path,
            12,
            format_args!("declared body length {len} does not match the file length {file_len}"),
        ));
    }
    Ok(len)
}

/// Checks the format version in a small file's fixed start (after its checksum matched).
fn check_small_file_version(path: &Path, head: &[u8]) -> Result<(), StorageError> {
    let version = u32_at(head, 8);
    if version != FORMAT_VERSION {
        return Err(corrupted(
            path,
            8,
            format_args!(
                "unsupported format version {version} (this build reads {FORMAT_VERSION})"
            ),
        ));
    }
    Ok(())
}

/// Checks a small file and returns its body.
pub(crate) fn parse_small_file<'a>(
    path: &Path,
    magic: [u8; 8],
    data: &'a [u8],
) -> Result<&'a [u8], StorageError> {
    check_small_file_head(path, magic, data, data.len() as u64)?;
    let body_end = data.len() - SMALL_CRC_LEN;
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
    decode_value(body)
        .map_err(|e| corrupted(path, 20, format_args!("cannot decode the hard state: {e}")))
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
            20,
            format_args!("cannot decode the log metadata: {e}"),
        )
    })
}

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
        self.data_start + self.data_len + SMALL_CRC_LEN as u64
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
) -> (Vec<u8>, [u8; SMALL_CRC_LEN], SnapshotLayout) {
    let mut header = Vec::new();
    encode_value(
        &mut header,
        &SnapshotHeader {
            meta: meta.clone(),
            discards_log,
        },
    )
    .expect("encoding integers cannot fail");
    let body_len = 8 + header.len() as u64 + data.len() as u64;
    let mut head = Vec::with_capacity(SMALL_HEAD_LEN + 8 + header.len());
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

/// The CRC of the first `len` bytes of `r` (from its current position), read in blocks: a file of
/// any size is checked in bounded memory.
fn crc_of_stream<R: Read>(r: &mut R, len: u64) -> io::Result<u32> {
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 64 * 1024];
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
    let mut head = [0u8; SMALL_HEAD_LEN + 8];
    let have = usize::try_from(file_len).map_or(head.len(), |l| l.min(head.len()));
    r.seek(SeekFrom::Start(0)).map_err(io)?;
    r.read_exact(&mut head[..have]).map_err(io)?;
    let body_len = check_small_file_head(path, SNAPSHOT_MAGIC, &head[..have], file_len)?;
    let crc_at = file_len - SMALL_CRC_LEN as u64;
    r.seek(SeekFrom::Start(0)).map_err(io)?;
    let computed = crc_of_stream(r, crc_at).map_err(io)?;
    let mut stored = [0u8; SMALL_CRC_LEN];
    r.read_exact(&mut stored).map_err(io)?;
    if computed != u32::from_le_bytes(stored) {
        return Err(corrupted(path, crc_at, "checksum mismatch"));
    }
    check_small_file_version(path, &head)?;
    let bad = |what: &str| corrupted(path, 20, format_args!("cannot decode the snapshot: {what}"));
    if body_len < 8 {
        return Err(bad("no header length"));
    }
    let header_len = u64_at(&head, SMALL_HEAD_LEN);
    if header_len > body_len - 8 {
        return Err(bad("header length past the end"));
    }
    let mut header = vec![0u8; header_len as usize];
    r.seek(SeekFrom::Start((SMALL_HEAD_LEN + 8) as u64))
        .map_err(io)?;
    r.read_exact(&mut header).map_err(io)?;
    let h: SnapshotHeader = decode_value(&header).map_err(|e| bad(&e))?;
    let data_start = (SMALL_HEAD_LEN + 8) as u64 + header_len;
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

    #[test]
    fn frame_round_trip_and_damage() {
        let mut buf = Vec::new();
        let mut payload = Vec::new();
        push_record(
            &mut payload,
            LogId::new(3, 7),
            &EntryPayload::Command(42u64),
        )
        .unwrap();
        push_frame(&mut buf, &payload);
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
    fn finds_intact_record_after_damage() {
        let mut buf = vec![0xAB; 13];
        let mut payload = Vec::new();
        push_record(&mut payload, LogId::new(1, 9), &EntryPayload::<u64>::Blank).unwrap();
        push_frame(&mut buf, &payload);
        assert_eq!(find_intact_record(&buf, 0, 9), Some(13));
        assert_eq!(find_intact_record(&buf, 0, 10), None);
        assert_eq!(find_intact_record(&buf, 14, 0), None);
        assert_eq!(find_intact_record(&[0u8; 3], 0, 0), None);
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
        assert_eq!(parse_segment_header(p, &h).unwrap(), 12345);
        let mut bad = h.clone();
        bad[13] ^= 1;
        assert!(parse_segment_header(p, &bad).is_err());
        assert!(parse_segment_header(p, &h[..10]).is_err());
    }
}
