//! Reading length-prefixed frames from a peer that may be hostile: [`FrameReader`].
//!
//! `tokio_util`'s `LengthDelimitedCodec` reserves the whole announced length as soon as it has read
//! a frame's 4-byte prefix, so every connection could make the reader set aside up to the frame
//! limit before sending a byte of payload. `FrameReader` instead grows its buffer as bytes arrive
//! (asking for at most [`READ_CHUNK`] beyond them; with amortized growth its capacity stays under
//! twice the bytes held plus two chunks), bounds how long a frame may take once it has begun, and
//! can make each frame wait for room in a byte budget shared by every connection of a server.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// The length prefix: 4 bytes, big-endian.
const PREFIX: usize = 4;

/// The most buffer space reserved ahead of the bytes received.
pub(crate) const READ_CHUNK: usize = 64 * 1024;

/// A frame's payload, and its share of the byte budget (if the reader has one), released when the
/// frame is dropped or the permit is.
#[derive(Debug)]
pub(crate) struct Frame {
    pub payload: BytesMut,
    pub permit: Option<OwnedSemaphorePermit>,
}

/// Why no frame could be read. The connection is unusable after any of them.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    /// The prefix announced more than the limit.
    #[error("frame of {announced} bytes announced, over the limit of {max}")]
    TooLong { announced: usize, max: usize },
    /// A frame began but was not complete within the frame timeout.
    #[error("frame not complete within {} ms of its first byte", .0.as_millis())]
    Stalled(Duration),
    /// No frame began before the idle deadline.
    #[error("no frame began before the idle deadline")]
    Idle,
    /// The peer closed the connection in the middle of a frame.
    #[error("connection closed in the middle of a frame")]
    Truncated,
    /// Reading failed.
    #[error("read failed: {0}")]
    Io(#[from] io::Error),
}

/// Reads frames from `io`. Cancel safe: dropping a [`next`](Self::next) future loses nothing, and
/// the deadline of a frame in progress is kept across calls.
pub(crate) struct FrameReader<R> {
    io: R,
    buf: BytesMut,
    max_len: usize,
    frame_timeout: Duration,
    /// When the first byte of the frame being read arrived.
    started: Option<Instant>,
    /// Bytes shared with the server's other connections: each frame holds its length in permits
    /// from its prefix until the frame is dropped.
    budget: Option<Arc<Semaphore>>,
    /// The permits of the frame being read.
    permit: Option<OwnedSemaphorePermit>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader of frames of at most `max_len` payload bytes, each to be complete within
    /// `frame_timeout` of its first byte.
    pub fn new(io: R, max_len: usize, frame_timeout: Duration) -> Self {
        FrameReader {
            io,
            buf: BytesMut::new(),
            max_len,
            frame_timeout,
            started: None,
            budget: None,
            permit: None,
        }
    }

    /// Changes the largest payload accepted from the next frame on.
    pub fn set_max_len(&mut self, max_len: usize) {
        self.max_len = max_len;
    }

    /// Changes the time a frame may take once begun (the frame in progress included).
    pub fn set_frame_timeout(&mut self, frame_timeout: Duration) {
        self.frame_timeout = frame_timeout;
    }

    /// Makes every frame from now on hold its length in permits of `budget`, waited for (within the
    /// frame timeout) before its payload is read. `budget` must hold at least `max_len` permits.
    pub fn set_budget(&mut self, budget: Arc<Semaphore>) {
        self.budget = Some(budget);
    }

    /// Whether a frame has begun (some of its bytes are buffered).
    #[cfg(test)]
    pub fn in_frame(&self) -> bool {
        self.started.is_some()
    }

