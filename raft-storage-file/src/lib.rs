#![doc = include_str!("../README.md")]
//!
//! ## What is durable when each method returns
//!
//! With [`FsyncPolicy::Always`] (the default):
//!
//! | method | done before it returns `Ok` | durable |
//! |---|---|---|
//! | `save_hard_state` | `hard_state.tmp` written and fsynced, renamed over `hard_state`, directory fsynced | the new term and vote; a crash at any point leaves the old or the new one |
//! | `append` | the entries written as one batch (header, records, trailer), followed by the end mark, with one `write` and one `fdatasync` (when a new segment is started first: its header and end mark written to a temporary file, the file allocated to the segment size, fsynced, renamed, directory fsynced, then `log_meta` replaced to name it the newest segment) | every entry; a crash before the return keeps all of them or none (see recovery) |
//! | `truncate` | in the segment holding `from`: if `from` starts a batch, the file cut there with `ftruncate` and fsynced, then (preallocation on) an end mark written there and fsynced, the file allocated to the segment size again and fsynced; otherwise a truncation record (and the end mark) appended with one `write` and one `fdatasync` (cutting inside a batch would leave it incomplete). When later segments go too, `log_meta` first replaced to name the new newest segment (and, if the segment holding `from` is also changed, to record the truncation, cleared at the end), the segments unlinked and the directory fsynced | the truncation, all or nothing |
//! | `purge` | `log_meta` (the purge point) replaced atomically; then the segments it makes useless are unlinked | the new purge point; a crash before the unlinks are durable leaves segments that the next open deletes |
//! | `install_snapshot` | nothing, if the snapshot's last index is at or below the stored snapshot's (a snapshot never moves backwards); otherwise `snapshot` replaced atomically, then, when the snapshot discards the log, every segment unlinked, the log directory fsynced, and `log_meta` replaced | the snapshot and its effect on the log, all or nothing (the snapshot file is the commit point, see recovery) |
//! | `hard_state`, `log_state`, `entries`, `snapshot`, `snapshot_chunk` | nothing is written | |
//! | [`FileStorage::reset_log_to_snapshot`] | nothing, unless the log ends before the stored snapshot; then `log_meta` (the snapshot's last entry as the purge point) replaced atomically, every segment unlinked, the log directory fsynced | the new purge point, all or nothing (`log_meta` is the commit point) |
//! | [`FileStorage::close`], or dropping the storage | if no write failed: `clean` written atomically (see [clean shutdown](#clean-shutdown)); then the lock released | the record of a clean shutdown |
//!
//! "Atomically" means: write a temporary file, fsync it, rename it over the old one, fsync the
//! directory. A rename is atomic, so a reader sees the old or the new file, never a mix; a checksum
//! in every file catches damage after that.
//!
//! With [`FsyncPolicy::Never`] nothing is fsynced: every method's effect survives a crash of the
//! *process* (it is in the operating system's page cache), but a crash of the *machine* may lose or
//! damage any of it, which can make a node forget a vote or an acknowledged entry. It exists for
//! tests and benchmarks only.
//!
//! If an operation fails half-way (an I/O error, a failed fsync), the storage stops: every later
//! call fails until it is reopened, because memory and disk may disagree (and after a failed fsync
//! the kernel may have dropped the dirty pages, so retrying is unsafe). The driver stops the node on
//! any storage error anyway.
//!
//! ## On-disk format
//!
//! ```text
//! DIR/LOCK                          flock()ed while open; holds "pid N" for error messages
//! DIR/hard_state                    small file: HardState
//! DIR/log_meta                      small file: last purged LogId, newest segment, truncation in progress
//! DIR/snapshot                      small file: SnapshotMeta, "discards the log" flag, data
//! DIR/clean                         small file: where the log ended at a clean shutdown; present
//!                                   only from a clean close to the next open
//! DIR/log/00000000000000000001.log  segments, named by the index of their first record (20 digits)
//! DIR/log/00000000000000004097.log
//! *.tmp                             a file being replaced; deleted by the next open
//! ```
//!
//! All integers are little-endian; every checksum is CRC-32 (IEEE, via `crc32fast`).
//!
//! * **Small file**: magic (8 bytes: `raftHS\0\0`, `raftMETA`, `raftSNAP` or `raftCLEN`), format
//!   version (u32, 3), body length (u64), body, CRC of everything before it (u32). The body of
//!   `hard_state`, `log_meta` and `clean` is the value in MessagePack (see below); the body of
//!   `snapshot` is the length of a header (u64), the header (the `SnapshotMeta` and the "discards
//!   the log" flag, in MessagePack), then the snapshot data as raw bytes. `clean` holds the log's
//!   last entry (term and index), the newest segment's first index and the byte offset where its
//!   batches end.
//! * **Segment**: a 24-byte header, then batches back to back, then an end mark; the rest of the
//!   file, if any, is free space (zero bytes).
//!   * header: magic `raftLOG\0`, format version (u32), first index (u64, equal to the file name),
//!     CRC of the 20 bytes before (u32). Written whole, with an end mark after it, before the file
//!     gets its name; the file is then allocated to [`Options::segment_size`] (see
//!     [preallocation](#preallocated-segments)).
//!   * batch: what one `append` wrote, with one `write`: a 28-byte batch header, the records of its
//!     entries, an 8-byte trailer.
//!     * batch header: magic `rBAT`, first index (u64), entry count (u32), length of the records
//!       (u64), CRC of the 24 bytes before (u32).
//!     * trailer: magic `rEND`, then the batch header's CRC (u32). Written last, in the same
//!       `write`: a batch whose trailer is on disk was written to its end.
//!     * a **truncation record** is a batch of no entries (count 0, no records): "the entries from
//!       its first index on, written before it, are deleted". `truncate` appends one when it cuts
//!       inside a batch; the deleted records' bytes stay in the file until the segment is purged.
//!   * **end mark**: magic `rEOL`, its own byte offset in the file (u64), CRC of the 12 bytes before
//!     (u32): "the batches end here; only free space follows". Each append writes its batch over
//!     the previous mark and a new mark after the batch, with the same `write`. A file cut at the
//!     end of its batches (by `truncate`, or by recovery cutting a torn tail) ends there without a
//!     mark, which means the same.
//!   * record frame: payload length (u32), CRC of the length bytes and the payload (u32), payload.
//!   * payload: the entry's term and index as unsigned LEB128 varints, then its `EntryPayload<C>`
//!     in MessagePack. Term and index come first, outside the MessagePack value, so that recovery
//!     reads them without decoding the command.
//!
//!   A segment's batches, truncation records applied in order, hold consecutive indexes from its
//!   first index; segments are contiguous (each starts right after the previous one ends). A new
//!   segment is started when an append finds the last one at or over [`Options::segment_size`]
//!   bytes; a batch is never split between segments, so one append is one `write` to one file.
//!   Each batch costs 36 bytes besides its records; each append writes 16 more, the end mark, which
//!   the next one overwrites.
//!
//! **Versions.** This is format version 3. A file in another version is refused at open with an
//! error naming both versions. There is no upgrade path: no deployment depends on an older one.
//! Version 2 had no end mark (a segment ended where its file did, so it could not be preallocated);
//! version 1 held records back to back, without batches, so that recovery could not tell a torn
//! write from damage at the end of the log.
//!
//! ### Preallocated segments
//!
//! A new segment file is allocated to [`Options::segment_size`] when it is created (`fallocate`;
//! [`Options::preallocate`], on by default), before it gets its name. Appends then write inside the
//! file's length, into blocks it already owns, and each `fdatasync` commits the data without a new
//! file length and new blocks. On the ext4 disks of the repository's benches that took about a
//! third off one 128-byte write and `fdatasync` (for example 173 against 114 µs), and about 13% off
//! a one-client write through a three-node cluster (`BENCHMARKS.md`). A file system without
//! `fallocate` gets a file that grows with each append, as without the option.
//!
//! Because the file's length no longer says where the log ends, the end mark does: recovery takes
//! zero bytes after the last batch *without* a mark as a possible loss, exactly as before (see
//! recovery, step 4), and zero bytes after a mark as free space. A segment cut at the end of its
//! batches (a truncation at a batch boundary, a torn tail cut by recovery) gets its mark and free
//! space back right after the cut: the mark written and fsynced first, then the file allocated
//! again and fsynced, so a crash in between leaves a file ending at its batches, a torn mark (cut,
//! holding nothing) or a marked end, never zeros without a mark. The costs: a segment takes its
//! full size on disk from its creation; an append writes 16 bytes more; such a cut takes two more
//! fsyncs.
//!
//! In memory, the storage keeps the hard state, the purge point, the snapshot's metadata (and its
//! file open, see [snapshots](#snapshots)), and for each record its segment, byte offset, length and
//! term (about 24 bytes per entry). `entries`
//! reads the records' bytes from the segment (one read per segment touched), checks their checksums
//! and decodes them.
//!
//! ### Encoding: MessagePack with named fields
//! Entry payloads and metadata are encoded with [`rmp-serde`](https://docs.rs/rmp-serde)
//! (`write_named`: structs as maps with field names), the encoding `raft-net-tcp` already uses on
//! the wire. MessagePack is compact for what it is (binary, variable-length integers) and, above
//! all, self-describing, so **every serde command type round-trips**: internally tagged enums such
//! as raft-kv's `KvCommand` (`#[serde(tag = "op")]`), untagged enums, `#[serde(flatten)]`,
//! `skip_serializing_if`, `serde_json::Value`. A command type that can cross the wire can be stored;
//! no dependency is added. The non-self-describing candidates were rejected for that reason:
//! postcard and bincode cannot decode internally tagged enums at all (bincode is also no longer
//! developed). The cost is field and variant names in every entry (an `EntryPayload::Command`
//! spends 8 bytes on its variant name; a `{key, value}` struct command 10 bytes on field names).
//! `append` also decodes every entry back before writing anything and refuses one that does not
//! with [`StorageError::InvalidRequest`] (a type whose `Serialize` and `Deserialize` disagree), so a
//! bad type fails on its first write rather than at the next restart. The checksums and the checks
//! on open protect the bytes, not whether they decode: without this check such an entry would be
//! acknowledged and then unreadable (in a one-node cluster nothing else decodes it before it
//! commits). It costs one decode per entry on the blocking thread, before the write (about 8% of
//! the process's CPU in the repository's `loadgen filetcp 256` bench).
//!
//! ## Snapshots
//!
//! `install_snapshot` ignores a snapshot whose last log index is at or below the stored one's
//! (`Ok`, nothing written), so the stored snapshot only moves forwards, and a snapshot's last log
//! id names it uniquely within a storage. A newer one is written as its header, the data and the
//! checksum, straight from the caller's buffer (the data is not copied into a file image first).
//!
//! `snapshot_chunk` (the leader reading a snapshot to send it to a follower, one chunk per request)
//! does one positioned read of just the requested range, on the blocking pool like the other I/O:
//! never the whole file per chunk, and memory bounded by the chunk size. `snapshot` reads the whole
//! file once, its data straight into the returned buffer.
//!
//! **Integrity of chunk reads.** The snapshot file has one CRC over all of it. The storage checks it
//! whole when it opens the directory (streamed in 64 KiB blocks, so a snapshot of any size opens in
//! bounded memory) and then **keeps that file open**; every later read, chunks included, goes
//! through that open file, and `snapshot` checks the CRC again on every call (it reads everything
//! anyway). A snapshot this storage installs is written by it, then opened, and served the same way.
//! Chunk reads are not checked one by one: that would need either the whole file read for every
//! chunk (the cost `snapshot_chunk` exists to avoid) or per-block checksums (a format change). Nor is
//! the whole file checked again when a transfer starts: the driver awaits storage calls one at a
//! time, and streaming a snapshot of several GiB inside one call would stall the node (heartbeats
//! included) for seconds. What this guarantees:
//! * a chunk holds bytes of the snapshot whose id the caller gave, never of another: the id is
//!   compared under the lock that `install_snapshot` holds while it replaces both the file and the
//!   open handle, and reads go through the handle, never by name (a file put in its place from
//!   outside is not read). A snapshot replaced between two chunk reads gives `Ok(None)` from the
//!   first read after the replacement;
//! * the bytes passed the whole-file check when the storage opened them (or were written by it);
//!   a file shorter than when it was checked is reported as [`StorageError::Corrupted`].
//!
//! What it does not catch: a disk that silently returns other bytes for the file after the check
//! (bit rot between the check and a chunk read). `snapshot`, and the next open, do catch it.
//!
//! The open snapshot file costs one file descriptor.
//!
//! ## Recovery, and why it is correct
//!
//! [`FileStorage::open`] takes the lock, then reads and checks everything before it changes
//! anything:
//!
//! 1. Temporary files (`*.tmp`) are deleted: they are writes that never reached their rename, so they
//!    were never part of the durable state.
//! 2. `hard_state`, `log_meta`, `snapshot` and `clean` must be whole with a valid checksum (the
//!    snapshot is checked in blocks, not read into memory, and kept open, see
//!    [snapshots](#snapshots)); a missing `hard_state` (when anything else exists) or a damaged one
//!    is refused. Since they are only ever replaced by rename, a crash cannot damage them: damage
//!    means the disk or someone else did.
//! 3. Every segment is read, batch by batch. Its header must be valid. A batch is **complete** when
//!    its header is valid and its trailer, at the end the header announces, is valid: the `write`
//!    that carried it reached its last byte. Every record of a complete batch must be intact and hold
//!    the index its position implies; any damage in it is refused. Segments must be contiguous, and
//!    the first must start at or before the entry after the purge point: a gap is a missing segment,
//!    refused. The newest segment named in `log_meta` must exist: that catches a lost last segment,
//!    which contiguity cannot. (Segments that an interrupted purge or truncation was deleting, and
//!    segments past the newest one, are left out of these checks: unlinks need not reach the disk in
//!    the order they were made, and step 5 deletes those segments anyway. A segment past the newest
//!    one never holds an acknowledged record: `log_meta` names a new segment before anything is
//!    appended to it, and a truncation names the new newest segment before it deletes anything.)
//! 4. **The end of the log: what is cut, what is refused.** The batches of a segment end where the
//!    file does, or at a valid end mark for that offset followed by zero bytes only (free space).
//!    Data after a valid end mark is refused: an append writes over the mark before anything after
//!    it, so no crash leaves data there (a write at the mark's offset that was lost, the mark's old
//!    bytes showing again, would, and taking the mark then would silently drop acknowledged
//!    entries). Anything else that follows the last complete batch of the last segment (the
//!    *tail*) is cut if, and only if, no clean shutdown was recorded (see
//!    [clean shutdown](#clean-shutdown)) and the tail has one of these shapes, each a batch or end
//!    mark that is *incomplete* (its trailer, or all of the mark, is not on disk) followed by
//!    nothing or by zero bytes only ([`TailDamage`] names them):
//!    * only zero bytes (`Zeroed`);
//!    * the first bytes of the end mark for that offset (`TornEndMark`);
//!    * fewer bytes than a batch header, the end of the file (`ShortHeader`);
//!    * a batch header's worth of bytes that is not a valid header, with only zero bytes after the
//!      header's span (`TornHeader`);
//!    * a valid batch header, at the right index, announcing an end past the end of the file
//!      (`ShortBatch`);
//!    * a valid batch header, the trailer at the end it announces zero bytes or its first bytes
//!      then zero bytes, and only zero bytes after it (`MissingTrailer`).
//!
//!    Everything else is refused as [`StorageError::Corrupted`], naming the file and offset: damage
//!    inside a complete batch (a record, or a trailer that is neither valid nor a torn prefix of
//!    itself), a damaged batch header followed by data, data after an incomplete batch or after an
//!    end mark, an incomplete batch in a segment that is not the last, a batch or record at the
//!    wrong index, an entry that does not decode (found when it is read), and, after a clean
//!    shutdown, any incomplete batch or end mark at all.
//!
//!    *Why cutting these loses nothing acknowledged.* `append` writes its whole batch with one
//!    `write`, trailer last, then the end mark, and returns only after `fdatasync`; the next
//!    `append` starts after it returned. So at most one batch, the last, is ever not yet durable,
//!    and every batch before it is complete on disk. A crash during that last `append` leaves any
//!    prefix of its bytes on disk (a process that dies in a `write` leaves a prefix), over the old
//!    mark and free space, and the file's length anywhere up to the write's end (the length can
//!    reach the disk before the data, whose pages then read as zeros). Those outcomes without the
//!    trailer, or without the whole new mark, on disk are the shapes above; the `append` that wrote
//!    them never returned, so nothing cut was acknowledged (a batch whose trailer is on disk is kept
//!    even if its mark is not). The refused shapes are what that crash cannot leave: damage in a
//!    batch whose trailer is on disk happened after its write reached its end; nothing is written
//!    after the last batch's mark; a header, trailer or mark byte that is neither what was written
//!    nor zero was changed afterwards.
//!
//!    *Refused although a crash can leave it* (refusing loses nothing, but an operator must cut the
//!    file at the reported offset): a file system that wrote the trailer's page of the last,
//!    unacknowledged batch but not an earlier page of it (pages need not reach the disk in order
//!    before the fsync), which looks like a complete batch with damage inside, or, likewise, a
//!    later page of it but not the first, which leaves the old end mark followed by data; a file
//!    system that exposes stale non-zero data in a crashed write's blocks (ext4 `data=writeback`).
//!
//!    *The zeroed tail is cut* (after a crash only). Zero bytes where the next batch (or the mark)
//!    would start are what a file system leaves when a file's new length reached the disk and its
//!    data did not, or when a complete batch reached the disk and its mark, in the same write, did
//!    not; refusing them would stop a node that crashed on such a file system from restarting without an
//!    operator, for the most common shape of a torn write there. No complete batch is all zeros (its
//!    header starts with a magic), so the zeros hold nothing that could be checked. The cost: a disk
//!    that zeroes a complete last batch (or the whole body of the last segment) after a crash leaves
//!    the same bytes. It is cut and reported as such ([`CutEntries::AtMost`], from the next index,
//!    as many entries as fit), so the layer above can treat those entries as possibly acknowledged.
//!
//!    *What no segment shows.* Complete batches lost whole from the end of the log (the file cut at
//!    a batch boundary, or a complete last batch zeroed or its trailer zeroed) leave exactly what a
//!    crash before, or during, those appends leaves. After a crash nothing else on disk records
//!    where the log ended: `log_meta` names the newest segment (so a lost last segment is refused)
//!    but is rewritten only when a segment is started, truncated away or purged, not per append
//!    (that would cost a second fsync and rename on every append). So after a crash such a loss at a
//!    batch boundary opens as a shorter log with nothing to report, and a zeroed or trailer-less
//!    last batch is cut and reported. After a clean shutdown all of these are refused, since `clean`
//!    records where the newest segment's batches end and the last entry. A loss that takes the log below the
//!    stored snapshot's index is reported ([`RecoveryReport::log_behind_snapshot`]).
//! 5. Interrupted operations are completed, each from its commit point:
//!    * `install_snapshot` that discards the log: the snapshot file records that it does. If it holds
//!      a snapshot past the purge point (or at it with another term), the discard did not finish:
//!      every segment is deleted and the purge point set to the snapshot's last entry. (The purge
//!      point never moves back, so once the discard finished this condition stays false.)
//!    * a truncation recorded in `log_meta`: the records at and after it are deleted, then the record
//!      cleared. Until the record is cleared, no append happens, so it never deletes new entries.
//!    * a truncation that deleted segments from the end: segments past the newest one are deleted
//!      (so is an empty segment an interrupted append had just created);
//!    * a purge: segments whose records are all at or below the purge point are deleted.
//!
//!
//! 6. If the open found a clean shutdown, it removes `clean` (unlink, directory fsync) before it
//!    returns, so before anything is written.
//!
//! Throughout, segments are only deleted from the end (truncation, discard) or from the start
//! (purge), so the segments that matter stay contiguous whichever of those unlinks reached the disk
//! before a crash.
//!
//! Not detected: losing the `snapshot` file entirely (nothing else refers to it); the storage then
//! has no snapshot.
//!
//! ### What the report tells the layers above
//!
//! What the open did is in [`FileStorage::recovery_report`], and every cut is logged (`tracing`
//! WARN) with the file, the byte range and the entries cut. A cut is in
//! [`RecoveryReport::torn_tail`]: the file, the offset and bytes cut, its shape, and the entries it
//! held ([`CutEntries`]: the range the batch header announced, or, without a valid header, at most
//! as many as fit, or none). [`RecoveryReport::cut_entries`] is that range, `None` when nothing cut
//! can have held an entry. On a disk that keeps what was fsynced, a cut entry was never acknowledged
//! by this storage (the `append` that wrote it did not return); a disk that loses a complete last
//! batch after a crash can make the same bytes, which is why the range is reported at all: a node
//! that must not trust its disk that far treats it as entries it may have acknowledged.
//! [`RecoveryReport::clean_shutdown`] says whether the previous run shut down cleanly (and so
//! whether all of the above was checked against the recorded end of the log).
//! [`RecoveryReport::log_behind_snapshot`] reports a log that ends before the stored snapshot's last
//! entry: a state, not repaired by the open (the snapshot covers the missing entries);
//! [`FileStorage::reset_log_to_snapshot`] makes the log go on after the snapshot.
//!
//! ## Clean shutdown
//!
//! Closing the storage ([`FileStorage::close`], or dropping it) records a clean shutdown if no
//! write failed: it writes `clean` atomically after the last write. Every write before it was
//! fsynced before it returned, so `clean` on disk says that the log files are complete; it records
//! where the log ends: the last entry, the newest segment and where its batches end. The next open
//! then refuses any incomplete batch (step 4 cuts nothing) and any other end of the log than the
//! recorded one (another newest segment, end of its batches or last entry: complete batches lost
//! or added), and removes `clean` before it returns (step 6).
//!
//! `clean` is removed at open rather than at the first write so that no write path needs a check of
//! its own; an open followed by a crash before any write only means the next open checks the end of
//! the log as after a crash, which cuts nothing that a complete write left.
//!
//! Not recorded: after a failed write (the storage stopped: memory and disk may disagree), or when a
//! panic poisoned the storage's lock. A process that dies, or exits without dropping the storage,
//! writes nothing; the next open checks the log as after a crash. With [`FsyncPolicy::Never`],
//! `clean` is not fsynced either, and after a machine crash may be on disk when data written before
//! it is not: the next open then refuses (safe, but an operator must act). Dropping the storage
//! writes `clean` in the dropping thread (with fsync on: a few milliseconds, when the node stops);
//! [`FileStorage::close`] does it on the blocking pool and returns the error if it fails.
//!
//! **How this is tested.** `tests/corruption.rs` is the table of damage and what `open` returns
//! for each (after a crash and after a clean shutdown); `tests/crash.rs` damages files the way a
//! crash or a bad disk would at every offset; and the crate's unit tests (`src/crash_points.rs`) cut the process at *every*
//! file system step (each create, write, fsync, rename, truncate, unlink and directory fsync) of
//! `install_snapshot` inside the log, ahead of it and conflicting with it, of `install_snapshot`
//! followed by `purge`, of a `purge` removing several segments or all of them, of a `truncate`
//! across segments (at a batch boundary and inside a batch), of a `truncate` inside a batch then an
//! `append`, and of an `append` that starts a segment; each cut directory must reopen to
//! exactly the state before the operation or after one of its calls (snapshot, purge point, every
//! entry readable, nothing else lost), later cuts never to an earlier state, and a crash at every
//! step of that recovery must reach the same state. The steps are counted by a seam compiled only
//! into those tests (`cfg(test)`); it is not part of the API. They model a crash of the process;
//! what a machine crash may additionally lose (steps not yet fsynced) is covered by the fsync
//! ordering above, and unlinks reaching the disk out of order by a test of their own.
//!
//! ## Group commit
//!
//! One `append` call is one batch: one `write` of its header, all its entries' frames and its
//! trailer, and one fsync. The driver owns the storage and calls it one method at a time; it merges
//! the proposals and entries that arrive while the previous write is in flight into its next
//! `append`, so under load many entries share one fsync (the bench `benches/append.rs` measures
//! batches of 1, 16 and 256). A future commit task writing several queued batches with one `write`
//! and one fsync needs no format change: a crash during that write could leave complete batches
//! followed by an incomplete one; recovery keeps the complete ones and cuts the last (none of them
//! was acknowledged before the fsync).
//!
//! ## Threads: `spawn_blocking`
//!
//! File I/O and fsync block. Each method that touches the disk runs on tokio's blocking pool
//! (`tokio::task::spawn_blocking`) over the state kept behind an `Arc<Mutex<_>>`; an append's
//! entries are encoded (and decoded back, the check described above) on the blocking thread too,
//! under the lock, right before their write: what moves there is the list of shared entries, and
//! the CPU work of a batch stays off the caller's runtime. This keeps the runtime's worker threads
//! (on a current-thread runtime: the only thread) free during an fsync of several milliseconds and
//! during the encoding of a large batch, so a leader's peer tasks keep replicating while its own
//! append is in flight. The cost is a thread hand-off (microseconds) per call. `hard_state` and `log_state`
//! answer from memory without the hand-off; `snapshot` and `snapshot_chunk` read on the blocking
//! pool too. Because of `spawn_blocking`, the methods must be called inside a tokio runtime (of any
//! flavour), as the driver does.
//!
//! Cancellation: if the future of a call is dropped, the blocking operation still runs to its end
//! (it is never left half-done); a later call, or dropping the [`FileStorage`], waits for it (the
//! drop then releases the lock, so the directory can be reopened at once).
//! The operation may thus be durable although its caller never saw it return, as after a crash.
//!
//! ## Locking
//!
//! `DIR/LOCK` is locked with `flock` (`LockFileEx` on Windows) through `fs4`, for as long as the
//! storage is open. A second [`FileStorage::open`] of the directory, from this process or
//! another, fails with [`StorageError::Io`] of kind [`std::io::ErrorKind::WouldBlock`] naming the
//! directory and the holder's pid. The lock is released when the storage is dropped or the process
//! dies. A held lock is retried for about 200 ms before `open` gives up: while another thread of the
//! process spawns a child, the child shares the lock's descriptor until it execs, so a lock just
//! released can look held for a moment.
#![warn(missing_docs)]

