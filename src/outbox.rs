//! A connection's outbox: the bounded queue between the router and the
//! connection's writer task, and the water marks that drive flow control.
//!
//! The router only ever calls [`Outbox::push`], which never waits. Past the
//! **high-water mark** (half of either bound) the router throttles the senders
//! whose messages filled it: their readers pause until the outbox drains below the
//! **low-water mark** (a quarter). A receiver that keeps reading is therefore never
//! cut because of someone else's burst. Frames that arrive while the queue is at
//! its bounds (senders' requests already on their way when they were held back)
//! are kept in order on the router's side, **parked**, and moved on as the writer
//! makes room ([`Outbox::unpark`]). Only a receiver that makes no progress for the
//! stall timeout while above high water is disconnected (`slow_consumer`; see
//! docs/PROTOCOL.md). Nothing is dropped silently, and every queued or parked byte
//! counts against the memory budget.
//!
//! A frame for a client whose outbox is empty and whose writer is idle is
//! written by the router itself, at once ([`Outbox::send`]): the writer task's
//! wake-up is the largest part of a hop through the bus when nothing is queued.
//! Only one frame per connection per router turn goes that way; the frames that
//! follow it in the same turn are queued, so the writer coalesces a burst into
//! one write as before.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::{mpsc, oneshot, Notify};

use crate::frame::OutFrame;

use crate::budget::Budget;

/// Default bound on frames queued for one connection.
pub const OUTBOX_CAPACITY: usize = 4096;

/// Default bound on bytes queued for one connection. A frame is always accepted
/// into an empty outbox, so one maximum-size frame always fits.
pub const OUTBOX_MAX_BYTES: usize = 32 * 1024 * 1024;

/// Largest frame the router writes to an idle client itself; a larger one is
/// the writer's (copying it into the socket would hold up the router).
pub const DIRECT_WRITE_MAX: usize = 64 * 1024;

/// The connection's writer is gone: it is closing, and the router will hear of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gone;

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
    /// The router wrote part of a frame and queued the rest: until the writer
    /// has written it, the stream is inside a frame.
    torn: AtomicBool,
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
            torn: AtomicBool::new(false),
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

    /// The writer wrote something to the client.
    pub fn wrote(&self) {
        self.progress.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether the stream may be inside a frame the router began: a frame
    /// written now would land in the middle of it.
    pub fn torn(&self) -> bool {
        self.torn.load(Ordering::Acquire)
    }

    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.drained.notify_waiters();
    }
}

/// The router's end.
#[derive(Debug)]
pub struct Outbox {
    tx: mpsc::Sender<OutFrame>,
    level: Arc<Level>,
    max_bytes: usize,
    abort: Option<oneshot::Sender<Bytes>>,
    /// Frames that found the queue at its bounds, in order, and their bytes.
    parked: VecDeque<OutFrame>,
    parked_bytes: usize,
    /// The connection's socket, which the writer shares, for direct writes
    /// (`None` in tests without one).
    socket: Option<Arc<OwnedWriteHalf>>,
    /// The router turn of the last direct write.
    direct_turn: u64,
}

/// The writer's end.
#[derive(Debug)]
pub struct OutboxReceiver {
    pub(crate) rx: mpsc::Receiver<OutFrame>,
    level: Arc<Level>,
    /// Fires when the router gives up on the connection; carries the final error
    /// frame, which jumps the queue.
    pub(crate) abort: oneshot::Receiver<Bytes>,
}

/// Creates an outbox bounded by `capacity` frames and `max_bytes` bytes, whose
/// queued bytes also count against `budget`; with the connection's `socket`,
/// the router may write to an idle client directly ([`Outbox::send`]).
pub fn outbox(
    capacity: usize,
    max_bytes: usize,
    budget: Arc<Budget>,
    socket: Option<Arc<OwnedWriteHalf>>,
) -> (Outbox, OutboxReceiver) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let (abort_tx, abort_rx) = oneshot::channel();
    let level = Arc::new(Level::new(capacity.max(1), max_bytes, budget));
    (
        Outbox {
            tx,
            level: level.clone(),
            max_bytes,
            abort: Some(abort_tx),
            parked: VecDeque::new(),
            parked_bytes: 0,
            socket,
            direct_turn: u64::MAX,
        },
        OutboxReceiver {
            rx,
            level,
            abort: abort_rx,
        },
    )
}