    /// The next frame; `Ok(None)` if the peer closed the connection between frames.
    ///
    /// While no frame has begun, waits until `idle_deadline` (forever if `None`) for its first
    /// byte; once one has, it must be complete within the frame timeout.
    pub async fn next(
        &mut self,
        idle_deadline: Option<Instant>,
    ) -> Result<Option<Frame>, FrameError> {
        loop {
            if let Some(frame) = self.take_frame()? {
                return Ok(Some(frame));
            }
            // A timeout too long to represent is no deadline.
            let deadline = match self.started {
                Some(started) => started.checked_add(self.frame_timeout),
                None => idle_deadline,
            };
            let (in_frame, frame_timeout) = (self.started.is_some(), self.frame_timeout);
            let stalled = move || match in_frame {
                true => FrameError::Stalled(frame_timeout),
                false => FrameError::Idle,
            };
            if let (Some(len), None, Some(budget)) =
                (self.announced_len(), &self.permit, &self.budget)
            {
                // Fits: set_budget's contract and the prefix check in take_frame.
                let permits = u32::try_from(len).unwrap_or(u32::MAX);
                let acquire = Arc::clone(budget).acquire_many_owned(permits);
                let permit = match deadline {
                    Some(at) => tokio::time::timeout_at(at, acquire)
                        .await
                        .map_err(|_| stalled())?,
                    None => acquire.await,
                };
                // The semaphore is never closed.
                self.permit = permit.ok();
                continue;
            }
            self.reserve_ahead();
            let read = self.io.read_buf(&mut self.buf);
            let n = match deadline {
                Some(at) => tokio::time::timeout_at(at, read)
                    .await
                    .map_err(|_| stalled())??,
                None => read.await?,
            };
            if n == 0 {
                return match self.started {
                    None => Ok(None),
                    Some(_) => Err(FrameError::Truncated),
                };
            }
            if self.started.is_none() {
                self.started = Some(Instant::now());
            }
        }
    }

    /// The payload length announced by the buffered prefix, if it is complete.
    fn announced_len(&self) -> Option<usize> {
        let prefix: [u8; PREFIX] = self.buf.get(..PREFIX)?.try_into().ok()?;
        Some(u32::from_be_bytes(prefix) as usize)
    }

