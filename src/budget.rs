//! The daemon's memory budget (docs/PROTOCOL.md, "Memory budget").
//!
//! One count of the bytes the bus holds on its clients' behalf: frames being read
//! (a frame over [`FREE_FRAME`] takes a [`Grant`] for its whole length before its
//! body is read), requests on their way to the router, and frames queued or parked
//! in outboxes (counted once per recipient). Each connection's share is bounded on
//! its own (one frame being read, [`crate::flow::MAX_IN_FLIGHT`] requests or 8 MiB
//! on their way, its outbox bounds; what is parked came from senders' requests on
//! their way); the budget bounds their sum:
//!
//! - a frame that does not fit under three quarters of it waits, unread, until it
//!   does: its sender's socket fills and the kernel pushes back;
//! - while the budget is spent, no connection reads until it falls back below
//!   three quarters ([`Budget::recovered`]);
//! - while it is spent or a reader waits for it ([`Budget::pressed`]), a
//!   recipient that reads nothing for the slow-consumer timeout while frames wait
//!   for it is cut (the router's rule).
//!
//! Nothing waits for ever: a stalled partial frame is closed by the frame timeout,
//! a stalled reader by the slow-consumer timeout, and both give their bytes back.

use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Notify;
use tracing::warn;

/// A frame up to this long is read without asking the budget (it fits the read
/// buffer a connection keeps anyway).
pub const FREE_FRAME: usize = crate::connection::READ_BUF_KEEP;

/// Default budget: 256 MiB (25 frames of the default 10 MiB limit).
pub const DEFAULT_MEMORY_BUDGET: usize = 256 * 1024 * 1024;

/// The shared count.
#[derive(Debug)]
pub struct Budget {
    limit: usize,
    /// Bytes held, as readers, the router's batches and writers count them. Each
    /// half may go below zero for a moment (a writer gives back bytes the router
    /// counted); their sum is right.
    used: Line,
    /// Bytes the router queued: counted per frame by one thread, on a line of its
    /// own, so the message path does not bounce a cache line between cores.
    queued: Line,
    /// Times a reader had to wait for the budget.
    waits: AtomicU64,
    /// Waits up to the last warning, and when it was (ms after `born`): waits are
    /// logged at most once a second.
    logged: (AtomicU64, AtomicU64),
    born: Instant,
    /// Readers waiting for the budget (for room, or for it to recover).
    waiters: AtomicUsize,
    /// Readers waiting for room for a frame, woken one at a time in order when
    /// bytes are given back while `watched` (each passes the wake-up on if it got
    /// room), so thousands of waiters are not all woken by every byte given back.
    room: Notify,
    /// Readers waiting for a spent budget to recover, woken the same way.
    recovery: Notify,
    watched: AtomicBool,
}

