//! Settings shared by the client ([`TcpNetwork`](crate::TcpNetwork)) and the server
//! ([`TcpServer`](crate::TcpServer)), and the crate's error type.

use std::time::Duration;

use crate::wire::HANDSHAKE_MAX_FRAME_LENGTH;

/// Tuning of the TCP transport. Build with [`TcpConfig::default`] and adjust fields; constructors
/// call [`validate`](Self::validate).
///
/// Both ends of a cluster should use the same `max_frame_length`, and it must stay well above
/// raft-core's [`Config::snapshot_chunk_size`](raft_core::Config::snapshot_chunk_size): see
/// [`max_frame_length`](Self::max_frame_length) and [`check_raft_config`](Self::check_raft_config).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpConfig {
    /// The largest frame payload, in bytes, either side sends or accepts after the handshake. A frame
    /// announcing more closes the connection; a request that would encode to more fails at once
    /// without being sent (`NetworkError::Unreachable`, "request too large"). Default 64 MiB.
    ///
    /// **Keep raft-core's `Config::snapshot_chunk_size` well below it** (the defaults, 1 MiB chunks
    /// in 64 MiB frames, are): an InstallSnapshot request carries one chunk of that many bytes plus
    /// the snapshot's metadata, and a chunk that does not fit can never be sent, so the follower that
    /// needs the snapshot never catches up. [`check_raft_config`](Self::check_raft_config) checks
    /// this with [`SNAPSHOT_CHUNK_HEADROOM`] bytes to spare. Likewise an AppendEntries of
    /// `Config::max_entries_per_append` entries must fit.
    pub max_frame_length: usize,
    /// Client: how long connecting plus the handshake may take. Server: how long a new connection may
    /// take to send its handshake. Default 1 s.
    pub connect_timeout: Duration,
    /// Client: how long one request waits for its response once it has a connection
    /// ([`NetworkError::Timeout`](raft_core::NetworkError::Timeout) after that). The driver's own
    /// `Config::rpc_timeout` bounds every call too; the shorter wins. Default 5 s.
    pub request_timeout: Duration,
    /// Client: the wait before the second connection attempt after a failed one; it doubles with each
    /// further failure up to `reconnect_backoff_max`. Default 50 ms.
    pub reconnect_backoff_min: Duration,
    /// Client: the longest wait between two connection attempts. Default 1 s.
    pub reconnect_backoff_max: Duration,
    /// Server: the most requests of one connection handled at once; further requests wait in the
    /// socket (backpressure). Default 256.
    pub max_in_flight_per_connection: usize,
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            max_frame_length: 64 * 1024 * 1024,
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(5),
            reconnect_backoff_min: Duration::from_millis(50),
            reconnect_backoff_max: Duration::from_secs(1),
            max_in_flight_per_connection: 256,
        }
    }
}

/// The bytes a frame must have to spare beyond a snapshot chunk's data for the rest of an
/// InstallSnapshot request (the envelope, term, ids, offset, and the snapshot's membership):
/// 64 KiB, enough for a membership of thousands of voters. Used by
/// [`TcpConfig::check_raft_config`].
pub const SNAPSHOT_CHUNK_HEADROOM: usize = 64 * 1024;

impl TcpConfig {
    /// Checks that raft-core's `raft` configuration fits this transport: an InstallSnapshot request
    /// of `raft.snapshot_chunk_size` bytes of data, plus [`SNAPSHOT_CHUNK_HEADROOM`], must fit in
    /// [`max_frame_length`](Self::max_frame_length). A server binary should call it at start-up, so
    /// that a bad pair of settings is refused there instead of stalling a snapshot transfer later.
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
        Ok(())
    }

    /// Checks that the settings make sense together.
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
        ] {
            if d.is_zero() {
                return Err(TcpError::Config(format!("{name} must be above zero")));
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
        assert_eq!(c.backoff(1), Duration::from_millis(50));
        assert_eq!(c.backoff(2), Duration::from_millis(100));
        assert_eq!(c.backoff(4), Duration::from_millis(400));
        assert_eq!(c.backoff(5), Duration::from_millis(800));
        assert_eq!(c.backoff(6), Duration::from_secs(1));
        assert_eq!(c.backoff(u32::MAX), Duration::from_secs(1));
    }
}
