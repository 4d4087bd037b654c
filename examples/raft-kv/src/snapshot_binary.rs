//! Format 3 of `raft-kv`'s snapshots: binary, length-prefixed, checksummed.
//!
//! Integers are little-endian. The header is fixed-size and has a checksum of its own, so a
//! receiver can check the claims it makes (format, position in the log, lengths) without reading
//! the data:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic: `RAFTKVS` and a zero byte |
//! | 8 | 4 | format version: 3 |
//! | 12 | 1 | 1 if the snapshot covers a log entry (the last applied), 0 if none (term and index are then 0) |
//! | 13 | 8 | last applied entry's term |
//! | 21 | 8 | last applied entry's index |
//! | 29 | 8 | number of key/value records |
//! | 37 | 8 | length in bytes of the records section |
//! | 45 | 8 | length in bytes of the sessions section |
//! | 53 | 4 | CRC-32 of bytes 0 to 52 |
//! | 57 | | records section: per key, in ascending byte order of keys (no two equal), `u32` key length, key (UTF-8), `u32` value length, value (UTF-8) |
//! | | | sessions section: the client sessions ([`KvSessions`]) as JSON (small: bounded by `MAX_SESSIONS`) |
//! | end - 4 | 4 | CRC-32 of every byte before it |
//!
//! Writing reserves the exact size once and writes into that buffer; reading checks every length
//! against the bytes that are there before it allocates.

use std::io::Write;

use raft_core::{LogId, StateMachineError};

use crate::kv_map::{KvMap, KvTable, RECORD_OVERHEAD};
use crate::state_machine::KvSessions;

/// What a format-3 snapshot starts with.
pub(crate) const MAGIC: [u8; 8] = *b"RAFTKVS\0";

/// The format version this module writes and reads.
pub(crate) const FORMAT: u32 = 3;

/// The size of the header, its checksum included.
const HEADER_LEN: usize = 57;

/// The size of the trailing checksum.
const CHECKSUM_LEN: usize = 4;

/// The smallest record: two empty strings' lengths.
const MIN_RECORD_LEN: u64 = RECORD_OVERHEAD;

/// The header's fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Header {
    last_applied: Option<LogId>,
    records: u64,
    records_len: u64,
    sessions_len: u64,
}

/// A decoded snapshot.
#[derive(Debug)]
pub(crate) struct Decoded {
    /// The last applied entry the snapshot covers.
    pub(crate) last_applied: Option<LogId>,
    /// The table.
    pub(crate) data: KvTable,
    /// The client sessions.
    pub(crate) sessions: KvSessions,
}

fn error(message: impl std::fmt::Display) -> StateMachineError {
    StateMachineError::new(format!("damaged key-value snapshot (format 3): {message}"))
}

/// Whether `data` claims to be of this format (starts with its magic).
pub(crate) fn is_format_3(data: &[u8]) -> bool {
    data.starts_with(&MAGIC)
}

/// Serializes a snapshot of `records` (sorted by key, unique:
/// [`KvView::sorted`](crate::kv_map::KvView::sorted)) and `sessions`, covering the log up to
/// `last_applied`, in one pass over the records, into a buffer of the size reserved up front
/// (`records_len`, the table's maintained
/// [`records_len`](crate::kv_map::KvView::records_len), and a counting pass over the small
/// sessions table); the header's lengths are those of what was written.
pub(crate) fn encode(
    last_applied: Option<LogId>,
    records: &[(&str, &str)],
    records_len: u64,
    sessions: &KvSessions,
) -> Result<Vec<u8>, StateMachineError> {
    let mut counter = ByteCounter(0);
    serde_json::to_writer(&mut counter, sessions).map_err(StateMachineError::new)?;
    let reserve = (HEADER_LEN as u64 + CHECKSUM_LEN as u64)
        .checked_add(records_len)
        .and_then(|t| t.checked_add(counter.0))
        .and_then(|t| usize::try_from(t).ok())
        .ok_or_else(|| StateMachineError::new("the snapshot is too large for this machine"))?;
    let mut out = Vec::with_capacity(reserve);
    out.resize(HEADER_LEN, 0);
    for (key, value) in records {
        for field in [key, value] {
            let len = u32::try_from(field.len()).map_err(|_| {
                StateMachineError::new("a key or value of 4 GiB or more cannot be snapshotted")
            })?;
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(field.as_bytes());
        }
    }
    let records_len = (out.len() - HEADER_LEN) as u64;
    serde_json::to_writer(&mut out, sessions).map_err(StateMachineError::new)?;
    let header = Header {
        last_applied,
        records: records.len() as u64,
        records_len,
        sessions_len: (out.len() - HEADER_LEN) as u64 - records_len,
    };
    out[..HEADER_LEN].copy_from_slice(&header.to_bytes());
    let checksum = crc32fast::hash(&out);
    out.extend_from_slice(&checksum.to_le_bytes());
    Ok(out)
}

