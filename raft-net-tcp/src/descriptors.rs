//! Keeping file descriptors for the node itself while connections flood in.
//!
//! Every accepted connection costs a descriptor, and so does much of what a node must always be
//! able to do: its storage opens a file to write a snapshot or a new log segment atomically, opens
//! its directory to fsync it; the node connects to its peers. Storage that cannot open a file stops
//! the node. Each server's connection cap bounds what that server takes, but the caps of all the
//! servers of a process together (say a Raft port and an HTTP port) may exceed the process's
//! descriptor limit (`RLIMIT_NOFILE`, `ulimit -n`); a flood would then exhaust the descriptors
//! before any cap stops it.
//!
//! So every accept loop of the process applies one rule, [`admit`]: a connection that was accepted
//! into one of the highest [`RESERVED`] descriptor numbers below the limit is closed at once.
//!
//! Why it holds whatever else the process does: every connection kept has a distinct descriptor
//! number below `limit - RESERVED`, so all the connections kept by all the servers that apply the
//! rule hold at most `limit - RESERVED` descriptors together, and at least [`RESERVED`] stay for
//! everything else. And because the kernel hands out the lowest free number, a connection lands in
//! the reserve only when every number below it is taken: the rule refuses nothing while there is
//! room. It costs one `getrlimit` per accepted connection, and needs no state shared between
//! servers.
//!
//! [`TcpServer`](crate::TcpServer) applies it; a program that runs other servers beside it (an
//! HTTP API, say) should apply it in their accept loops too, or those can still take the reserve.

#[cfg(unix)]
use std::os::fd::{AsRawFd, RawFd};

/// The descriptors no accepted connection may take: 64, for storage (a log segment, a snapshot and
/// a temporary file, the data directory, a lock file), the node's outgoing connections to its
/// peers, the listeners, the runtime and the standard streams, with room to spare.
pub const RESERVED: u64 = 64;

/// The process's soft limit on open file descriptors (`RLIMIT_NOFILE`), if it has one.
pub fn limit() -> Option<u64> {
    limit_impl()
}

#[cfg(unix)]
fn limit_impl() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given, which lives for the call.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    if rc != 0 || limit.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    // rlim_t is u64 on Linux, but not everywhere.
    #[allow(clippy::unnecessary_cast)]
    Some(limit.rlim_cur as u64)
}

#[cfg(not(unix))]
fn limit_impl() -> Option<u64> {
    None
}

/// How many connections the process can hold at once under the rule: its descriptor limit less
/// [`RESERVED`] (connections of every server that applies [`admit`] together, less whatever else
/// holds descriptors below that number). `None` if the process has no limit.
pub fn connection_room() -> Option<u64> {
    limit().map(|l| l.saturating_sub(RESERVED))
}

/// Whether a connection just accepted as `stream` may be kept: `false` if its descriptor lies among
/// the highest [`RESERVED`] below the process's limit, in which case the caller closes it at once
/// (see the [module docs](self)). Always `true` where descriptors are not numbered (not Unix).
#[cfg(unix)]
pub fn admit(stream: &impl AsRawFd) -> bool {
    admit_fd(stream.as_raw_fd(), limit())
}

/// Whether a connection just accepted as `stream` may be kept (always, where descriptors are not
/// numbered).
#[cfg(not(unix))]
pub fn admit<S>(_stream: &S) -> bool {
    true
}

#[cfg(unix)]
fn admit_fd(fd: RawFd, limit: Option<u64>) -> bool {
    let Some(limit) = limit else {
        return true;
    };
    match u64::try_from(fd) {
        Ok(fd) => fd < limit.saturating_sub(RESERVED),
        Err(_) => false,
    }
}

/// Logs a warning if the process's descriptor limit leaves less than `connections` (a server's
/// cap) beyond [`RESERVED`]: the server then refuses connections below its cap once descriptors
/// run short. `what` names the server in the log line.
pub fn warn_if_short(what: &str, connections: usize) {
    let Some(room) = connection_room() else {
        return;
    };
    if room < connections as u64 {
        tracing::warn!(
            server = what,
            descriptor_limit = room + RESERVED,
            max_connections = connections,
            reserved = RESERVED,
            "the file descriptor limit leaves room for only {room} connections beyond the \
             {RESERVED} descriptors kept for storage and peers: connections will be refused \
             before max_connections is reached (raise the limit with ulimit -n, or lower \
             max_connections)"
        );
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn the_highest_descriptors_below_the_limit_are_kept_back() {
        let limit = Some(256);
        assert!(admit_fd(0, limit));
        assert!(admit_fd(191, limit));
        assert!(!admit_fd(192, limit));
        assert!(!admit_fd(255, limit));
        assert!(!admit_fd(300, limit), "numbered above a lowered limit");
        assert!(!admit_fd(-1, limit));
        assert!(admit_fd(100_000, None), "no limit");
        assert!(
            !admit_fd(0, Some(RESERVED)),
            "a limit within the reserve admits nothing"
        );
        assert!(!admit_fd(0, Some(10)));
    }

    #[test]
    fn a_listener_in_this_process_is_admitted() {
        // The test process has far more than RESERVED descriptors free.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(admit(&listener));
        assert!(limit().is_some_and(|l| l > RESERVED));
    }
}
