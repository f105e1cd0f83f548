//! A warm guest instance and the bounds on every call into it.
//!
//! Each entry (instantiation with `_initialize` and `init`, `handle`,
//! `handle-batch`, `health`, `shutdown`) runs on two budgets: CPU through epoch
//! ticks (the guest yields at each tick and is interrupted once its ticks are
//! spent), and wall time through a timer around the call, so time spent in host
//! calls (a WASI sleep, a blocking import) counts too. Either one ending the call
//! is [`HookError::Timeout`]; the caller then discards the instance.

use std::future::Future;
use std::time::Duration;

use wasmtime::StoreLimitsBuilder;

use super::component::{ComponentInstance, ComponentState};
use super::core_module::{CoreInstance, CoreState};
use super::engine::{WasmEngine, WasmModule};
use super::host::{self, HostCtx};
use super::ticker::{Running, Ticker, EPOCH_TICK};
use super::wasi;
use crate::hooks::config::HookConfig;
use crate::hooks::{batch_deadline, EmitSink, HookError, Verdict};

/// The least time instantiation and `init` get, however short the hook's
/// per-message `timeout_ms`.
pub const INIT_BUDGET: Duration = Duration::from_secs(1);

/// Wall time a call may take beyond its CPU budget before it is abandoned (the
/// guest may be waiting for a CPU on a busy machine).
pub const WALL_SLACK: Duration = Duration::from_millis(10);

/// What `handle` gets: the routing fields and the JSON text.
pub struct MessageView<'a> {
    pub kind: &'a str,
    pub to: Option<&'a str>,
    pub from: Option<&'a str>,
    pub id: Option<&'a str>,
    pub json: &'a str,
}

/// A warm instance in its own store.
pub struct WasmInstance {
    ticker: std::sync::Arc<Ticker>,
    timeout: Duration,
    kind: Kind,
}

enum Kind {
    Component(ComponentInstance),
    Core(CoreInstance),
}

fn ticks(d: Duration) -> u64 {
    d.as_micros().div_ceil(EPOCH_TICK.as_micros()).max(1) as u64
}

/// Runs `call` within `budget` of wall time (plus [`WALL_SLACK`]).
async fn bounded<T>(
    budget: Duration,
    call: impl Future<Output = Result<T, HookError>>,
) -> Result<T, HookError> {
    tokio::time::timeout(budget + WALL_SLACK, call)
        .await
        .unwrap_or(Err(HookError::Timeout))
}

