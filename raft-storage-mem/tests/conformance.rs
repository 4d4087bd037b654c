//! `MemStorage` against raft-core's storage conformance suite.

use raft_core::testing;
use raft_storage_mem::MemStorage;

/// Drops the storage (the node "crashes") and opens its durable state again.
fn reopen(storage: MemStorage<u64>) -> MemStorage<u64> {
    let handle = storage.handle();
    drop(storage);
    handle.open()
}

#[tokio::test]
async fn mem_storage_passes_the_conformance_suite() {
    testing::run_conformance(MemStorage::<u64>::new).await;
}

#[tokio::test]
async fn mem_storage_passes_the_reopen_conformance_suite() {
    testing::run_reopen_conformance(MemStorage::<u64>::new, reopen).await;
}
