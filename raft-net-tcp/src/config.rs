//! Settings shared by the client ([`TcpNetwork`](crate::TcpNetwork)) and the server
//! ([`TcpServer`](crate::TcpServer)), and the crate's error type.

use std::time::Duration;

use crate::tls::TlsError;
use crate::wire::HANDSHAKE_MAX_FRAME_LENGTH;

/// Tuning of the TCP transport. Build with [`TcpConfig::default`] and adjust fields; constructors
/// call [`validate`](Self::validate), and a server binary should also call
/// [`check_raft_config`](Self::check_raft_config) with its raft-core configuration.
///
/// Both ends of a cluster should use the same `max_frame_length`, and it must stay well above
/// raft-core's [`Config::snapshot_chunk_size`](raft_core::Config::snapshot_chunk_size): see
/// [`max_frame_length`](Self::max_frame_length).
///
/// **Server limits.** Every connection the server accepts costs a file descriptor and, until its
/// handshake is done, a handshake frame of at most
/// [`wire::HANDSHAKE_MAX_FRAME_LENGTH`](crate::wire::HANDSHAKE_MAX_FRAME_LENGTH) bytes plus TLS
/// state (some tens of KiB); after it, request frames are bounded by `max_frame_length` each and by
/// `max_buffered_bytes` together, from their length prefix until their request is answered. So
/// whatever peers send, descriptors are bounded by `max_connections`, and memory by about
/// `max_connections × 100 KiB` plus a small multiple of `max_buffered_bytes` (buffers grow by
/// doubling, and a decoded request takes somewhat more room than its encoding).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpConfig {
    /// The largest request frame payload, in bytes, a client sends or a server accepts after the
    /// handshake. A frame announcing more closes the connection; a request that would encode to
    /// more fails at once without being sent (`NetworkError::Unreachable`, "request too large").
    /// Default 64 MiB. (Responses are small and bounded by
    /// [`wire::RESPONSE_MAX_FRAME_LENGTH`](crate::wire::RESPONSE_MAX_FRAME_LENGTH).)
    ///
    /// **Keep raft-core's `Config::snapshot_chunk_size` well below it** (the defaults, 1 MiB chunks
    /// in 64 MiB frames, are): an InstallSnapshot request carries one chunk of that many bytes plus
    /// the snapshot's metadata, and a chunk that does not fit can never be sent, so the follower that
    /// needs the snapshot never catches up. [`check_raft_config`](Self::check_raft_config) checks
    /// this with [`SNAPSHOT_CHUNK_HEADROOM`] bytes to spare. Likewise an AppendEntries of
    /// `Config::max_entries_per_append` entries must fit.
    pub max_frame_length: usize,
    /// Client: how long opening a connection may take: TCP connect, TLS handshake and the
    /// protocol handshake together. Default 80 ms.
    ///
    /// A failed or timed-out attempt (e.g. to a host that is down and drops packets) is followed by
    /// a backoff of at most `reconnect_backoff_max`, so a peer that comes back is reached again
    /// within about `connect_timeout + reconnect_backoff_max` (130 ms by default) plus one
    /// handshake. That must stay below raft-core's `election_timeout_min` (150 ms by default): the
    /// leader's heartbeats must reach a returning peer before its election timer fires, or it
    /// starts a needless election. [`check_raft_config`](Self::check_raft_config) checks it.
    ///
    /// Why 80 ms: a connection, TLS 1.3 with client certificates included, opens in about three
    /// round trips plus a few signatures: about 1 ms on loopback in a release build and 5 ms in a
    /// debug build, a few ms on a LAN. 80 ms leaves an order of magnitude for a busy machine while
    /// keeping the sum above below 150 ms. Raise it (and the election timeouts with it) only for
    /// slower networks.
    pub connect_timeout: Duration,
    /// Client: how long one request waits for its response once it has a connection
    /// ([`NetworkError::Timeout`](raft_core::NetworkError::Timeout) after that). The driver's own
    /// `Config::rpc_timeout` bounds every call too; the shorter wins. Default 5 s.
    pub request_timeout: Duration,
    /// Client: the wait before the second connection attempt after a failed one; it doubles with each
    /// further failure up to `reconnect_backoff_max`. Default 10 ms.
    pub reconnect_backoff_min: Duration,
    /// Client: the longest wait between two connection attempts. Default 50 ms: with
    /// `connect_timeout`, it bounds how long a peer that is back stays unreached, which must stay
    /// below raft-core's `election_timeout_min` (see [`connect_timeout`](Self::connect_timeout)).
    pub reconnect_backoff_max: Duration,
    /// Server: the most requests of one connection handled at once; further requests wait in the
    /// socket (backpressure). Default 256.
    pub max_in_flight_per_connection: usize,
    /// Server: the most connections open at once, handshaking or not. A connection accepted beyond
    /// it is closed at once, before any TLS work. Default 256.
    ///
    /// Whatever the cap, no connection may take one of the last
    /// [`descriptors::RESERVED`](crate::descriptors::RESERVED) descriptors below the process's
    /// limit (`ulimit -n`, often 1024): those stay for storage and the node's own connections (see
    /// [`descriptors`](crate::descriptors)). Keep the caps of all the process's servers together
    /// below that limit less the reserve, so that a flood meets the caps first; the server logs a
    /// warning at start if the limit leaves less than this cap beyond the reserve.
    pub max_connections: usize,
    /// Server: how long a new connection may take to finish its handshake (TLS and protocol) once
    /// accepted. A stranger that connects and stalls holds a connection slot for this long at most.
    /// Default 1 s (a peer's own attempt gives up after its `connect_timeout` anyway).
    pub handshake_timeout: Duration,
    /// Server: how long an established connection may stay silent (no request begun, none being
    /// handled) before it is closed. Default 30 s.
    ///
    /// A client keeps one connection per peer and reuses it: a leader's connection carries a
    /// heartbeat every `heartbeat_interval` (50 ms by default) and never goes idle, while a
    /// follower's connection to the leader, opened to ask for votes, does once the election is over.
    /// It must therefore stay well above the heartbeat interval (at least ten times it,
    /// [`check_raft_config`](Self::check_raft_config) checks), or the server would cut a leader's
    /// connections between heartbeats. The client closes its own unused connections after half
    /// this time, so that the server's cut rarely meets a request on the wire.
    pub idle_timeout: Duration,
    /// Server and client: a frame that has begun (its first byte received) must be complete within
    /// this time, and a frame being written must be written within it; otherwise the connection is
    /// closed. It must cover a `max_frame_length` frame at the slowest link the cluster runs on.
    /// Default 10 s.
    pub frame_timeout: Duration,
    /// Server: the most bytes of request frames held at once across all connections, from a
    /// frame's length prefix until its request has been answered. A frame waits (within
    /// `frame_timeout`) until its length fits. Must be at least `max_frame_length`. Default 256 MiB.
    pub max_buffered_bytes: usize,
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            max_frame_length: 64 * 1024 * 1024,
            connect_timeout: Duration::from_millis(80),
            request_timeout: Duration::from_secs(5),
            reconnect_backoff_min: Duration::from_millis(10),
            reconnect_backoff_max: Duration::from_millis(50),
            max_in_flight_per_connection: 256,
            max_connections: 256,
            handshake_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(30),
            frame_timeout: Duration::from_secs(10),
            max_buffered_bytes: 256 * 1024 * 1024,
        }
    }
}