impl WasmInstance {
    /// Instantiates `module` for `hook` and calls its `init` with the hook's config,
    /// within [`INIT_BUDGET`] (or the hook's timeout, if longer).
    pub async fn new(
        engine: &WasmEngine,
        module: &WasmModule,
        hook: &HookConfig,
        emit: EmitSink,
    ) -> Result<Self, HookError> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(hook.memory_bytes)
            .trap_on_grow_failure(true)
            .build();
        let host = HostCtx::new(&hook.name, emit, hook.grants.clock());
        let budget = hook.timeout.max(INIT_BUDGET);
        let in_init = |e: HookError| match e {
            HookError::Timeout => HookError::Init(format!(
                "instantiation and init did not finish within {} ms",
                budget.as_millis()
            )),
            other => other,
        };
        let _running = Running::new(&engine.ticker);
        let kind = match module {
            WasmModule::Component(pre) => {
                let state = ComponentState::new(host, wasi::builder(hook)?.build(), limits);
                let mut store = host::new_store(&engine.engine, state);
                host::arm(&mut store, ticks(budget), 1, 0);
                let start = ComponentInstance::start(store, pre, &hook.config);
                Kind::Component(bounded(budget, start).await.map_err(in_init)?)
            }
            WasmModule::Core(pre) => {
                let state = CoreState::new(host, wasi::builder(hook)?.build_p1(), limits);
                let mut store = host::new_store(&engine.engine, state);
                host::arm(&mut store, ticks(budget), 1, 0);
                let start = CoreInstance::start(store, pre, &hook.config);
                Kind::Core(bounded(budget, start).await.map_err(in_init)?)
            }
        };
        Ok(Self {
            ticker: engine.ticker.clone(),
            timeout: hook.timeout,
            kind,
        })
    }

    /// Arms the store for a call of `budget` handling `messages` messages.
    fn arm(&mut self, budget: Duration, messages: usize, hops: u8) {
        match &mut self.kind {
            Kind::Component(c) => host::arm(c.store(), ticks(budget), messages, hops),
            Kind::Core(c) => host::arm(c.store(), ticks(budget), messages, hops),
        }
    }

    /// Calls `handle`. `hops` is the message's hop count, for messages it emits.
    pub async fn handle(&mut self, msg: &MessageView<'_>, hops: u8) -> Result<Verdict, HookError> {
        let ticker = self.ticker.clone();
        let _running = Running::new(&ticker);
        self.arm(self.timeout, 1, hops);
        let budget = self.timeout;
        match &mut self.kind {
            Kind::Component(c) => bounded(budget, c.handle(msg)).await,
            Kind::Core(c) => bounded(budget, c.handle(msg)).await,
        }
    }

    /// Whether the guest takes whole batches (`handle-batch`, world `hook-batch`).
    pub fn batches(&self) -> bool {
        matches!(&self.kind, Kind::Component(c) if c.batches())
    }

    /// Decides on `msgs` in one call of `handle-batch` (see `batches`); `hops` is
    /// the largest hop count among them. The deadline is the per-message one
    /// times the number of messages, capped by [`batch_deadline`].
    pub async fn handle_batch(
        &mut self,
        msgs: &[MessageView<'_>],
        hops: u8,
    ) -> Result<Vec<Verdict>, HookError> {
        let ticker = self.ticker.clone();
        let _running = Running::new(&ticker);
        let budget = batch_deadline(self.timeout, msgs.len());
        self.arm(budget, msgs.len(), hops);
        match &mut self.kind {
            Kind::Component(c) => bounded(budget, c.handle_batch(msgs)).await,
            Kind::Core(_) => Err(HookError::Trap("handle-batch: not exported".into())),
        }
    }

    /// Calls the optional `health` export (components only), within the hook's
    /// timeout.
    pub async fn health(&mut self) -> Option<Result<(), String>> {
        let ticker = self.ticker.clone();
        let _running = Running::new(&ticker);
        self.arm(self.timeout, 0, 0);
        let budget = self.timeout;
        let Kind::Component(c) = &mut self.kind else {
            return None;
        };
        match tokio::time::timeout(budget + WALL_SLACK, c.health()).await {
            Ok(health) => health,
            Err(_) => Some(Err(HookError::Timeout.to_string())),
        }
    }

    /// Calls the optional `shutdown` export within the hook's timeout, then drops
    /// the instance.
    pub async fn shutdown(mut self) {
        let ticker = self.ticker.clone();
        let _running = Running::new(&ticker);
        self.arm(self.timeout, 0, 0);
        if let Kind::Component(c) = &mut self.kind {
            let _ = tokio::time::timeout(self.timeout + WALL_SLACK, c.shutdown()).await;
        }
    }
}

/// Turns a wasmtime error into a [`HookError`]: deadline, memory cap, or trap.
pub(super) fn classify(e: wasmtime::Error, during: &str) -> HookError {
    if let Some(trap) = e.downcast_ref::<wasmtime::Trap>() {
        if *trap == wasmtime::Trap::Interrupt {
            return HookError::Timeout;
        }
        // The trap alone: the wasm backtrace in `e`'s context is noise in a log line.
        return HookError::Trap(format!("{during}: {trap}"));
    }
    let text = format!("{e:#}");
    if text.contains("growing memory") || text.contains("memory size limit") {
        return HookError::OutOfMemory;
    }
    HookError::Trap(format!(
        "{during}: {}",
        text.lines().next().unwrap_or_default()
    ))
}
