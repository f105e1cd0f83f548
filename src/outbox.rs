//! A connection's outbox: the bounded queue between the router and the
//! connection's writer task, and the water marks that drive flow control.
//!
//! The router only ever calls [`Outbox::push`], which never waits. Past the
//! **high-water mark** (half of either bound) the router throttles the senders
//! whose messages filled it: their readers pause until the outbox drains below the
//! **low-water mark** (a quarter). A receiver that keeps reading is therefore never
//! cut because of someone else's burst. Only one that makes no progress for the
//! stall timeout while above high water, or whose outbox reaches its hard bounds,
//! is disconnected (`slow_consumer`; see docs/PROTOCOL.md). Nothing is dropped
//! silently and nothing grows without bound.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, Notify};

use crate::budget::Budget;

/// Default bound on frames queued for one connection.
pub const OUTBOX_CAPACITY: usize = 4096;

/// Default bound on bytes queued for one connection. A frame is always accepted
/// into an empty outbox, so one maximum-size frame always fits.
pub const OUTBOX_MAX_BYTES: usize = 32 * 1024 * 1024;

/// The outbox is full: the client is not reading fast enough.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

/// How full one outbox is, shared by the router, the writer and the senders it
/// throttles. Frames are counted by the channel itself; bytes here.
#[derive(Debug)]
pub struct Level {
    bytes: AtomicUsize,
    capacity: usize,
    high: (usize, usize),
    low: (usize, usize),
    /// Frames queued, as the channel's free permits tell it (`capacity - free`).
    free: AtomicUsize,
    /// Woken when the level falls below low water or the outbox closes, while
    /// `watched`.
    drained: Notify,
    /// Queued bytes count against the daemon's memory budget too.
    budget: Arc<Budget>,
    /// A sender waits on this outbox: the writer must wake it once drained.
    watched: AtomicBool,
    closed: AtomicBool,
    /// Batches the writer has written: the router compares it between its stall
    /// checks, so no clock is read on the message path.
    progress: AtomicU64,
}

impl Level {
    fn new(capacity: usize, max_bytes: usize, budget: Arc<Budget>) -> Self {
        Self {
            budget,
            bytes: AtomicUsize::new(0),
            capacity,
            high: ((capacity / 2).max(1), (max_bytes / 2).max(1)),
            low: (capacity / 4, max_bytes / 4),
            free: AtomicUsize::new(capacity),
            drained: Notify::new(),
            watched: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            progress: AtomicU64::new(0),
        }
    }

    fn frames(&self) -> usize {
        self.capacity - self.free.load(Ordering::Relaxed).min(self.capacity)
    }

    fn below_low(&self) -> bool {
        self.bytes.load(Ordering::Relaxed) <= self.low.1 && self.frames() <= self.low.0
    }

    /// Waits until the outbox is below low water or closed.
    pub async fn drained(&self) {
        loop {
            let woken = self.drained.notified();
            self.watched.store(true, Ordering::SeqCst);
            if self.below_low() || self.closed.load(Ordering::SeqCst) {
                return;
            }
            woken.await;
        }
    }

