//! One generation of hooks ([`HookSet`]): each hook loaded ([`LoadedHook`]), with
//! its runner, warm instances and counters, and [`call`], one call of one hook.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::config::{HookConfig, Phase, Runner};
use super::fields::FieldStrs;
use super::pool::{Lease, Pool};
use super::process::{SpawnHook, WorkerHook};
use super::stats::HookStats;
use super::wasm::{WasmEngine, WasmInstance, WasmModule};
use super::{EmitSink, HookError, LoadError, Verdict};

/// A loaded hook's runner.
pub enum LoadedRunner {
    Wasm(WasmModule),
    Worker(Box<WorkerHook>),
    Spawn(Arc<SpawnHook>),
}

/// One hook of a set: its config, runner, warm instances and counters.
pub struct LoadedHook {
    pub config: Arc<HookConfig>,
    pub runner: LoadedRunner,
    pub stats: HookStats,
    /// Warm WASM instances (empty for subprocess hooks).
    pool: Pool,
    /// The guest exports `handle-batch`: filters call it once per batch.
    pub(super) batches: bool,
    /// Hash of the hook's files (module, scripts), to tell at reload whether it
    /// changed.
    fingerprint: [u8; 32],
}

/// Hashes the files `config` runs.
fn fingerprint(config: &HookConfig) -> [u8; 32] {
    let mut h = Sha256::new();
    for file in config.watched_files() {
        match super::wasm::read_module(&file) {
            Ok(bytes) => h.update(&bytes),
            Err(_) => h.update(b"(unreadable)"),
        }
    }
    h.finalize().into()
}

impl LoadedHook {
    /// Loads one hook: compiles WASM (through the cache) and checks it by
    /// instantiating it and calling `init`; starts a worker.
    async fn load(
        config: HookConfig,
        fingerprint: [u8; 32],
        engine: &WasmEngine,
        emit: &EmitSink,
        max_frame: usize,
    ) -> Result<Self, HookError> {
        let config = Arc::new(config);
        let mut first = None;
        let mut batches = false;
        let runner = match &config.runner {
            Runner::Wasm(path) => {
                let module = engine.load(path)?;
                let instance = WasmInstance::new(engine, &module, &config, emit.clone()).await?;
                batches = instance.batches();
                first = Some(instance);
                LoadedRunner::Wasm(module)
            }
            Runner::Worker(argv) => LoadedRunner::Worker(Box::new(
                WorkerHook::start(config.clone(), argv.clone(), max_frame).await?,
            )),
            Runner::Spawn(argv) => {
                LoadedRunner::Spawn(Arc::new(SpawnHook::new(config.clone(), argv.clone())))
            }
        };
        Ok(Self {
            pool: Pool::new(config.instances, first),
            config,
            runner,
            stats: HookStats::default(),
            batches,
            fingerprint,
        })
    }

    /// A warm instance for a call (WASM hooks only).
    pub(super) async fn instance(&self, cx: &CallContext<'_>) -> Result<Lease<'_>, HookError> {
        let LoadedRunner::Wasm(module) = &self.runner else {
            return Err(HookError::Process("not a WASM hook".into()));
        };
        self.pool
            .take(|| WasmInstance::new(cx.engine, module, &self.config, cx.emit.clone()))
            .await
    }

    /// Asks the hook for its health (the `health` export, or a worker's `health`);
    /// `None` when it has no such thing.
    pub async fn check_health(&self, cx: &CallContext<'_>) -> Option<Result<(), String>> {
        match &self.runner {
            LoadedRunner::Wasm(_) => {
                let mut lease = self.instance(cx).await.ok()?;
                let health = lease.instance.health().await;
                if !matches!(health, Some(Err(_))) {
                    lease.keep();
                }
                health
            }
            LoadedRunner::Worker(worker) => Some(worker.health().await),
            LoadedRunner::Spawn(_) => None,
        }
    }

    /// Ends the hook: idle instances get `shutdown` (bounded), a worker is asked
    /// to stop and then killed.
    pub async fn shutdown(&self) {
        for instance in self.pool.drain() {
            instance.shutdown().await;
        }
        if let LoadedRunner::Worker(worker) = &self.runner {
            worker.shutdown().await;
        }
    }

    fn kind(&self) -> &'static str {
        match &self.runner {
            LoadedRunner::Wasm(WasmModule::Component(_)) => "wasm component",
            LoadedRunner::Wasm(WasmModule::Core(_)) => "wasm core module",
            LoadedRunner::Worker(_) => "worker",
            LoadedRunner::Spawn(_) => "spawn",
        }
    }

    fn status(&self) -> Value {
        let s = &self.stats;
        let (p50, p99) = s.percentiles();
        let mut v = json!({
            "name": self.config.name,
            "kind": self.kind(),
            "phase": match self.config.phase { Phase::Filter => "filter", Phase::Notify => "notify" },
            "calls": s.calls.load(Ordering::Relaxed),
            "errors": s.errors.load(Ordering::Relaxed),
            "drops": s.drops.load(Ordering::Relaxed),
            "replaced": s.replaced.load(Ordering::Relaxed),
            "suspensions": s.suspensions.load(Ordering::Relaxed),
            "suspended": s.suspended(),
            "p50_us": p50,
            "p99_us": p99,
            "last_error": s.last_error(),
            "health": match s.health() {
                None => Value::Null,
                Some(Ok(())) => "ok".into(),
                Some(Err(e)) => e.into(),
            },
        });
        match &self.runner {
            LoadedRunner::Spawn(spawn) => {
                v["skipped"] = spawn.skipped.load(Ordering::Relaxed).into();
            }
            LoadedRunner::Worker(worker) => {
                v["starts"] = worker.starts.load(Ordering::Relaxed).into();
            }
            LoadedRunner::Wasm(_) => {
                v["instances"] = self.pool.live(self.config.instances).into();
            }
        }
        v
    }
}