#[cfg(test)]
mod crash_points;
mod faults;
mod format;
mod report;
mod scan;
mod snapshot_file;
mod store;

use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use raft_core::{
    Entry, HardState, LogId, LogIndex, LogState, RaftStorage, Snapshot, SnapshotChunk, StorageError,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use report::{
    CutEntries, LogBehindSnapshot, RecoveryReport, TailDamage, TornTail, MIN_RECORD_BYTES,
};
use store::Store;

/// When the storage calls `fsync`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Before every mutating method returns (see the [crate docs](crate#what-is-durable-when-each-method-returns)).
    /// The only safe choice for a real node.
    #[default]
    Always,
    /// Never. **Unsafe**: a machine crash (power loss, kernel panic) may lose or damage anything
    /// written, so a node may forget its vote or entries it acknowledged, which breaks Raft's
    /// guarantees. A process crash loses nothing. For tests and benchmarks only.
    Never,
}

/// Settings of a [`FileStorage`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    fsync: FsyncPolicy,
    segment_size: u64,
    preallocate: bool,
}

/// The default [`Options::segment_size`]: 64 MiB. A purge frees space in steps of about this size,
/// and a log of a few GiB is a few dozen files.
const DEFAULT_SEGMENT_SIZE: u64 = 64 * 1024 * 1024;