    /// Splits off a complete frame, if one is buffered (and its budget held); checks the prefix as
    /// soon as it is complete.
    fn take_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let Some(len) = self.announced_len() else {
            return Ok(None);
        };
        if len > self.max_len {
            return Err(FrameError::TooLong {
                announced: len,
                max: self.max_len,
            });
        }
        if self.buf.len() - PREFIX < len || (self.budget.is_some() && self.permit.is_none()) {
            return Ok(None);
        }
        self.buf.advance(PREFIX);
        let payload = self.buf.split_to(len);
        // Bytes of the next frame may already be here: its clock starts now.
        self.started = (!self.buf.is_empty()).then(Instant::now);
        Ok(Some(Frame {
            payload,
            permit: self.permit.take(),
        }))
    }

    /// Makes room for the next read: up to the rest of the current frame (or prefix), at most
    /// [`READ_CHUNK`] bytes, never the announced length at once.
    fn reserve_ahead(&mut self) {
        let wanted = match self.announced_len() {
            Some(len) => PREFIX.saturating_add(len).saturating_sub(self.buf.len()),
            None => PREFIX.saturating_sub(self.buf.len()),
        };
        self.buf.reserve(wanted.clamp(PREFIX, READ_CHUNK));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn framed(payload: &[u8]) -> Vec<u8> {
        let mut out = (payload.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(payload);
        out
    }

    const LONG: Duration = Duration::from_secs(30);

    #[tokio::test]
    async fn reads_pipelined_frames_and_a_clean_end() {
        let (mut tx, rx) = tokio::io::duplex(1024);
        let mut reader = FrameReader::new(rx, 100, LONG);
        let mut bytes = framed(b"one");
        bytes.extend(framed(b""));
        bytes.extend(framed(b"three"));
        tx.write_all(&bytes).await.unwrap();
        drop(tx);
        for want in [&b"one"[..], b"", b"three"] {
            let frame = reader.next(None).await.unwrap().expect("a frame");
            assert_eq!(&frame.payload[..], want);
        }
        assert!(reader.next(None).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn refuses_an_oversized_prefix_before_its_payload() {
        let (mut tx, rx) = tokio::io::duplex(1024);
        let mut reader = FrameReader::new(rx, 100, LONG);
        tx.write_all(&101u32.to_be_bytes()).await.unwrap();
        assert!(matches!(
            reader.next(None).await,
            Err(FrameError::TooLong {
                announced: 101,
                max: 100
            })
        ));
    }

    #[tokio::test]
    async fn does_not_reserve_the_announced_length() {
        let (mut tx, rx) = tokio::io::duplex(1 << 20);
        let mut reader = FrameReader::new(rx, 1 << 30, LONG);
        tx.write_all(&(1u32 << 30).to_be_bytes()).await.unwrap();
        tx.write_all(&[7; 1000]).await.unwrap();
        let read = tokio::time::timeout(Duration::from_millis(50), reader.next(None)).await;
        assert!(read.is_err(), "the frame is not complete");
        assert!(reader.in_frame());
        // Growth is amortized (doubling), so allow twice the data plus twice a chunk.
        assert!(
            reader.buf.capacity() <= 2 * (1004 + READ_CHUNK),
            "reserved {} bytes for 1,004 received",
            reader.buf.capacity()
        );
    }

    #[tokio::test]
    async fn a_truncated_frame_is_an_error() {
        let (mut tx, rx) = tokio::io::duplex(1024);
        let mut reader = FrameReader::new(rx, 100, LONG);
        tx.write_all(&framed(b"abcdef")[..7]).await.unwrap();
        drop(tx);
        assert!(matches!(
            reader.next(None).await,
            Err(FrameError::Truncated)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_frame_times_out_even_across_cancelled_calls() {
        let (mut tx, rx) = tokio::io::duplex(1024);
        let timeout = Duration::from_millis(500);
        let mut reader = FrameReader::new(rx, 100, timeout);
        tx.write_all(&framed(b"abcdef")[..5]).await.unwrap();
        let started = Instant::now();
        // Cancelled calls, as the server's select loop makes them, must not restart the clock.
        for _ in 0..4 {
            let r = tokio::time::timeout(Duration::from_millis(100), reader.next(None)).await;
            assert!(r.is_err());
        }
        assert!(matches!(
            reader.next(None).await,
            Err(FrameError::Stalled(_))
        ));
        let waited = started.elapsed();
        assert!(
            waited >= timeout && waited < timeout + Duration::from_millis(50),
            "cut after {waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn idle_deadline_applies_only_between_frames() {
        let (_tx, rx) = tokio::io::duplex(1024);
        let mut reader = FrameReader::new(rx, 100, LONG);
        let deadline = Instant::now() + Duration::from_millis(200);
        assert!(matches!(
            reader.next(Some(deadline)).await,
            Err(FrameError::Idle)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn frames_wait_for_the_shared_budget() {
        let budget = Arc::new(Semaphore::new(10));
        let (mut tx, rx) = tokio::io::duplex(1024);
        let mut reader = FrameReader::new(rx, 10, Duration::from_millis(300));
        reader.set_budget(Arc::clone(&budget));
        tx.write_all(&framed(&[1; 8])).await.unwrap();
        tx.write_all(&framed(&[2; 8])).await.unwrap();
        let first = reader.next(None).await.unwrap().expect("first");
        assert_eq!(budget.available_permits(), 2, "the first frame holds 8");
        // The second needs 8 more: it waits, then times out while the first is held.
        assert!(matches!(
            reader.next(None).await,
            Err(FrameError::Stalled(_))
        ));
        drop(first);
        assert_eq!(budget.available_permits(), 10);
    }

    #[tokio::test]
    async fn a_frame_waiting_for_budget_gets_it_when_released() {
        let budget = Arc::new(Semaphore::new(10));
        let (mut tx, rx) = tokio::io::duplex(1024);
        let mut reader = FrameReader::new(rx, 10, LONG);
        reader.set_budget(Arc::clone(&budget));
        let held = Arc::clone(&budget).acquire_many_owned(10).await.unwrap();
        tx.write_all(&framed(&[3; 10])).await.unwrap();
        let waiting = tokio::time::timeout(Duration::from_millis(50), reader.next(None)).await;
        assert!(waiting.is_err(), "no budget yet");
        drop(held);
        let frame = reader.next(None).await.unwrap().expect("frame");
        assert_eq!(&frame.payload[..], &[3; 10]);
        assert_eq!(budget.available_permits(), 0);
    }
}