    /// A count that moves whenever the writer makes progress.
    pub fn progress(&self) -> u64 {
        self.progress.load(Ordering::Relaxed)
    }

    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
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

/// Creates an outbox bounded by `capacity` frames and `max_bytes` bytes, whose
/// queued bytes also count against `budget`.
pub fn outbox(capacity: usize, max_bytes: usize, budget: Arc<Budget>) -> (Outbox, OutboxReceiver) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let (abort_tx, abort_rx) = oneshot::channel();
    let level = Arc::new(Level::new(capacity.max(1), max_bytes, budget));
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
        // Counted before it is queued, so the writer never gives back bytes that
        // were not counted yet.
        self.level.budget.add(len);
        match self.tx.try_send(frame) {
            Ok(()) => {
                self.level.bytes.fetch_add(len, Ordering::Relaxed);
                self.level.free.store(self.tx.capacity(), Ordering::Relaxed);
                Ok(())
            }
            // A closed channel means the writer is gone; the connection is being torn
            // down and the router will hear of it. Treat like full: not delivered.
            Err(_) => {
                self.level.budget.sub(len);
                Err(Full)
            }
        }
    }

    /// Bytes queued and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.level.bytes.load(Ordering::Relaxed)
    }

    /// The outbox's level, for flow control.
    pub fn level(&self) -> &Arc<Level> {
        &self.level
    }

    /// Past the high-water mark: the senders filling it should pause. (Then the
    /// level's frame count is brought up to date for them; the writer keeps it so
    /// after each batch.)
    pub fn above_high(&self) -> bool {
        let free = self.tx.capacity();
        let frames = self.tx.max_capacity() - free;
        let above = self.level.bytes.load(Ordering::Relaxed) >= self.level.high.1
            || frames >= self.level.high.0;
        if above {
            self.level.free.store(free, Ordering::Relaxed);
        }
        above
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
    /// Marks a batch of `len` bytes as written.
    pub fn release(&self, len: usize) {
        let level = &self.level;
        level.bytes.fetch_sub(len, Ordering::Relaxed);
        level.budget.sub(len);
        level
            .free
            .store(self.rx.max_capacity() - self.rx.len(), Ordering::Relaxed);
        level.progress.fetch_add(1, Ordering::Relaxed);
        if level.watched.load(Ordering::SeqCst) && level.below_low() {
            level.watched.store(false, Ordering::SeqCst);
            level.drained.notify_waiters();
        }
    }
}

impl Drop for OutboxReceiver {
    fn drop(&mut self) {
        // What is still queued is discarded: give its bytes back.
        self.rx.close();
        let mut left = 0;
        while let Ok(frame) = self.rx.try_recv() {
            left += frame.len();
        }
        self.level.budget.sub(left);
        self.level.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_by_frames() {
        let (tx, _rx) = outbox(2, 1 << 20, Budget::new(1 << 30));
        assert!(tx.push(Bytes::from_static(b"a")).is_ok());
        assert!(tx.push(Bytes::from_static(b"b")).is_ok());
        assert_eq!(tx.push(Bytes::from_static(b"c")), Err(Full));
    }

    #[test]
    fn bounded_by_bytes_but_one_big_frame_fits() {
        let (tx, rx) = outbox(100, 10, Budget::new(1 << 30));
        assert!(tx.push(Bytes::from(vec![0; 50])).is_ok());
        assert_eq!(tx.push(Bytes::from_static(b"x")), Err(Full));
        rx.release(50);
        assert!(tx.push(Bytes::from(vec![0; 8])).is_ok());
        assert!(tx.push(Bytes::from(vec![0; 2])).is_ok());
        assert_eq!(tx.push(Bytes::from_static(b"x")), Err(Full));
    }

    #[tokio::test]
    async fn water_marks_and_the_drained_wait() {
        let (tx, mut rx) = outbox(16, 1 << 20, Budget::new(1 << 30));
        for _ in 0..7 {
            tx.push(Bytes::from_static(b"m")).unwrap();
        }
        assert!(!tx.above_high());
        tx.push(Bytes::from_static(b"m")).unwrap();
        assert!(tx.above_high(), "half of 16 frames");
        let level = tx.level().clone();
        let waiter = tokio::spawn(async move { level.drained().await });
        tokio::task::yield_now().await;
        // The writer takes three frames and writes them: five left.
        for _ in 0..3 {
            rx.rx.recv().await.unwrap();
        }
        rx.release(3);
        tokio::task::yield_now().await;
        assert!(
            !waiter.is_finished(),
            "5 frames are still above the low mark of 4"
        );
        rx.rx.recv().await.unwrap();
        rx.release(1);
        tokio::time::timeout(std::time::Duration::from_secs(1), waiter)
            .await
            .expect("below low water wakes the waiter")
            .unwrap();
    }

    #[tokio::test]
    async fn a_closed_outbox_releases_its_waiters() {
        let (tx, rx) = outbox(4, 1 << 20, Budget::new(1 << 30));
        tx.push(Bytes::from_static(b"m")).unwrap();
        tx.push(Bytes::from_static(b"m")).unwrap();
        let level = tx.level().clone();
        let waiter = tokio::spawn(async move { level.drained().await });
        drop(rx);
        tokio::time::timeout(std::time::Duration::from_secs(1), waiter)
            .await
            .expect("closing wakes the waiter")
            .unwrap();
    }
}
