//! A connection's outbox: the bounded queue between the router and the
//! connection's writer task.
//!
//! The router only ever calls [`Outbox::push`], which never waits. The outbox is
//! bounded twice, by frames and by bytes; when either bound is hit the push fails
//! with [`Full`] and the router applies the slow-consumer policy (it disconnects the
//! client with a `slow_consumer` error; see docs/PROTOCOL.md). Nothing is dropped
//! silently and nothing grows without bound.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

/// Default bound on frames queued for one connection.
pub const OUTBOX_CAPACITY: usize = 4096;

/// Default bound on bytes queued for one connection. A frame is always accepted
/// into an empty outbox, so one maximum-size frame always fits.
pub const OUTBOX_MAX_BYTES: usize = 32 * 1024 * 1024;

/// The outbox is full: the client is not reading fast enough.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

/// The router's end.
#[derive(Debug)]
pub struct Outbox {
    tx: mpsc::Sender<Bytes>,
    queued_bytes: Arc<AtomicUsize>,
    max_bytes: usize,
    abort: Option<oneshot::Sender<Bytes>>,
}

/// The writer's end.
#[derive(Debug)]
pub struct OutboxReceiver {
    pub(crate) rx: mpsc::Receiver<Bytes>,
    queued_bytes: Arc<AtomicUsize>,
    /// Fires when the router gives up on the connection; carries the final error
    /// frame, which jumps the queue.
    pub(crate) abort: oneshot::Receiver<Bytes>,
}

/// Creates an outbox bounded by `capacity` frames and `max_bytes` bytes.
pub fn outbox(capacity: usize, max_bytes: usize) -> (Outbox, OutboxReceiver) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let (abort_tx, abort_rx) = oneshot::channel();
    let queued_bytes = Arc::new(AtomicUsize::new(0));
    (
        Outbox {
            tx,
            queued_bytes: queued_bytes.clone(),
            max_bytes,
            abort: Some(abort_tx),
        },
        OutboxReceiver {
            rx,
            queued_bytes,
            abort: abort_rx,
        },
    )
}

impl Outbox {
    /// Queues a frame without waiting.
    pub fn push(&self, frame: Bytes) -> Result<(), Full> {
        let len = frame.len();
        let queued = self.queued_bytes.load(Ordering::Relaxed);
        if queued != 0 && queued + len > self.max_bytes {
            return Err(Full);
        }
        match self.tx.try_send(frame) {
            Ok(()) => {
                self.queued_bytes.fetch_add(len, Ordering::Relaxed);
                Ok(())
            }
            // A closed channel means the writer is gone; the connection is being torn
            // down and the router will hear of it. Treat like full: not delivered.
            Err(_) => Err(Full),
        }
    }

    /// Closes the connection at once: queued frames are discarded and `reason`
    /// is written instead (if the writer is not in the middle of a frame).
    pub fn abort(mut self, reason: Bytes) {
        if let Some(abort) = self.abort.take() {
            let _ = abort.send(reason);
        }
    }
}

impl OutboxReceiver {
    /// Marks `len` bytes as written.
    pub fn release(&self, len: usize) {
        self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_by_frames() {
        let (tx, _rx) = outbox(2, 1 << 20);
        assert!(tx.push(Bytes::from_static(b"a")).is_ok());
        assert!(tx.push(Bytes::from_static(b"b")).is_ok());
        assert_eq!(tx.push(Bytes::from_static(b"c")), Err(Full));
    }

    #[test]
    fn bounded_by_bytes_but_one_big_frame_fits() {
        let (tx, rx) = outbox(100, 10);
        assert!(tx.push(Bytes::from(vec![0; 50])).is_ok());
        assert_eq!(tx.push(Bytes::from_static(b"x")), Err(Full));
        rx.release(50);
        assert!(tx.push(Bytes::from(vec![0; 8])).is_ok());
        assert!(tx.push(Bytes::from(vec![0; 2])).is_ok());
        assert_eq!(tx.push(Bytes::from_static(b"x")), Err(Full));
    }
}
