//! Counts of the inbound connections a [`TcpServer`](crate::TcpServer) closed for bad input or a
//! limit, by reason: what an operator exports to see a misconfigured peer, a stranger probing the
//! port, or a server at its connection cap. The warnings about them are rate limited; these counts
//! are not.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::warn_limit::BadInput;

/// The connections a server closed, by reason, since it started. Monotonic counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RefusedConnections {
    /// The TLS handshake failed (no client certificate, another CA, not TLS at all).
    pub tls: u64,
    /// The protocol handshake was refused or malformed (wrong cluster id, a forged node id, bad
    /// magic bytes).
    pub handshake: u64,
    /// A frame or message after the handshake was bad (over the limit, undecodable, cut short).
    pub frame: u64,
    /// A handshake or a frame did not arrive within its timeout.
    pub timeout: u64,
    /// Closed on accept: the server held `max_connections` already.
    pub connection_cap: u64,
    /// Closed on accept: it would have taken a file descriptor kept for storage.
    pub descriptor_reserve: u64,
}

impl RefusedConnections {
    /// Every count with its reason's name (`tls`, `handshake`, `frame`, `timeout`,
    /// `connection_cap`, `descriptor_reserve`), e.g. for a metric label.
    pub fn by_reason(&self) -> [(&'static str, u64); 6] {
        [
            (BadInput::Tls.as_str(), self.tls),
            (BadInput::Handshake.as_str(), self.handshake),
            (BadInput::Frame.as_str(), self.frame),
            (BadInput::Timeout.as_str(), self.timeout),
            (BadInput::ConnectionCap.as_str(), self.connection_cap),
            (
                BadInput::DescriptorReserve.as_str(),
                self.descriptor_reserve,
            ),
        ]
    }

    /// The sum of the counts.
    pub fn total(&self) -> u64 {
        self.by_reason()
            .iter()
            .fold(0u64, |sum, (_, n)| sum.saturating_add(*n))
    }
}

/// A live view of a server's [`RefusedConnections`], cheap to clone and to read (six relaxed atomic
/// loads): what a metrics exporter keeps, while the [`TcpServer`](crate::TcpServer) itself stays
/// with its owner. It goes on reading the last counts after the server stopped.
#[derive(Clone, Debug)]
pub struct RefusedCounts(Arc<RefusedCounter>);

impl RefusedCounts {
    pub(crate) fn new(counter: Arc<RefusedCounter>) -> Self {
        RefusedCounts(counter)
    }

    /// The counts now.
    pub fn get(&self) -> RefusedConnections {
        self.0.snapshot()
    }
}

/// The server's live counters, shared by its connection tasks: one relaxed atomic increment per
/// closed connection.
#[derive(Debug, Default)]
pub(crate) struct RefusedCounter {
    tls: AtomicU64,
    handshake: AtomicU64,
    frame: AtomicU64,
    timeout: AtomicU64,
    connection_cap: AtomicU64,
    descriptor_reserve: AtomicU64,
}

impl RefusedCounter {
    /// Counts one connection closed for `kind` (a failed `accept` is no connection: not counted).
    pub(crate) fn count(&self, kind: BadInput) {
        let slot = match kind {
            BadInput::Tls => &self.tls,
            BadInput::Handshake => &self.handshake,
            BadInput::Frame => &self.frame,
            BadInput::Timeout => &self.timeout,
            BadInput::ConnectionCap => &self.connection_cap,
            BadInput::DescriptorReserve => &self.descriptor_reserve,
            BadInput::Accept => return,
        };
        slot.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts now.
    pub(crate) fn snapshot(&self) -> RefusedConnections {
        let get = |n: &AtomicU64| n.load(Ordering::Relaxed);
        RefusedConnections {
            tls: get(&self.tls),
            handshake: get(&self.handshake),
            frame: get(&self.frame),
            timeout: get(&self.timeout),
            connection_cap: get(&self.connection_cap),
            descriptor_reserve: get(&self.descriptor_reserve),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_is_counted_under_its_own_reason_and_accept_failures_not_at_all() {
        let counter = RefusedCounter::default();
        counter.count(BadInput::Tls);
        counter.count(BadInput::Handshake);
        counter.count(BadInput::Handshake);
        counter.count(BadInput::ConnectionCap);
        counter.count(BadInput::Accept);
        let counts = counter.snapshot();
        assert_eq!(counts.tls, 1);
        assert_eq!(counts.handshake, 2);
        assert_eq!(counts.connection_cap, 1);
        assert_eq!(counts.total(), 4);
        let reasons: Vec<_> = counts.by_reason().iter().map(|(r, _)| *r).collect();
        assert_eq!(
            reasons,
            [
                "tls",
                "handshake",
                "frame",
                "timeout",
                "connection_cap",
                "descriptor_reserve"
            ]
        );
    }
}
