//! A hook's counters, latency samples, last error and health, and the breaker
//! that suspends a hook that keeps failing.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::process::truncate;
use super::HookError;

/// Consecutive failures after which a hook is suspended.
pub const FAILURES_BEFORE_SUSPEND: u32 = 5;
/// First suspension; each further one doubles, up to [`SUSPEND_MAX`].
pub const SUSPEND_INITIAL: Duration = Duration::from_secs(1);
pub const SUSPEND_MAX: Duration = Duration::from_secs(60);

/// Latency samples kept per hook for p50/p99.
const LATENCY_SAMPLES: usize = 1024;

/// Longest error or health text kept for `hooks status` (replies stay far under
/// the frame limit, whatever a hook writes).
pub const MAX_STATUS_TEXT: usize = 512;

/// Counters and health of one hook. The mutexes guard short sections only (push a
/// sample, read a copy); none is held across a call.
#[derive(Default)]
pub struct HookStats {
    pub calls: AtomicU64,
    pub errors: AtomicU64,
    pub drops: AtomicU64,
    pub replaced: AtomicU64,
    pub suspensions: AtomicU64,
    latencies: Mutex<VecDeque<u32>>,
    breaker: Mutex<Breaker>,
    last_error: Mutex<Option<String>>,
    /// The last `health` answer: `None` before the first, or for hooks without one.
    health: Mutex<Option<Result<(), String>>>,
}

#[derive(Default)]
struct Breaker {
    failures: u32,
    suspended_until: Option<Instant>,
    next_suspension: Option<Duration>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl HookStats {
    pub fn record(&self, took: Duration) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let mut l = lock(&self.latencies);
        if l.len() == LATENCY_SAMPLES {
            l.pop_front();
        }
        l.push_back(took.as_micros().min(u32::MAX as u128) as u32);
    }

    pub fn suspended(&self) -> bool {
        lock(&self.breaker)
            .suspended_until
            .is_some_and(|t| Instant::now() < t)
    }

    pub fn succeeded(&self) {
        let mut b = lock(&self.breaker);
        b.failures = 0;
        if b.suspended_until.is_some_and(|t| Instant::now() >= t) {
            b.suspended_until = None;
            b.next_suspension = None;
        }
    }

    /// Counts a failure; returns the suspension just started, if any.
    pub fn failed(&self, error: &HookError) -> Option<Duration> {
        self.errors.fetch_add(1, Ordering::Relaxed);
        *lock(&self.last_error) = Some(truncate(&error.to_string(), MAX_STATUS_TEXT).into_owned());
        let mut b = lock(&self.breaker);
        b.failures += 1;
        if b.failures < FAILURES_BEFORE_SUSPEND {
            return None;
        }
        let span = b.next_suspension.unwrap_or(SUSPEND_INITIAL);
        b.failures = 0;
        b.suspended_until = Some(Instant::now() + span);
        b.next_suspension = Some((span * 2).min(SUSPEND_MAX));
        self.suspensions.fetch_add(1, Ordering::Relaxed);
        Some(span)
    }

    pub fn set_health(&self, health: Option<Result<(), String>>) {
        let health = health.map(|h| h.map_err(|e| truncate(&e, MAX_STATUS_TEXT).into_owned()));
        *lock(&self.health) = health;
    }

    pub fn health(&self) -> Option<Result<(), String>> {
        lock(&self.health).clone()
    }

    pub fn last_error(&self) -> Option<String> {
        lock(&self.last_error).clone()
    }

    pub fn percentiles(&self) -> (Option<u32>, Option<u32>) {
        let mut v: Vec<u32> = lock(&self.latencies).iter().copied().collect();
        if v.is_empty() {
            return (None, None);
        }
        v.sort_unstable();
        let at = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
        (Some(at(0.5)), Some(at(0.99)))
    }
}