impl Default for Options {
    fn default() -> Self {
        Options {
            fsync: FsyncPolicy::Always,
            segment_size: DEFAULT_SEGMENT_SIZE,
            preallocate: true,
        }
    }
}

impl Options {
    /// The fsync policy (default [`FsyncPolicy::Always`]).
    pub fn fsync(mut self, policy: FsyncPolicy) -> Self {
        self.fsync = policy;
        self
    }

    /// The size in bytes at which a segment is full: the next append starts a new one (default 64
    /// MiB). A segment can exceed it by one batch. Smaller segments let purges free space sooner;
    /// larger ones mean fewer files. At least 1.
    pub fn segment_size(mut self, bytes: u64) -> Self {
        self.segment_size = bytes.max(1);
        self
    }

    /// Whether a new segment file is allocated to [`Options::segment_size`] when it is created
    /// (default `true`), with `fallocate` where the file system has it. Appends then write into
    /// blocks the file already owns, inside its length, so each append's `fdatasync` commits the
    /// data without also committing a new file length and newly allocated blocks: on ext4 that
    /// made one append and `fdatasync` of 128 bytes take about a third less time (see the
    /// repository's `BENCHMARKS.md`). The cost is disk space: each segment takes its full size
    /// from the moment it is created. Where the file system cannot preallocate, the segment grows
    /// with each append as it does without this option. Either way the format is the same (see
    /// [the format](crate#on-disk-format)): the end of the log is marked, not taken from the file's
    /// length.
    pub fn preallocate(mut self, on: bool) -> Self {
        self.preallocate = on;
        self
    }

