//! The `raft-kv` binary: see [`raft_kv::cli`].

/// mimalloc rather than the system allocator: a replicated write makes many small allocations that
/// are freed on another thread (entries, channel messages, replies), where it measured faster than
/// glibc's malloc (`BENCHMARKS.md`, "The allocator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    raft_kv::cli::main()
}