/// Checks what can be checked without building the table: the header (magic, version, its
/// checksum), that it covers the log up to `expected` exactly (a snapshot that covers no entry is
/// refused: a leader never sends one), that the lengths add up to the size of `data`, and the
/// checksum of the whole (at CRC-32 speed, several GB/s).
pub(crate) fn check(data: &[u8], expected: LogId) -> Result<(), StateMachineError> {
    let header = Header::read(data)?;
    if header.last_applied.is_none() {
        return Err(StateMachineError::new(
            "a key-value snapshot that covers no log entry",
        ));
    }
    header.check_position(expected)?;
    check_checksum(data)
}

/// Decodes a snapshot that must cover the log up to `expected`; refuses anything damaged.
pub(crate) fn decode(data: &[u8], expected: LogId) -> Result<Decoded, StateMachineError> {
    let header = Header::read(data)?;
    header.check_position(expected)?;
    check_checksum(data)?;
    // `Header::read` checked that the sections fit `data` exactly.
    let records_end = HEADER_LEN + header.records_len as usize;
    let mut records = Reader {
        bytes: &data[HEADER_LEN..records_end],
    };
    // `Header::read` refused a count above one record per `MIN_RECORD_LEN` bytes of a records'
    // section that fits `data`, so this reserves no more than the snapshot's size allows.
    let mut table = KvMap::with_capacity(usize::try_from(header.records).unwrap_or(0));
    let mut previous: Option<&str> = None;
    for i in 0..header.records {
        let key = records
            .string()
            .map_err(|e| error(format!("record {i}: key {e}")))?;
        let value = records
            .string()
            .map_err(|e| error(format!("record {i}: value {e}")))?;
        if previous.is_some_and(|p| p >= key) {
            return Err(error(format!(
                "record {i}: keys are not in strictly ascending order"
            )));
        }
        previous = Some(key);
        table.insert(key.to_string(), value.to_string());
    }
    if !records.bytes.is_empty() {
        return Err(error(format!(
            "{} bytes after the last of {} records",
            records.bytes.len(),
            header.records
        )));
    }
    let sessions_end = records_end + header.sessions_len as usize;
    let sessions: KvSessions = serde_json::from_slice(&data[records_end..sessions_end])
        .map_err(|e| error(format!("sessions: {e}")))?;
    Ok(Decoded {
        last_applied: header.last_applied,
        data: KvTable::new(table),
        sessions,
    })
}

fn check_checksum(data: &[u8]) -> Result<(), StateMachineError> {
    let (body, stored) = data.split_at(data.len() - CHECKSUM_LEN);
    let stored = u32::from_le_bytes(stored.try_into().map_err(|e| error(format!("{e}")))?);
    let computed = crc32fast::hash(body);
    if stored != computed {
        return Err(error(format!(
            "checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
        )));
    }
    Ok(())
}

impl Header {
    /// The size of the whole snapshot this header describes; `None` on overflow.
    fn total_len(&self) -> Option<u64> {
        (HEADER_LEN as u64 + CHECKSUM_LEN as u64)
            .checked_add(self.records_len)?
            .checked_add(self.sessions_len)
    }