    /// Whether new segments are preallocated.
    pub fn preallocates(&self) -> bool {
        self.preallocate
    }

    /// How many bytes a segment file is allocated to: the segment size, or 0 without
    /// preallocation.
    pub(crate) fn preallocated_len(&self) -> u64 {
        if self.preallocate {
            self.segment_size
        } else {
            0
        }
    }

    /// The configured fsync policy.
    pub fn fsync_policy(&self) -> FsyncPolicy {
        self.fsync
    }

    /// The configured segment size in bytes.
    pub fn segment_size_bytes(&self) -> u64 {
        self.segment_size
    }
}

/// A [`RaftStorage`] on a directory. See the [crate docs](crate) for the format and guarantees.
///
/// `C` is the command type of the log entries: any serde type (see the
/// [crate docs](crate#encoding-messagepack-with-named-fields)).
pub struct FileStorage<C> {
    store: Arc<Mutex<Store>>,
    dir: PathBuf,
    _command: PhantomData<fn() -> C>,
}

impl<C> std::fmt::Debug for FileStorage<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStorage")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn lock_store(store: &Mutex<Store>) -> Result<MutexGuard<'_, Store>, StorageError> {
    store.lock().map_err(|_| {
        StorageError::Other(
            "the storage panicked during an earlier operation; reopen it to recover from what is \
             on disk"
                .into(),
        )
    })
}

