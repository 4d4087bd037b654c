//! [`ClientValues`]: the values the clients of one cluster write. The history check needs every
//! written value to be unique; this hands them out counting up from 1.

/// A source of fresh client values, shared by every client of a cluster.
#[derive(Clone, Debug, Default)]
pub(crate) struct ClientValues {
    last: u64,
}

impl ClientValues {
    /// A value not handed out before.
    pub(crate) fn next(&mut self) -> u64 {
        self.last += 1;
        self.last
    }
}