    fn to_bytes(self) -> [u8; HEADER_LEN] {
        let mut out = Vec::with_capacity(HEADER_LEN);
        let last = self.last_applied.unwrap_or_default();
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&FORMAT.to_le_bytes());
        out.push(u8::from(self.last_applied.is_some()));
        out.extend_from_slice(&last.term.to_le_bytes());
        out.extend_from_slice(&last.index.to_le_bytes());
        out.extend_from_slice(&self.records.to_le_bytes());
        out.extend_from_slice(&self.records_len.to_le_bytes());
        out.extend_from_slice(&self.sessions_len.to_le_bytes());
        let checksum = crc32fast::hash(&out);
        out.extend_from_slice(&checksum.to_le_bytes());
        let mut bytes = [0; HEADER_LEN];
        bytes.copy_from_slice(&out);
        bytes
    }

    /// Reads and checks the header of `data`: magic, version, checksum, lengths that are possible
    /// and add up to `data`'s length.
    fn read(data: &[u8]) -> Result<Header, StateMachineError> {
        if !is_format_3(data) {
            return Err(error("it does not start with the format's magic"));
        }
        if data.len() < HEADER_LEN + CHECKSUM_LEN {
            return Err(error(format!(
                "{} bytes, shorter than the header and checksum",
                data.len()
            )));
        }
        let mut r = Reader {
            bytes: &data[MAGIC.len()..HEADER_LEN],
        };
        // The slice is the header's exact size: these reads cannot run short.
        let mut field = || -> Result<[u64; 8], String> {
            Ok([
                u64::from(r.u32()?),
                u64::from(r.u8()?),
                r.u64()?,
                r.u64()?,
                r.u64()?,
                r.u64()?,
                r.u64()?,
                u64::from(r.u32()?),
            ])
        };
        let [version, has_last, term, index, records, records_len, sessions_len, stored] =
            field().map_err(|e| error(format!("header field {e}")))?;
        let computed = crc32fast::hash(&data[..HEADER_LEN - CHECKSUM_LEN]);
        if stored != u64::from(computed) {
            return Err(error("header checksum mismatch"));
        }
        if version != u64::from(FORMAT) {
            return Err(StateMachineError::new(format!(
                "unsupported binary key-value snapshot format {version} (this version reads {FORMAT})"
            )));
        }
        let last_applied = match (has_last, term, index) {
            (0, 0, 0) => None,
            (1, term, index) => Some(LogId::new(term, index)),
            _ => return Err(error("malformed last applied entry")),
        };
        let header = Header {
            last_applied,
            records,
            records_len,
            sessions_len,
        };
        if header.total_len() != Some(data.len() as u64) {
            return Err(error(format!(
                "the header announces {records_len} bytes of records and {sessions_len} of \
                 sessions, which does not match the snapshot's {} bytes",
                data.len()
            )));
        }
        if records > records_len / MIN_RECORD_LEN {
            return Err(error(format!(
                "{records} records cannot fit in {records_len} bytes"
            )));
        }
        Ok(header)
    }

    fn check_position(&self, expected: LogId) -> Result<(), StateMachineError> {
        let covered = self.last_applied.unwrap_or_default();
        if covered != expected {
            return Err(StateMachineError::new(format!(
                "snapshot data covers the log up to {covered} but its metadata says {expected}"
            )));
        }
        Ok(())
    }
}

/// Reads fields from the front of a byte slice.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.bytes.len() {
            return Err(format!("of {n} bytes where {} remain", self.bytes.len()));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        self.take(N)?.try_into().map_err(|e| format!("{e}"))
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A length-prefixed UTF-8 string, borrowed from the input.
    fn string(&mut self) -> Result<&'a str, String> {
        let len = self.u32()? as usize;
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes).map_err(|e| format!("is not UTF-8: {e}"))
    }
}

/// Counts the bytes written to it (to size the sessions section before writing it).
struct ByteCounter(u64);

impl Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
