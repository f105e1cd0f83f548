//! A connection's outbox: the bounded queue between the router and the
//! connection's writer task, and the water marks that drive flow control.
//!
//! The router only ever calls [`Outbox::push`], which never waits. Past the
//! **high-water mark** (a quarter of either bound) the router throttles the senders
//! whose messages filled it: their readers pause until the outbox drains below the
//! **low-water mark** (an eighth). A receiver that keeps reading is therefore never
//! cut because of someone else's burst. Only one that makes no progress for the
//! stall timeout while above high water, or whose outbox reaches its hard bounds,
//! is disconnected (`slow_consumer`; see docs/PROTOCOL.md). Nothing is dropped
//! silently and nothing grows without bound.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, Notify};

/// Default bound on frames queued for one connection.
pub const OUTBOX_CAPACITY: usize = 4096;

/// Default bound on bytes queued for one connection. A frame is always accepted
/// into an empty outbox, so one maximum-size frame always fits.
pub const OUTBOX_MAX_BYTES: usize = 32 * 1024 * 1024;

/// The outbox is full: the client is not reading fast enough.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

/// How full one outbox is, shared by the router, the writer and the senders it
/// throttles.
#[derive(Debug)]
pub struct Level {
    frames: AtomicUsize,
    bytes: AtomicUsize,
    high: (usize, usize),
    low: (usize, usize),
    /// Woken when the level falls below low water or the outbox closes.
    drained: Notify,
    closed: AtomicBool,
    /// When the writer last made progress (or got work while idle), in ms since
    /// `epoch`.
    progress_ms: AtomicU64,
    epoch: Instant,
}

impl Level {
    fn new(capacity: usize, max_bytes: usize) -> Self {
        Self {
            frames: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            high: ((capacity / 4).max(1), (max_bytes / 4).max(1)),
            low: (capacity / 8, max_bytes / 8),
            drained: Notify::new(),
            closed: AtomicBool::new(false),
            progress_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Past the high-water mark: senders to it should pause.
    pub fn above_high(&self) -> bool {
        self.frames.load(Ordering::Relaxed) >= self.high.0
            || self.bytes.load(Ordering::Relaxed) >= self.high.1
    }

    fn below_low(&self) -> bool {
        self.frames.load(Ordering::Relaxed) <= self.low.0
            && self.bytes.load(Ordering::Relaxed) <= self.low.1
    }

    /// Waits until the outbox is below low water or closed.
    pub async fn drained(&self) {
        loop {
            let woken = self.drained.notified();
            if self.below_low() || self.closed.load(Ordering::Acquire) {
                return;
            }
            woken.await;
        }
    }

    /// How long the writer has made no progress while having work.
    pub fn stalled_for(&self) -> Duration {
        let since = self.progress_ms.load(Ordering::Relaxed);
        Duration::from_millis(self.now_ms().saturating_sub(since))
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.drained.notify_waiters();
    }
}

/// The router's end.
#[derive(Debug)]
pub struct Outbox {
    tx: mpsc::Sender<Bytes>,
    level: Arc<Level>,
    max_bytes: usize,
    abort: Option<oneshot::Sender<Bytes>>,
}

/// The writer's end.
#[derive(Debug)]
pub struct OutboxReceiver {
    pub(crate) rx: mpsc::Receiver<Bytes>,
    level: Arc<Level>,
    /// Fires when the router gives up on the connection; carries the final error
    /// frame, which jumps the queue.
    pub(crate) abort: oneshot::Receiver<Bytes>,
}

/// Creates an outbox bounded by `capacity` frames and `max_bytes` bytes.
pub fn outbox(capacity: usize, max_bytes: usize) -> (Outbox, OutboxReceiver) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let (abort_tx, abort_rx) = oneshot::channel();
    let level = Arc::new(Level::new(capacity.max(1), max_bytes));
    (
        Outbox {
            tx,
            level: level.clone(),
            max_bytes,
            abort: Some(abort_tx),
        },
        OutboxReceiver {
            rx,
            level,
            abort: abort_rx,
        },
    )
}

impl Outbox {
    /// Queues a frame without waiting.
    pub fn push(&self, frame: Bytes) -> Result<(), Full> {
        let len = frame.len();
        let queued = self.level.bytes.load(Ordering::Relaxed);
        if queued != 0 && queued + len > self.max_bytes {
            return Err(Full);
        }
        match self.tx.try_send(frame) {
            Ok(()) => {
                self.level.bytes.fetch_add(len, Ordering::Relaxed);
                if self.level.frames.fetch_add(1, Ordering::Relaxed) == 0 {
                    // Idle until now: the stall clock starts with this work.
                    let now = self.level.now_ms();
                    self.level.progress_ms.store(now, Ordering::Relaxed);
                }
                Ok(())
            }
            // A closed channel means the writer is gone; the connection is being torn
            // down and the router will hear of it. Treat like full: not delivered.
            Err(_) => Err(Full),
        }
    }

    /// The outbox's level, for flow control.
    pub fn level(&self) -> &Arc<Level> {
        &self.level
    }

    /// Closes the connection at once: queued frames are discarded and `reason`
    /// is written instead (if the writer is not in the middle of a frame).
    pub fn abort(mut self, reason: Bytes) {
        if let Some(abort) = self.abort.take() {
            let _ = abort.send(reason);
        }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        // The router let the session go: nobody needs to wait for it any more.
        self.level.close();
    }
}

impl OutboxReceiver {
    /// Marks `frames` frames of `len` bytes as written.
    pub fn release(&self, frames: usize, len: usize) {
        let level = &self.level;
        level.bytes.fetch_sub(len, Ordering::Relaxed);
        level.frames.fetch_sub(frames, Ordering::Relaxed);
        level.progress_ms.store(level.now_ms(), Ordering::Relaxed);
        if level.below_low() {
            level.drained.notify_waiters();
        }
    }
}

impl Drop for OutboxReceiver {
    fn drop(&mut self) {
        self.level.close();
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
        rx.release(1, 50);
        assert!(tx.push(Bytes::from(vec![0; 8])).is_ok());
        assert!(tx.push(Bytes::from(vec![0; 2])).is_ok());
        assert_eq!(tx.push(Bytes::from_static(b"x")), Err(Full));
    }

    #[tokio::test]
    async fn water_marks_and_the_drained_wait() {
        let (tx, rx) = outbox(16, 1 << 20);
        for _ in 0..3 {
            tx.push(Bytes::from_static(b"m")).unwrap();
        }
        assert!(!tx.level().above_high());
        tx.push(Bytes::from_static(b"m")).unwrap();
        assert!(tx.level().above_high(), "a quarter of 16 frames");
        let level = tx.level().clone();
        let waiter = tokio::spawn(async move { level.drained().await });
        tokio::task::yield_now().await;
        rx.release(1, 1);
        tokio::task::yield_now().await;
        assert!(
            !waiter.is_finished(),
            "3 frames are still above the low mark of 2"
        );
        rx.release(1, 1);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("below low water wakes the waiter")
            .unwrap();
    }

    #[tokio::test]
    async fn a_closed_outbox_releases_its_waiters() {
        let (tx, rx) = outbox(4, 1 << 20);
        tx.push(Bytes::from_static(b"m")).unwrap();
        tx.push(Bytes::from_static(b"m")).unwrap();
        let level = tx.level().clone();
        let waiter = tokio::spawn(async move { level.drained().await });
        drop(rx);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("closing wakes the waiter")
            .unwrap();
    }
}
