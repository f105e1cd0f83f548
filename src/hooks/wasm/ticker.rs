//! The epoch ticker behind guests' CPU budgets.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use wasmtime::Engine;

/// Granularity of CPU deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// The ticker parks after this many ticks without a running call.
const TICKER_IDLE_TICKS: u32 = 200;

/// Advances the engine's epoch every [`EPOCH_TICK`] while any call is running,
/// and parks when there has been none for a while, so an idle daemon sleeps.
pub(crate) struct Ticker {
    active: AtomicUsize,
    parked: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
}

impl Ticker {
    pub(crate) fn start(engine: Engine) -> Arc<Self> {
        let ticker = Arc::new(Self {
            active: AtomicUsize::new(0),
            parked: AtomicBool::new(false),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        });
        let weak = Arc::downgrade(&ticker);
        let spawned = std::thread::Builder::new()
            .name("hookbus-epoch".into())
            .spawn(move || {
                let mut idle = 0;
                loop {
                    std::thread::sleep(EPOCH_TICK);
                    let Some(t) = weak.upgrade() else { return };
                    engine.increment_epoch();
                    if t.active.load(Ordering::SeqCst) > 0 {
                        idle = 0;
                        continue;
                    }
                    idle += 1;
                    if idle < TICKER_IDLE_TICKS {
                        continue;
                    }
                    // The lock is held only to park: no await, no other work inside.
                    let mut guard = t.lock.lock().unwrap_or_else(|p| p.into_inner());
                    t.parked.store(true, Ordering::SeqCst);
                    while t.active.load(Ordering::SeqCst) == 0 && Arc::strong_count(&t) > 1 {
                        guard = match t.wake.wait_timeout(guard, Duration::from_secs(1)) {
                            Ok((g, _)) => g,
                            Err(p) => p.into_inner().0,
                        };
                    }
                    t.parked.store(false, Ordering::SeqCst);
                    idle = 0;
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the epoch ticker: hook deadlines will not fire");
        }
        ticker
    }

    fn enter(&self) {
        self.active.fetch_add(1, Ordering::SeqCst);
        if self.parked.load(Ordering::SeqCst) {
            let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
            self.wake.notify_one();
        }
    }

    fn exit(&self) {
        self.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Counts a call as running (for the ticker) until dropped, so a call whose future
/// is dropped midway is still counted out.
pub(crate) struct Running<'a>(&'a Ticker);

impl<'a> Running<'a> {
    pub(crate) fn new(ticker: &'a Ticker) -> Self {
        ticker.enter();
        Self(ticker)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.exit();
    }
}
