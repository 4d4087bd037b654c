//! The `raft-kv` binary: see [`raft_kv::cli`].

fn main() -> std::process::ExitCode {
    raft_kv::cli::main()
}