impl Outbox {
    /// Delivers a frame: written to the socket at once when nothing is queued
    /// or being written and no frame went that way this `turn` of the router,
    /// queued ([`Outbox::push`]) otherwise. What the socket does not take at
    /// once is queued, so order holds.
    pub fn send(&mut self, frame: impl Into<OutFrame>, turn: u64) -> Result<(), Gone> {
        let frame = frame.into();
        // Acquire pairs with the writer's release of the bytes it wrote: zero
        // means it has no write in progress, and it starts none until the
        // router queues something, which only this end does.
        if self.direct_turn == turn
            || frame.len() > DIRECT_WRITE_MAX
            || !self.parked.is_empty()
            || self.level.bytes.load(Ordering::Acquire) != 0
        {
            return self.push(frame);
        }
        let Some(socket) = &self.socket else {
            return self.push(frame);
        };
        self.direct_turn = turn;
        // Would block, or failed: the writer meets the same state with the
        // frame queued, and deals with it as with any write.
        let written = write_now(socket, &frame).unwrap_or_default();
        if written == 0 {
            return self.push(frame);
        }
        self.level.wrote();
        if written < frame.len() {
            let rest = match frame {
                OutFrame::Whole(frame) => frame.slice(written..),
                frame => Bytes::from(frame.to_vec()).slice(written..),
            };
            self.level.torn.store(true, Ordering::Release);
            return self.push(rest);
        }
        Ok(())
    }

    /// Queues a frame without waiting: parks it behind the queue when the queue
    /// is at its bounds (or frames are parked already, so order holds).
    pub fn push(&mut self, frame: impl Into<OutFrame>) -> Result<(), Gone> {
        let frame = frame.into();
        // Counted before it is queued, so the writer never gives back bytes that
        // were not counted yet.
        self.level.budget.add_queued(frame.len());
        if !self.parked.is_empty() {
            if self.unpark().is_err() {
                self.level.budget.sub(frame.len());
                return Err(Gone);
            }
            if !self.parked.is_empty() {
                self.park(frame);
                return Ok(());
            }
        }
        match self.enqueue(frame) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(frame)) => {
                self.park(frame);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Closed(frame)) => {
                self.level.budget.sub(frame.len());
                Err(Gone)
            }
        }
    }

    /// Moves parked frames into the queue while it has room; true when none is
    /// left parked.
    pub fn unpark(&mut self) -> Result<bool, Gone> {
        while let Some(frame) = self.parked.pop_front() {
            let len = frame.len();
            match self.enqueue(frame) {
                Ok(()) => self.parked_bytes -= len,
                Err(mpsc::error::TrySendError::Full(frame)) => {
                    self.parked.push_front(frame);
                    return Ok(false);
                }
                Err(mpsc::error::TrySendError::Closed(frame)) => {
                    self.parked.push_front(frame);
                    return Err(Gone);
                }
            }
        }
        Ok(true)
    }

    /// Frames parked behind the queue.
    pub fn parked(&self) -> usize {
        self.parked.len()
    }

    fn park(&mut self, frame: OutFrame) {
        self.parked_bytes += frame.len();
        self.parked.push_back(frame);
    }

    /// Puts a frame (already counted in the budget) in the queue, within its
    /// bounds (one frame always fits an empty queue).
    fn enqueue(&self, frame: OutFrame) -> Result<(), mpsc::error::TrySendError<OutFrame>> {
        let len = frame.len();
        let queued = self.level.bytes.load(Ordering::Relaxed);
        if queued != 0 && queued + len > self.max_bytes {
            return Err(mpsc::error::TrySendError::Full(frame));
        }
        self.tx.try_send(frame)?;
        self.level.bytes.fetch_add(len, Ordering::Relaxed);
        self.level.free.store(self.tx.capacity(), Ordering::Relaxed);
        Ok(())
    }

    /// Bytes queued and not yet written, and parked.
    pub fn held_bytes(&self) -> usize {
        self.level.bytes.load(Ordering::Relaxed) + self.parked_bytes
    }

    /// The outbox's level, for flow control.
    pub fn level(&self) -> &Arc<Level> {
        &self.level
    }

    /// Past the high-water mark, or frames are parked: the senders filling it
    /// should pause. (Then the level's frame count is brought up to date for them;
    /// the writer keeps it so after each batch.)
    pub fn above_high(&self) -> bool {
        if self.tx.is_closed() {
            return false; // the writer is gone: nothing drains it, nobody waits for it
        }
        if !self.parked.is_empty() {
            return true;
        }
        let free = self.tx.capacity();
        let frames = self.tx.max_capacity() - free;
        let above = self.level.bytes.load(Ordering::Relaxed) >= self.level.high.1
            || frames >= self.level.high.0;
        if above {
            self.level.free.store(free, Ordering::Relaxed);
        }
        above
    }

    /// At or below the low-water mark, nothing parked: where a reader held
    /// back by this outbox reads again.
    pub fn below_low(&self) -> bool {
        if !self.parked.is_empty() {
            return false;
        }
        let frames = self.tx.max_capacity() - self.tx.capacity();
        self.level.bytes.load(Ordering::Relaxed) <= self.level.low.1 && frames <= self.level.low.0
    }

    /// Lets the connection close gracefully: the writer writes what is queued,
    /// then `last`, then closes. Frames still parked are discarded; returns how
    /// many. If `last` does not fit, the close is an [`Outbox::abort`] with it.
    pub fn finish(mut self, last: Option<Bytes>) -> usize {
        let _ = self.unpark();
        let discarded = self.parked.len();
        if let Some(last) = last {
            self.level.budget.add_queued(last.len());
            if self.enqueue(last.clone().into()).is_err() {
                self.level.budget.sub(last.len());
                self.abort(last);
            }
        }
        discarded
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
        // Let go of the socket before the queue closes, so the writer, which
        // sees the queue close, holds its last reference and shuts it down.
        self.socket = None;
        // The router let the session go: nobody needs to wait for it any more.
        self.level.budget.sub(self.parked_bytes);
        self.level.close();
    }
}

