//! The stored snapshot, kept open: its file was checked whole when it was opened (or written by this
//! storage), and every read goes through the same open file, so a read can only ever return bytes
//! of that snapshot, even after `install_snapshot` renamed a newer file over its name. See the crate
//! docs on snapshots for why chunk reads are not checked again.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use raft_core::{Snapshot, SnapshotChunk, SnapshotMeta, StorageError};

use crate::format::{self, corrupted, SnapshotLayout};

/// An open snapshot file and where its parts are.
#[derive(Debug)]
pub(crate) struct SnapshotFile {
    path: PathBuf,
    file: File,
    layout: SnapshotLayout,
}

fn read_error(path: &Path) -> impl FnOnce(io::Error) -> StorageError + '_ {
    move |source| {
        if source.kind() == io::ErrorKind::UnexpectedEof {
            corrupted(
                path,
                0,
                "the file is shorter than when the storage checked it (changed behind its back)",
            )
        } else {
            StorageError::Io {
                context: format!("reading {}", path.display()),
                source,
            }
        }
    }
}

impl SnapshotFile {
    /// Opens the snapshot file at `path` and checks all of it (read in blocks, never whole in
    /// memory); `None` if there is no such file.
    ///
    /// # Errors
    /// [`StorageError::Corrupted`] naming the file and offset if it is damaged;
    /// [`StorageError::Io`] if it cannot be read.
    pub(crate) fn open(path: PathBuf) -> Result<Option<SnapshotFile>, StorageError> {
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(read_error(&path)(e)),
        };
        let len = file.metadata().map_err(read_error(&path))?.len();
        let layout = format::read_snapshot_layout(&path, &mut file, len)?;
        Ok(Some(SnapshotFile { path, file, layout }))
    }

    /// The snapshot file this storage has just written at `path`, with `layout`: opened, not read
    /// again (what was written is what the checksum covers).
    ///
    /// # Errors
    /// [`StorageError::Io`] if it cannot be opened; [`StorageError::Corrupted`] if its length is
    /// not the one written.
    pub(crate) fn written(
        path: PathBuf,
        layout: SnapshotLayout,
    ) -> Result<SnapshotFile, StorageError> {
        let file = File::open(&path).map_err(read_error(&path))?;
        let len = file.metadata().map_err(read_error(&path))?.len();
        if len != layout.file_len() {
            return Err(corrupted(
                &path,
                0,
                format_args!(
                    "the snapshot file just written is {len} bytes long, not {}",
                    layout.file_len()
                ),
            ));
        }
        Ok(SnapshotFile { path, file, layout })
    }

    pub(crate) fn meta(&self) -> &SnapshotMeta {
        &self.layout.meta
    }

    /// Whether installing this snapshot discards the log (see the crate docs on recovery).
    pub(crate) fn discards_log(&self) -> bool {
        self.layout.discards_log
    }

    /// Up to `max_len` bytes of the data from `offset`: one positioned read of just that range. An
    /// offset at or past the end gives an empty chunk, `done`.
    pub(crate) fn chunk(&self, offset: u64, max_len: usize) -> Result<SnapshotChunk, StorageError> {
        let data_len = self.layout.data_len;
        let start = offset.min(data_len);
        let len = u64::try_from(max_len)
            .unwrap_or(u64::MAX)
            .min(data_len - start);
        let mut data = vec![0u8; len as usize];
        self.read_at(self.layout.data_start + start, &mut [&mut data])?;
        Ok(SnapshotChunk {
            data,
            done: start + len == data_len,
        })
    }

    /// The whole snapshot, its checksum checked again: the file read once, front to back, its data
    /// straight into the returned buffer (not read whole and then moved out of it).
    pub(crate) fn read(&self) -> Result<Snapshot, StorageError> {
        let mut head = vec![0u8; self.layout.data_start as usize];
        let mut data = vec![0u8; self.layout.data_len as usize];
        let mut stored = [0u8; format::CRC_LEN];
        self.read_at(0, &mut [&mut head, &mut data, &mut stored])?;
        if format::crc(&[&head, &data]) != u32::from_le_bytes(stored) {
            return Err(corrupted(
                &self.path,
                self.layout.data_start + self.layout.data_len,
                "checksum mismatch (the file was damaged since the storage checked it)",
            ));
        }
        Ok(Snapshot {
            meta: self.layout.meta.clone(),
            data,
        })
    }

    /// Fills `parts`, one after the other, from the bytes of the file at `at` on.
    fn read_at(&self, at: u64, parts: &mut [&mut [u8]]) -> Result<(), StorageError> {
        let mut f = &self.file;
        f.seek(SeekFrom::Start(at))
            .and_then(|_| parts.iter_mut().try_for_each(|p| f.read_exact(p)))
            .map_err(read_error(&self.path))
    }
}
