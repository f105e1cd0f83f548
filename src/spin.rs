//! Adaptive busy-polling: while traffic flows, the runtime goes on polling its
//! sockets for a short window after each burst instead of going to sleep.
//!
//! On a virtual machine, waking a thread whose CPU went idle costs tens of
//! microseconds (measured by `examples/socket_floor`), more than the bus's own
//! work for a message. A request/reply exchange sleeps and wakes the daemon at
//! each crossing; with this window it stays awake between the crossings of a
//! busy conversation. The cost is CPU time during traffic only: once nothing
//! has happened for the window, the task sleeps until the router sees work again.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Default polling window after the last routed work.
pub const DEFAULT_SPIN_WINDOW: Duration = Duration::from_micros(50);

/// Shared by the router, which marks activity, and the polling task.
#[derive(Debug)]
pub struct Spin {
    epoch: Instant,
    window: u64,
    /// When work was last seen, in nanoseconds since `epoch`.
    last: AtomicU64,
    asleep: AtomicBool,
    wake: Notify,
}

impl Spin {
    pub fn new(window: Duration) -> Arc<Self> {
        Arc::new(Self {
            epoch: Instant::now(),
            window: window.as_nanos() as u64,
            last: AtomicU64::new(0),
            asleep: AtomicBool::new(true),
            wake: Notify::new(),
        })
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// The router did some work: keep polling for another window. (On the one
    /// thread this runs on, the router and the poller never race; were they to,
    /// a missed touch only means one sleep, and the next touch wakes it.)
    pub fn touch(&self) {
        if self.window == 0 {
            return;
        }
        self.last.store(self.now(), Ordering::Relaxed);
        if self.asleep.load(Ordering::Relaxed) && self.asleep.swap(false, Ordering::AcqRel) {
            self.wake.notify_one();
        }
    }

    /// Polls (yielding to the runtime, which polls its sockets before running
    /// this again, and to other threads) while work was seen within the window;
    /// sleeps otherwise.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        if self.window == 0 {
            return;
        }
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.wake.notified() => {}
            }
            while self.now().saturating_sub(self.last.load(Ordering::Relaxed)) < self.window
                && !shutdown.is_cancelled()
            {
                tokio::task::yield_now().await;
                // And to other processes: a client on this CPU may be the one
                // about to answer.
                std::thread::yield_now();
            }
            self.asleep.store(true, Ordering::Release);
            // Work seen between the check and going to sleep keeps us awake.
            if self.now().saturating_sub(self.last.load(Ordering::Relaxed)) < self.window
                && self.asleep.swap(false, Ordering::AcqRel)
            {
                self.wake.notify_one();
            }
        }
    }
}