impl<C> FileStorage<C> {
    /// Opens the storage in `dir` with the default [`Options`] (fsync always, 64 MiB segments),
    /// creating the directory and an empty storage if there is none.
    ///
    /// Blocks: it takes the directory's lock, reads and checks the whole log, and completes what a
    /// crash interrupted (see the [crate docs](crate#recovery-and-why-it-is-correct)).
    ///
    /// # Errors
    /// [`StorageError::Io`] of kind [`WouldBlock`](std::io::ErrorKind::WouldBlock) if another
    /// `FileStorage` has the directory open; [`StorageError::Corrupted`], naming the file and byte
    /// offset, for damage a crash cannot explain; [`StorageError::Io`] if the file system fails.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StorageError> {
        Self::open_with(dir, Options::default())
    }

    /// Opens the storage in `dir` with `options`. See [`FileStorage::open`].
    ///
    /// # Errors
    /// As [`FileStorage::open`].
    pub fn open_with(dir: impl AsRef<Path>, options: Options) -> Result<Self, StorageError> {
        let dir = dir.as_ref();
        let store = Store::open(dir, options)?;
        Ok(FileStorage {
            dir: store.dir().to_path_buf(),
            store: Arc::new(Mutex::new(store)),
            _command: PhantomData,
        })
    }

    /// The storage directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What opening the storage found and repaired; see [`RecoveryReport`], and
    /// [`RecoveryReport::cut_entries`] for whether the open cut anything that held an entry.
    pub fn recovery_report(&self) -> RecoveryReport {
        match self.store.lock() {
            Ok(s) => s.report().clone(),
            Err(p) => p.into_inner().report().clone(),
        }
    }

    /// Closes the storage, recording a clean shutdown (see the
    /// [crate docs](crate#clean-shutdown)), and releases the directory lock; every later call fails.
    /// Waits for an operation still running on the blocking pool first. Dropping the storage does
    /// the same, but can only log a failure; this reports it, and does the writing on tokio's
    /// blocking pool rather than in the dropping thread. Closing a closed storage does nothing.
    ///
    /// # Errors
    /// If an earlier write failed half-way (the storage had stopped), or if recording the clean
    /// shutdown fails: then no clean shutdown is recorded, and the next open recovers as after a
    /// crash (nothing is lost by that). The lock is released either way.
    pub async fn close(&mut self) -> Result<(), StorageError> {
        let store = Arc::clone(&self.store);
        let task = tokio::task::spawn_blocking(move || lock_store(&store)?.close());
        match task.await {
            Ok(r) => r,
            Err(e) => Err(StorageError::Other(
                format!("closing the storage did not complete: {e}").into(),
            )),
        }
    }

    /// If the log ends before the stored snapshot's last entry (reported by the open as
    /// [`RecoveryReport::log_behind_snapshot`]), discards the whole log and makes that entry the
    /// purge point, durably, so the next `append` goes on right after the snapshot; returns that
    /// entry's id. Otherwise does nothing and returns `None`.
    ///
    /// All or nothing: `log_meta` (the new purge point) is the commit point; the segments, which
    /// then hold only purged entries, are deleted afterwards (by the next open, if a crash comes
    /// first).
    ///
    /// # Errors
    /// [`StorageError::Io`] if a file system step fails (the storage then stops).
    pub async fn reset_log_to_snapshot(&mut self) -> Result<Option<LogId>, StorageError> {
        self.blocking(|s| s.reset_log_to_snapshot()).await
    }

    fn store(&self) -> Result<MutexGuard<'_, Store>, StorageError> {
        let s = lock_store(&self.store)?;
        s.check_usable()?;
        Ok(s)
    }

    /// Runs `f` on the blocking pool (see the [crate docs](crate#threads-spawn_blocking)).
    async fn blocking<T, F>(&self, f: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Store) -> Result<T, StorageError> + Send + 'static,
    {
        let store = Arc::clone(&self.store);
        let task = tokio::task::spawn_blocking(move || {
            let mut s = lock_store(&store)?;
            s.check_usable()?;
            f(&mut s)
        });
        match task.await {
            Ok(r) => r,
            Err(e) => Err(StorageError::Other(
                format!("a storage operation did not complete: {e}").into(),
            )),
        }
    }
}