/// The bytes a frame must have to spare beyond a snapshot chunk's data for the rest of an
/// InstallSnapshot request (the envelope, term, ids, offset, and the snapshot's membership):
/// 64 KiB, enough for a membership of thousands of voters. Used by
/// [`TcpConfig::check_raft_config`].
pub const SNAPSHOT_CHUNK_HEADROOM: usize = 64 * 1024;

/// [`TcpConfig::idle_timeout`] must be at least this many heartbeat intervals.
const IDLE_HEARTBEATS: u32 = 10;

/// The longest duration a setting may have: one day. Beyond it a setting is a mistake, and
/// deadlines computed from it could overflow.
const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);

impl TcpConfig {
    /// Checks that raft-core's `raft` configuration fits this transport:
    /// * an InstallSnapshot request of `raft.snapshot_chunk_size` bytes of data, plus
    ///   [`SNAPSHOT_CHUNK_HEADROOM`], must fit in [`max_frame_length`](Self::max_frame_length);
    /// * [`connect_timeout`](Self::connect_timeout) plus
    ///   [`reconnect_backoff_max`](Self::reconnect_backoff_max) must stay below
    ///   `raft.election_timeout_min`;
    /// * [`idle_timeout`](Self::idle_timeout) must be at least ten `raft.heartbeat_interval`s.
    ///
    /// A server binary should call it at start-up, so that a bad pair of settings is refused there
    /// instead of stalling a snapshot transfer or causing needless elections later.
    ///
    /// # Errors
    /// [`TcpError::Config`] naming both settings.
    pub fn check_raft_config(&self, raft: &raft_core::Config) -> Result<(), TcpError> {
        let needed = raft
            .snapshot_chunk_size
            .saturating_add(SNAPSHOT_CHUNK_HEADROOM);
        if needed > self.max_frame_length {
            return Err(TcpError::Config(format!(
                "snapshot_chunk_size ({} bytes) must stay at least {SNAPSHOT_CHUNK_HEADROOM} bytes \
                 below max_frame_length ({} bytes): an InstallSnapshot request carries one chunk \
                 plus its metadata in one frame",
                raft.snapshot_chunk_size, self.max_frame_length
            )));
        }
        let reconnect = self
            .connect_timeout
            .saturating_add(self.reconnect_backoff_max);
        if reconnect >= raft.election_timeout_min {
            return Err(TcpError::Config(format!(
                "connect_timeout ({} ms) plus reconnect_backoff_max ({} ms) must stay below \
                 election_timeout_min ({} ms): a peer that comes back must be reached before its \
                 election timer fires",
                self.connect_timeout.as_millis(),
                self.reconnect_backoff_max.as_millis(),
                raft.election_timeout_min.as_millis()
            )));
        }
        let min_idle = raft.heartbeat_interval.saturating_mul(IDLE_HEARTBEATS);
        if self.idle_timeout < min_idle {
            return Err(TcpError::Config(format!(
                "idle_timeout ({} ms) must be at least {IDLE_HEARTBEATS} times heartbeat_interval \
                 ({} ms): the server would close a leader's connections between heartbeats",
                self.idle_timeout.as_millis(),
                raft.heartbeat_interval.as_millis()
            )));
        }
        Ok(())
    }

