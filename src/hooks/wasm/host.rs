//! What the host gives every guest call: its name, `log`, `emit` (bounded per
//! call), the clock, and the per-call CPU budget wired into each store.

use std::sync::Arc;

use wasmtime::{Engine, Store, StoreLimits, UpdateDeadline};

use super::bindings::hookbus::hook::types::Level;
use crate::hooks::guest_log;
use crate::hooks::{emit_allowance, EmitSink};

/// Host-side state every guest call can reach.
pub struct HostCtx {
    pub name: Arc<str>,
    pub emit: EmitSink,
    /// Hop count of the message being handled; emitted messages get one more.
    pub hops: u8,
    /// Whether the guest may read the real time (`grants.clock`, on by default).
    pub clock: bool,
    /// Epoch ticks the running call may still use.
    ticks_left: u64,
    /// Emits the running call may still make.
    emits_left: usize,
}

impl HostCtx {
    pub fn new(name: &str, emit: EmitSink, clock: bool) -> Self {
        Self {
            name: name.into(),
            emit,
            hops: 0,
            clock,
            ticks_left: 0,
            emits_left: 0,
        }
    }

    pub fn log(&self, level: Level, text: &str) {
        let level = match level {
            Level::Trace => tracing::Level::TRACE,
            Level::Debug => tracing::Level::DEBUG,
            Level::Info => tracing::Level::INFO,
            Level::Warn => tracing::Level::WARN,
            Level::Error => tracing::Level::ERROR,
        };
        guest_log::line(&self.name, "log", level, text);
    }

    /// Passes `json` to the bus, within the call's emit allowance.
    pub fn emit(&mut self, json: String) -> Result<(), String> {
        if self.emits_left == 0 {
            return Err(
                "emit limit reached: at most 16 emits per client message, 1 per emitted message"
                    .into(),
            );
        }
        self.emits_left -= 1;
        (self.emit)(&self.name, json, self.hops.saturating_add(1))
    }

    /// Milliseconds since the Unix epoch, or 0 without the clock grant.
    pub fn now_ms(&self) -> u64 {
        if !self.clock {
            return 0;
        }
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

/// The machine's host name, read once.
pub fn bus_host() -> &'static str {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".to_string())
    })
}

/// Store data that carries the host context and the memory limiter.
pub trait HostData: Send + 'static {
    fn host(&mut self) -> &mut HostCtx;
    fn limits(&mut self) -> &mut StoreLimits;
}

/// A store with the memory cap and the epoch budget wired in.
pub fn new_store<T: HostData>(engine: &Engine, data: T) -> Store<T> {
    let mut store = Store::new(engine, data);
    store.limiter(|s| s.limits());
    store.epoch_deadline_callback(|mut cx| budget_tick(cx.data_mut().host()));
    store
}

/// At each epoch tick: yield to the executor while the call has budget left,
/// interrupt it (a trap) once it is spent.
fn budget_tick(host: &mut HostCtx) -> wasmtime::Result<UpdateDeadline> {
    if host.ticks_left == 0 {
        return Ok(UpdateDeadline::Interrupt);
    }
    host.ticks_left -= 1;
    Ok(UpdateDeadline::Yield(1))
}

/// Gives the next call its budget: `ticks` of CPU and the emits of `messages`
/// messages; `hops` is the hop count of what it handles.
pub fn arm<T: HostData>(store: &mut Store<T>, ticks: u64, messages: usize, hops: u8) {
    let host = store.data_mut().host();
    host.ticks_left = ticks;
    host.emits_left = emit_allowance(hops).saturating_mul(messages.max(1));
    host.hops = hops;
    store.set_epoch_deadline(1);
}