impl OutboxReceiver {
    /// The outbox's level, for the writer's progress.
    pub fn level(&self) -> &Arc<Level> {
        &self.level
    }

    /// Marks a batch of `len` bytes as written.
    pub fn release(&self, len: usize) {
        let level = &self.level;
        // Whatever the router began is written: the stream is between frames.
        level.torn.store(false, Ordering::Release);
        // Release: the router's direct write, which waits for zero, comes
        // after the writes of these bytes.
        level.bytes.fetch_sub(len, Ordering::Release);
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

/// One non-blocking write of a whole frame; how many bytes the socket took.
fn write_now(socket: &OwnedWriteHalf, frame: &OutFrame) -> std::io::Result<usize> {
    use std::io::IoSlice;
    match frame {
        OutFrame::Whole(frame) => socket.try_write(frame),
        OutFrame::Event { .. } => {
            let mut head = [0u8; crate::frame::MAX_EVENT_HEAD];
            let mut room = &mut head[..];
            let tail = frame.put_head(&mut room);
            let written = crate::frame::MAX_EVENT_HEAD - room.len();
            socket.try_write_vectored(&[IoSlice::new(&head[..written]), IoSlice::new(tail)])
        }
        OutFrame::Parts(parts) => {
            socket.try_write_vectored(&[IoSlice::new(&parts.0), IoSlice::new(&parts.1)])
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

    #[tokio::test]
    async fn frames_past_the_bounds_are_parked_in_order_and_moved_on() {
        let budget = Budget::new(1 << 30);
        let (mut tx, mut rx) = outbox(2, 1 << 20, budget.clone(), None);
        for frame in [&b"a"[..], b"b", b"c", b"d"] {
            tx.push(Bytes::from_static(frame)).unwrap();
        }
        assert_eq!(tx.parked(), 2, "two fit the queue of two");
        assert!(tx.above_high());
        assert_eq!(budget.used(), 4, "parked frames count too");
        assert_eq!(rx.rx.recv().await.unwrap().to_vec(), b"a");
        rx.release(1);
        // A new frame goes behind the parked ones.
        tx.push(Bytes::from_static(b"e")).unwrap();
        assert_eq!(tx.parked(), 2);
        let mut got = Vec::new();
        while got.len() < 4 {
            tx.unpark().unwrap();
            let frame = rx.rx.recv().await.unwrap();
            rx.release(frame.len());
            got.push(frame.to_vec());
        }
        assert_eq!(got, [&b"b"[..], b"c", b"d", b"e"]);
        assert_eq!(tx.unpark(), Ok(true));
        assert_eq!(budget.used(), 0);
    }

    #[tokio::test]
    async fn bounded_by_bytes_but_one_big_frame_fits() {
        let budget = Budget::new(1 << 30);
        let (mut tx, mut rx) = outbox(100, 10, budget.clone(), None);
        tx.push(Bytes::from(vec![0; 50])).unwrap();
        tx.push(Bytes::from_static(b"x")).unwrap();
        assert_eq!(tx.parked(), 1, "the queue holds 50 of 10 bytes");
        rx.rx.recv().await.unwrap();
        rx.release(50);
        assert_eq!(tx.unpark(), Ok(true));
        // Dropping the outbox gives back what is parked; dropping the writer's
        // end what is queued.
        for _ in 0..3 {
            tx.push(Bytes::from(vec![0; 8])).unwrap();
        }
        assert_eq!(tx.parked(), 2);
        drop(tx);
        drop(rx);
        assert_eq!(budget.used(), 0);
    }

    #[tokio::test]
    async fn water_marks_and_the_drained_wait() {
        let (mut tx, mut rx) = outbox(16, 1 << 20, Budget::new(1 << 30), None);
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

    /// An outbox whose router end writes to a real socket; the client's end.
    async fn on_socket(
        capacity: usize,
    ) -> (Outbox, OutboxReceiver, std::os::unix::net::UnixStream) {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let (_, writer) = tokio::net::UnixStream::from_std(ours).unwrap().into_split();
        // Tokio writes only once the socket was seen writable.
        writer.writable().await.unwrap();
        let (tx, rx) = outbox(
            capacity,
            1 << 20,
            Budget::new(1 << 30),
            Some(Arc::new(writer)),
        );
        (tx, rx, theirs)
    }

    fn read_all(theirs: &mut std::os::unix::net::UnixStream) -> Vec<u8> {
        use std::io::Read;
        theirs.set_nonblocking(true).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 65536];
        while let Ok(n) = theirs.read(&mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        got
    }

    #[tokio::test]
    async fn an_idle_client_gets_the_first_frame_of_a_turn_directly_and_the_rest_queued() {
        let (mut tx, mut rx, mut theirs) = on_socket(16).await;
        tx.send(Bytes::from_static(b"a"), 1).unwrap();
        tx.send(Bytes::from_static(b"b"), 1).unwrap();
        assert_eq!(
            read_all(&mut theirs),
            b"a",
            "written by the router, no writer ran"
        );
        assert_eq!(
            tx.held_bytes(),
            1,
            "the second of the turn waits for the writer"
        );
        // While the writer holds `b`, even a new turn queues behind it.
        let b = rx.rx.recv().await.unwrap();
        tx.send(Bytes::from_static(b"c"), 2).unwrap();
        assert_eq!(tx.held_bytes(), 2);
        assert!(read_all(&mut theirs).is_empty(), "c did not overtake b");
        rx.release(b.len());
        let c = rx.rx.recv().await.unwrap();
        assert_eq!((b.to_vec(), c.to_vec()), (b"b".to_vec(), b"c".to_vec()));
        rx.release(c.len());
        tx.send(Bytes::from_static(b"d"), 3).unwrap();
        assert_eq!(read_all(&mut theirs), b"d", "idle again: direct");
    }

    #[tokio::test]
    async fn a_full_socket_queues_and_a_partial_write_queues_the_rest() {
        let (mut tx, mut rx, mut theirs) = on_socket(16).await;
        // Fill the socket's buffer with direct writes, one per turn.
        let chunk = Bytes::from(vec![7u8; 4096]);
        let mut turn = 0;
        while tx.held_bytes() == 0 {
            turn += 1;
            tx.send(chunk.clone(), turn).unwrap();
        }
        let queued = tx.held_bytes();
        assert!(
            queued > 0 && queued <= 4096,
            "the frame the socket did not take whole"
        );
        assert_eq!(
            queued < 4096,
            rx.level().torn(),
            "a partial write leaves the stream torn"
        );
        let written_directly = read_all(&mut theirs).len();
        assert_eq!(
            written_directly + queued,
            turn as usize * 4096,
            "nothing lost, nothing twice"
        );
        let rest = rx.rx.recv().await.unwrap();
        assert_eq!(rest.len(), queued);
        rx.release(rest.len());
        assert!(!rx.level().torn());
    }

    #[tokio::test]
    async fn a_closed_outbox_releases_its_waiters() {
        let (mut tx, rx) = outbox(4, 1 << 20, Budget::new(1 << 30), None);
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