/// One generation of hooks, compiled and validated.
pub struct HookSet {
    pub generation: u64,
    pub hooks: Vec<Arc<LoadedHook>>,
}

impl HookSet {
    pub fn empty() -> Self {
        Self {
            generation: 0,
            hooks: Vec::new(),
        }
    }

    /// Loads every hook of `configs`. A hook of `previous` whose config and files
    /// are unchanged is kept as it is, with its instances, worker and counters.
    /// On error, the hooks loaded so far are shut down.
    pub async fn build(
        generation: u64,
        configs: Vec<HookConfig>,
        previous: &HookSet,
        engine: &WasmEngine,
        emit: &EmitSink,
        max_frame: usize,
    ) -> Result<Self, LoadError> {
        let mut hooks = Vec::new();
        for config in configs {
            let print = fingerprint(&config);
            let kept = previous
                .hooks
                .iter()
                .find(|old| *old.config == config && old.fingerprint == print);
            if let Some(old) = kept {
                hooks.push(old.clone());
                continue;
            }
            let name = config.name.clone();
            match LoadedHook::load(config, print, engine, emit, max_frame).await {
                Ok(hook) => hooks.push(Arc::new(hook)),
                Err(e) => {
                    let partial = Self { generation, hooks };
                    partial.shutdown_unshared(previous).await;
                    return Err(LoadError::Hook {
                        hook: name,
                        error: e,
                    });
                }
            }
        }
        Ok(Self { generation, hooks })
    }

    /// Shuts down the hooks of this set that `other` does not share.
    pub async fn shutdown_unshared(&self, other: &HookSet) {
        for hook in &self.hooks {
            if !other.hooks.iter().any(|h| Arc::ptr_eq(h, hook)) {
                hook.shutdown().await;
            }
        }
    }

    pub fn has_filters(&self) -> bool {
        self.hooks.iter().any(|h| h.config.phase == Phase::Filter)
    }

    pub fn has_notify(&self) -> bool {
        self.hooks.iter().any(|h| h.config.phase == Phase::Notify)
    }

    /// Spawn hooks that make senders wait when their backlog is full.
    pub fn blocking_spawns(&self) -> impl Iterator<Item = (&HookConfig, &Arc<SpawnHook>)> {
        self.hooks.iter().filter_map(|h| match &h.runner {
            LoadedRunner::Spawn(spawn) if spawn.blocks() => Some((&*h.config, spawn)),
            _ => None,
        })
    }

    /// Per-hook status for `hookbus hooks status`.
    pub fn status(&self) -> Vec<Value> {
        self.hooks.iter().map(|h| h.status()).collect()
    }
}

/// Everything a hook call needs besides the message.
pub struct CallContext<'a> {
    pub engine: &'a WasmEngine,
    pub emit: &'a EmitSink,
    /// The bus's frame limit: replacements larger than this are refused.
    pub max_frame: usize,
}

/// Calls `hook` on `json`. Updates the hook's counters and suspension; a failed
/// WASM instance is dropped, and a fresh one made next time. A spawn hook's run
/// is queued (its outcome is counted when it ends) and passes at once.
pub async fn call(
    hook: &Arc<LoadedHook>,
    json: &str,
    fields: &FieldStrs<'_>,
    hops: u8,
    cx: &CallContext<'_>,
) -> Result<Verdict, HookError> {
    if hook.stats.suspended() {
        return Err(HookError::Suspended);
    }
    let started = Instant::now();
    let result = match &hook.runner {
        LoadedRunner::Wasm(_) => match hook.instance(cx).await {
            Ok(mut lease) => {
                let result = lease.instance.handle(&fields.view(json), hops).await;
                if result.is_ok() {
                    lease.keep();
                }
                result
            }
            Err(e) => Err(e),
        },
        LoadedRunner::Worker(worker) => worker
            .handle_many(&[(json.to_owned(), hops)], cx.emit)
            .await
            .pop()
            .unwrap_or_else(|| Err(HookError::Process("the worker gave no answer".into()))),
        LoadedRunner::Spawn(spawn) => {
            let target = hook.clone();
            spawn.dispatch(
                &tokio::runtime::Handle::current(),
                json.into(),
                move |result, took| {
                    target.stats.record(took);
                    let _ = finish(&target, result.map(|()| Verdict::Pass));
                },
            );
            return Ok(Verdict::Pass);
        }
    };
    hook.stats.record(started.elapsed());
    finish(hook, result)
}

/// Counts a call's outcome: resets or trips the breaker, logs a failure.
pub(super) fn finish(
    hook: &LoadedHook,
    result: Result<Verdict, HookError>,
) -> Result<Verdict, HookError> {
    match &result {
        Ok(_) => hook.stats.succeeded(),
        Err(e) => {
            if let Some(span) = hook.stats.failed(e) {
                tracing::error!(hook = hook.config.name, error = %e, suspended_for = ?span,
                    "hook keeps failing: suspended; it will be retried after the pause");
            } else {
                tracing::warn!(hook = hook.config.name, error = %e, on_error = ?hook.config.on_error, "hook call failed");
            }
        }
    }
    result
}