    /// Checks that the settings make sense together: sizes and counts above zero, durations above
    /// zero and at most a day, `max_frame_length` between the handshake's limit and what the
    /// 4-byte prefix can say, `max_buffered_bytes` at least `max_frame_length`.
    ///
    /// # Errors
    /// [`TcpError::Config`] naming the first setting out of range.
    pub fn validate(&self) -> Result<(), TcpError> {
        if self.max_frame_length < HANDSHAKE_MAX_FRAME_LENGTH {
            return Err(TcpError::Config(format!(
                "max_frame_length ({}) must be at least {HANDSHAKE_MAX_FRAME_LENGTH}",
                self.max_frame_length
            )));
        }
        if self.max_frame_length > u32::MAX as usize {
            return Err(TcpError::Config(format!(
                "max_frame_length ({}) must fit the 4-byte length prefix",
                self.max_frame_length
            )));
        }
        for (name, d) in [
            ("connect_timeout", self.connect_timeout),
            ("request_timeout", self.request_timeout),
            ("reconnect_backoff_min", self.reconnect_backoff_min),
            ("reconnect_backoff_max", self.reconnect_backoff_max),
            ("handshake_timeout", self.handshake_timeout),
            ("idle_timeout", self.idle_timeout),
            ("frame_timeout", self.frame_timeout),
        ] {
            if d.is_zero() {
                return Err(TcpError::Config(format!("{name} must be above zero")));
            }
            if d > MAX_DURATION {
                return Err(TcpError::Config(format!(
                    "{name} must be at most {} s (one day)",
                    MAX_DURATION.as_secs()
                )));
            }
        }
        if self.reconnect_backoff_max < self.reconnect_backoff_min {
            return Err(TcpError::Config(
                "reconnect_backoff_max must not be below reconnect_backoff_min".into(),
            ));
        }
        if self.max_in_flight_per_connection == 0 {
            return Err(TcpError::Config(
                "max_in_flight_per_connection must be above zero".into(),
            ));
        }
        if self.max_connections == 0 {
            return Err(TcpError::Config(
                "max_connections must be above zero".into(),
            ));
        }
        if self.max_buffered_bytes > tokio::sync::Semaphore::MAX_PERMITS {
            return Err(TcpError::Config(format!(
                "max_buffered_bytes ({}) must be at most {}",
                self.max_buffered_bytes,
                tokio::sync::Semaphore::MAX_PERMITS
            )));
        }
        if self.max_buffered_bytes < self.max_frame_length {
            return Err(TcpError::Config(format!(
                "max_buffered_bytes ({}) must be at least max_frame_length ({}): a frame that \
                 does not fit could never be read",
                self.max_buffered_bytes, self.max_frame_length
            )));
        }
        Ok(())
    }

    /// The wait before the next connection attempt after `failures` consecutive failed ones.
    pub(crate) fn backoff(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(30);
        self.reconnect_backoff_min
            .saturating_mul(1u32 << doublings)
            .min(self.reconnect_backoff_max)
    }
}