/// Bytes taken from a [`Budget`], given back on drop.
#[derive(Debug)]
pub struct Grant {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Budget {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: Line::default(),
            queued: Line::default(),
            waits: AtomicU64::new(0),
            waiters: AtomicUsize::new(0),
            logged: (AtomicU64::new(0), AtomicU64::new(0)),
            born: Instant::now(),
            room: Notify::new(),
            recovery: Notify::new(),
            watched: AtomicBool::new(false),
        })
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn used(&self) -> usize {
        self.sum(Ordering::Relaxed)
    }

    fn sum(&self, order: Ordering) -> usize {
        let sum = self.used.0.load(order) + self.queued.0.load(order);
        sum.max(0) as usize
    }

    pub fn waits(&self) -> u64 {
        self.waits.load(Ordering::Relaxed)
    }

    /// Every byte is taken: readers pause.
    pub fn spent(&self) -> bool {
        self.used() >= self.limit
    }

    /// Spent, or a reader waits for it: receivers that hold bytes and read
    /// nothing are in someone's way.
    pub fn pressed(&self) -> bool {
        self.spent() || self.waiters.load(Ordering::Relaxed) > 0
    }

    /// Counts bytes that are already held (read requests).
    pub fn add(&self, bytes: usize) {
        self.used.0.fetch_add(bytes as isize, Ordering::Relaxed);
    }

    /// Counts a frame the router queued (the router alone does, so this line
    /// stays in its core's cache).
    pub fn add_queued(&self, bytes: usize) {
        self.queued.0.fetch_add(bytes as isize, Ordering::Relaxed);
    }

    /// Gives back bytes counted by [`Budget::add`] or [`Budget::add_queued`].
    pub fn sub(&self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        self.used.0.fetch_sub(bytes as isize, Ordering::Release);
        if self.watched.load(Ordering::SeqCst) {
            self.watched.store(false, Ordering::SeqCst);
            self.room.notify_one();
            self.recovery.notify_one();
        }
    }

    /// Counts `bytes` already held until the grant is dropped.
    pub fn hold(self: &Arc<Self>, bytes: usize) -> Grant {
        self.add(bytes);
        Grant {
            budget: self.clone(),
            bytes,
        }
    }

    /// Takes `bytes` for a frame once they fit under three quarters of the budget
    /// (at once if they do): frames being read never spend the whole budget by
    /// themselves, so small requests and deliveries go on beside them.
    pub async fn take(self: &Arc<Self>, bytes: usize) -> Grant {
        let room = self.low();
        let mut counted = false;
        loop {
            let mine = self.used.0.load(Ordering::Acquire);
            let queued = self.queued.0.load(Ordering::Acquire);
            if ((mine + queued).max(0) as usize).saturating_add(bytes) <= room {
                let taken = mine + bytes as isize;
                if self
                    .used
                    .0
                    .compare_exchange(mine, taken, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    return Grant {
                        budget: self.clone(),
                        bytes,
                    };
                }
                continue;
            }
            if !counted {
                counted = true;
                self.note_wait();
            }
            self.wait_for(&self.room, |used| used.saturating_add(bytes) <= room)
                .await;
        }
    }

    /// Waits until use falls to three quarters of the budget.
    pub async fn recovered(&self) {
        self.note_wait();
        let low = self.low();
        self.wait_for(&self.recovery, |used| used <= low).await;
    }

    /// Three quarters of the budget.
    fn low(&self) -> usize {
        self.limit / 4 * 3
    }

    /// Counts a reader's wait, and warns at most once a second with the count.
    fn note_wait(&self) {
        let waits = self.waits.fetch_add(1, Ordering::Relaxed) + 1;
        let now = self.born.elapsed().as_millis() as u64;
        let last = self.logged.1.load(Ordering::Relaxed);
        if (last != 0 && now < last + 1000)
            || self
                .logged
                .1
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let before = self.logged.0.swap(waits, Ordering::Relaxed);
        warn!(
            used = self.used(),
            budget = self.limit,
            waits = waits - before,
            "memory budget spent: clients are held back until some is given back (--memory-budget)"
        );
    }

    /// Waits in `queue`'s order until `ok(used)`, then wakes the next waiter so
    /// it can check too.
    async fn wait_for(&self, queue: &Notify, ok: impl Fn(usize) -> bool) {
        self.waiters.fetch_add(1, Ordering::Relaxed);
        let _waiting = Waiting(&self.waiters);
        loop {
            let woken = queue.notified();
            self.watched.store(true, Ordering::SeqCst);
            if ok(self.sum(Ordering::SeqCst)) {
                queue.notify_one();
                return;
            }
            woken.await;
        }
    }
}

/// An atomic count alone on its cache line(s).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Line(AtomicIsize);

/// One reader waiting; counted while it lives (the wait may be cancelled).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Grant {
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Grant {
    fn drop(&mut self) {
        self.budget.sub(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_grant_that_does_not_fit_waits_for_one_to_be_given_back() {
        let budget = Budget::new(100);
        let first = budget.take(60).await;
        assert_eq!(budget.used(), 60);
        let b = budget.clone();
        let second = tokio::spawn(async move { b.take(60).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!second.is_finished());
        assert_eq!(budget.waits(), 1);
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(1), second)
            .await
            .expect("freed bytes wake the waiter")
            .unwrap();
        assert_eq!(second.bytes(), 60);
        assert_eq!(budget.used(), 60);
        drop(second);
        assert_eq!(budget.used(), 0);
    }

    #[tokio::test]
    async fn spent_until_back_below_three_quarters() {
        let budget = Budget::new(100);
        budget.add(100);
        assert!(budget.spent());
        let b = budget.clone();
        let waiter = tokio::spawn(async move { b.recovered().await });
        budget.sub(10);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "90 is above 75");
        budget.sub(15);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("75 is low enough")
            .unwrap();
    }
}