impl<C> Drop for FileStorage<C> {
    fn drop(&mut self) {
        // Waits for an operation still running on the blocking pool (its caller's future was
        // dropped), records a clean shutdown if the storage is healthy, then releases the directory
        // lock, so the directory can be reopened at once. A store poisoned by a panic records
        // nothing: what it was doing may be half-done.
        match self.store.lock() {
            Ok(mut s) => {
                if let Err(e) = s.close() {
                    tracing::warn!(dir = %self.dir.display(), error = %e,
                        "the storage closed without recording a clean shutdown; the next open \
                         recovers as after a crash");
                }
            }
            Err(p) => p.into_inner().release(),
        }
    }
}

#[async_trait]
impl<C> RaftStorage<C> for FileStorage<C>
where
    C: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    async fn hard_state(&mut self) -> Result<HardState, StorageError> {
        Ok(self.store()?.hard_state())
    }

    async fn save_hard_state(&mut self, state: &HardState) -> Result<(), StorageError> {
        let state = *state;
        self.blocking(move |s| s.save_hard_state(state)).await
    }

    async fn log_state(&mut self) -> Result<LogState, StorageError> {
        Ok(self.store()?.log_state())
    }

    async fn entries(
        &mut self,
        start: LogIndex,
        end: LogIndex,
    ) -> Result<Vec<Entry<C>>, StorageError> {
        self.blocking(move |s| s.entries::<C>(start, end)).await
    }

    async fn append(&mut self, entries: &[Entry<C>]) -> Result<(), StorageError> {
        let first = {
            let s = self.store()?;
            let first = s.last_log_id().index + 1;
            if let Some(e) = entries.first() {
                s.check_append(e.log_id.index)?;
            }
            first
        };
        if entries.is_empty() {
            return Ok(());
        }
        // Encoding (and the decode-back check) is CPU work proportional to the batch: it runs on
        // the blocking thread with the write, not on the caller's runtime thread. The entries'
        // payloads are shared, so the copy handed over is one reference count per entry.
        let entries = entries.to_vec();
        self.blocking(move |s| s.append(&mut format::encode_batch(first, &entries)?))
            .await
    }

    async fn truncate(&mut self, from: LogIndex) -> Result<(), StorageError> {
        self.blocking(move |s| s.truncate(from)).await
    }

    async fn purge(&mut self, upto: LogIndex) -> Result<(), StorageError> {
        self.blocking(move |s| s.purge(upto)).await
    }

    async fn install_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StorageError> {
        self.blocking(move |s| s.install_snapshot(snapshot)).await
    }

    async fn snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        self.blocking(|s| s.snapshot()).await
    }

    /// Whether this open cut entries off the log (or may have: a zeroed tail can hide whole batches),
    /// from [`RecoveryReport::cut_entries`]. Cutting a torn last batch loses nothing this storage
    /// acknowledged, but a disk that lied about an fsync looks the same, so the node is told.
    async fn lost_entries_on_open(&mut self) -> Result<bool, StorageError> {
        Ok(self.recovery_report().cut_entries().is_some())
    }

    async fn snapshot_chunk(
        &mut self,
        snapshot: LogId,
        offset: u64,
        max_len: usize,
    ) -> Result<Option<SnapshotChunk>, StorageError> {
        self.blocking(move |s| s.snapshot_chunk(snapshot, offset, max_len))
            .await
    }
}
