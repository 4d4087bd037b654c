//! The storage conformance suite of raft-core, on `FileStorage` in temporary directories, with fsync
//! on (the real write paths) and with small segments (so that truncations, purges and snapshot
//! installs cross segment boundaries).

use std::sync::{Arc, Mutex};

use raft_core::testing;
use raft_storage_file::{FileStorage, Options};
use tempfile::TempDir;

/// Makes storages in fresh temporary directories, kept alive until the test ends.
#[derive(Clone, Default)]
struct Dirs(Arc<Mutex<Vec<TempDir>>>);

impl Dirs {
    fn maker(&self, options: Options) -> impl FnMut() -> FileStorage<u64> + Clone {
        let dirs = self.clone();
        move || {
            let dir = tempfile::tempdir().expect("temporary directory");
            let storage = FileStorage::open_with(dir.path(), options.clone()).expect("open");
            dirs.0.lock().unwrap().push(dir);
            storage
        }
    }
}

fn reopener(options: Options) -> impl FnMut(FileStorage<u64>) -> FileStorage<u64> {
    move |s: FileStorage<u64>| {
        let dir = s.dir().to_path_buf();
        drop(s);
        let reopened = FileStorage::open_with(&dir, options.clone()).expect("reopen");
        assert!(
            reopened.recovery_report().is_clean(),
            "a clean reopen had something to recover: {:?}",
            reopened.recovery_report()
        );
        reopened
    }
}

#[tokio::test]
async fn conformance_default_options() {
    let dirs = Dirs::default();
    let options = Options::default();
    testing::run_conformance(dirs.maker(options.clone())).await;
    testing::run_reopen_conformance(dirs.maker(options.clone()), reopener(options)).await;
}

#[tokio::test]
async fn conformance_tiny_segments() {
    let dirs = Dirs::default();
    // A segment is full after its header and about one record: nearly every append starts a new one.
    let options = Options::default().segment_size(40);
    testing::run_conformance(dirs.maker(options.clone())).await;
    testing::run_reopen_conformance(dirs.maker(options.clone()), reopener(options)).await;
}
