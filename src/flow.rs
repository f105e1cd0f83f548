//! Flow control between senders and receivers (docs/PROTOCOL.md, "Flow control").
//!
//! When the router pushes a sender's message into a receiver's outbox and the
//! outbox is past its high-water mark, it puts that outbox's [`Level`] on the
//! sender's [`Flow`]. The sender's reader then stops reading its socket until every
//! such outbox has drained below low water (or closed): its socket buffer fills
//! and the kernel pushes back on the client. Other senders and receivers are not
//! affected. A reader also has at most about [`MAX_IN_FLIGHT`] requests waiting for
//! the router, which bounds how far a sender can overshoot a high-water mark.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::budget::Grant;
use crate::outbox::Level;

/// How much one connection may have handed to the router and not yet handled,
/// in units of one request, plus one per [`IN_FLIGHT_UNIT_BYTES`] of frames: about
/// 2048 small requests, or 8 MiB (a batch always goes when none is in flight).
pub const MAX_IN_FLIGHT: usize = 2048;

/// Bytes that weigh as much as one request in [`MAX_IN_FLIGHT`].
pub const IN_FLIGHT_UNIT_BYTES: usize = 4096;

/// One connection's flow state, shared by its reader and the router.
#[derive(Debug)]
pub struct Flow {
    /// Outboxes this connection's messages pushed past high water. Held only to
    /// push or take the list.
    held_by: Mutex<Vec<Arc<Level>>>,
    held: AtomicBool,
    /// Batches handed to the router and not yet handled.
    in_flight: AtomicUsize,
    /// The reader waits for a slot: the router must wake it.
    wants_slot: AtomicBool,
    slot_freed: Notify,
}

impl Default for Flow {
    fn default() -> Self {
        Self {
            held_by: Mutex::new(Vec::new()),
            held: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            wants_slot: AtomicBool::new(false),
            slot_freed: Notify::new(),
        }
    }
}

/// One batch's place among [`MAX_IN_FLIGHT`] requests, and its bytes' place in
/// the memory budget; both freed when the router drops it.
#[derive(Debug)]
pub struct Slot {
    flow: Arc<Flow>,
    weight: usize,
    _bytes: Grant,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let flow = &self.flow;
        flow.in_flight.fetch_sub(self.weight, Ordering::SeqCst);
        if flow.wants_slot.swap(false, Ordering::SeqCst) {
            flow.slot_freed.notify_waiters();
        }
    }
}

impl Flow {
    /// The router: this sender must wait for `level` to drain before it sends more.
    pub fn hold(&self, level: &Arc<Level>) {
        let mut held_by = self.held_by.lock().unwrap_or_else(|p| p.into_inner());
        if !held_by.iter().any(|l| Arc::ptr_eq(l, level)) {
            held_by.push(level.clone());
        }
        self.held.store(true, Ordering::Release);
    }

    /// Whether the reader must call [`Flow::wait`] before it reads on.
    pub fn is_held(&self) -> bool {
        self.held.load(Ordering::Acquire)
    }

    /// The reader: waits until every outbox this sender filled has drained.
    pub async fn wait(&self) {
        loop {
            let next = {
                let mut held_by = self.held_by.lock().unwrap_or_else(|p| p.into_inner());
                let next = held_by.pop();
                if next.is_none() {
                    self.held.store(false, Ordering::Release);
                }
                next
            };
            match next {
                Some(level) => level.drained().await,
                None => return,
            }
        }
    }

    /// A slot for a batch of `n` requests on its way to the router (waits while
    /// [`MAX_IN_FLIGHT`] are), holding `bytes` until the router drops it once the
    /// batch is handled.
    pub async fn slot(self: &Arc<Self>, n: usize, bytes: Grant) -> Slot {
        let weight = n + bytes.bytes() / IN_FLIGHT_UNIT_BYTES;
        loop {
            if self.in_flight.fetch_add(weight, Ordering::SeqCst) < MAX_IN_FLIGHT {
                return Slot {
                    flow: self.clone(),
                    weight,
                    _bytes: bytes,
                };
            }
            self.in_flight.fetch_sub(weight, Ordering::SeqCst);
            let freed = self.slot_freed.notified();
            self.wants_slot.store(true, Ordering::SeqCst);
            if self.in_flight.load(Ordering::SeqCst) < MAX_IN_FLIGHT {
                continue;
            }
            freed.await;
        }
    }
}