/// Why a [`TcpNetwork`](crate::TcpNetwork) or [`TcpServer`](crate::TcpServer) could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TcpError {
    /// A [`TcpConfig`] setting is out of range.
    #[error("invalid TCP transport configuration: {0}")]
    Config(String),
    /// Binding or inspecting the listening socket failed.
    #[error("TCP listener failed: {0}")]
    Io(#[from] std::io::Error),
    /// The TLS configuration does not fit this node (e.g. its certificate names another node) or
    /// the cluster id cannot be part of a certificate name.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        assert!(TcpConfig::default().validate().is_ok());
    }

    #[test]
    fn rejects_nonsense() {
        let tiny = TcpConfig {
            max_frame_length: 10,
            ..TcpConfig::default()
        };
        assert!(matches!(tiny.validate(), Err(TcpError::Config(_))));
        let inverted = TcpConfig {
            reconnect_backoff_min: Duration::from_secs(2),
            ..TcpConfig::default()
        };
        assert!(matches!(inverted.validate(), Err(TcpError::Config(_))));
    }

    #[test]
    fn raft_config_must_leave_room_for_a_snapshot_chunk() {
        let tcp = TcpConfig::default();
        assert!(tcp.check_raft_config(&raft_core::Config::default()).is_ok());
        let fits = raft_core::Config {
            snapshot_chunk_size: tcp.max_frame_length - SNAPSHOT_CHUNK_HEADROOM,
            ..raft_core::Config::default()
        };
        assert!(tcp.check_raft_config(&fits).is_ok());
        for too_big in [
            tcp.max_frame_length - SNAPSHOT_CHUNK_HEADROOM + 1,
            tcp.max_frame_length,
            usize::MAX,
        ] {
            let raft = raft_core::Config {
                snapshot_chunk_size: too_big,
                ..raft_core::Config::default()
            };
            match tcp.check_raft_config(&raft) {
                Err(TcpError::Config(msg)) => {
                    assert!(msg.contains("snapshot_chunk_size"), "{msg}");
                    assert!(msg.contains("max_frame_length"), "{msg}");
                }
                other => panic!("chunk of {too_big} bytes accepted: {other:?}"),
            }
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let c = TcpConfig::default();
        assert_eq!(c.backoff(1), Duration::from_millis(10));
        assert_eq!(c.backoff(2), Duration::from_millis(20));
        assert_eq!(c.backoff(3), Duration::from_millis(40));
        assert_eq!(c.backoff(4), Duration::from_millis(50));
        assert_eq!(c.backoff(u32::MAX), Duration::from_millis(50));
    }

    #[test]
    fn a_returning_peer_is_reached_before_an_election_timeout() {
        let tcp = TcpConfig::default();
        let raft = raft_core::Config::default();
        assert!(tcp.connect_timeout + tcp.reconnect_backoff_max < raft.election_timeout_min);
        assert!(tcp.check_raft_config(&raft).is_ok());
        let slow = TcpConfig {
            connect_timeout: Duration::from_millis(120),
            ..TcpConfig::default()
        };
        match slow.check_raft_config(&raft) {
            Err(TcpError::Config(msg)) => assert!(msg.contains("election_timeout_min"), "{msg}"),
            other => panic!("accepted: {other:?}"),
        }
    }

    #[test]
    fn idle_timeout_must_leave_room_for_heartbeats() {
        let raft = raft_core::Config::default();
        let short = TcpConfig {
            idle_timeout: raft.heartbeat_interval * 9,
            ..TcpConfig::default()
        };
        match short.check_raft_config(&raft) {
            Err(TcpError::Config(msg)) => assert!(msg.contains("heartbeat_interval"), "{msg}"),
            other => panic!("accepted: {other:?}"),
        }
        let enough = TcpConfig {
            idle_timeout: raft.heartbeat_interval * 10,
            ..TcpConfig::default()
        };
        assert!(enough.check_raft_config(&raft).is_ok());
    }

    #[test]
    fn server_limits_must_be_usable() {
        for bad in [
            TcpConfig {
                max_connections: 0,
                ..TcpConfig::default()
            },
            TcpConfig {
                max_buffered_bytes: TcpConfig::default().max_frame_length - 1,
                ..TcpConfig::default()
            },
            TcpConfig {
                frame_timeout: Duration::ZERO,
                ..TcpConfig::default()
            },
            TcpConfig {
                idle_timeout: Duration::ZERO,
                ..TcpConfig::default()
            },
            TcpConfig {
                handshake_timeout: Duration::ZERO,
                ..TcpConfig::default()
            },
            TcpConfig {
                idle_timeout: Duration::MAX,
                ..TcpConfig::default()
            },
            TcpConfig {
                reconnect_backoff_max: Duration::from_secs(86_401),
                ..TcpConfig::default()
            },
        ] {
            assert!(
                matches!(bad.validate(), Err(TcpError::Config(_))),
                "{bad:?}"
            );
        }
    }
}
