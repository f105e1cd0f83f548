//! The hook engine: hooks that filter, enrich and notify around every routed
//! message.
//!
//! # Layout
//! - [`config`]: hooks.yaml and env-var hook lists, validated into [`config::HookConfig`]s.
//! - [`HookSet`]: one immutable, compiled and validated generation of hooks.
//! - [`wasm`]: the wasmtime host (components and core modules, deadlines, memory caps,
//!   deny-by-default WASI); [`process`]: subprocess hooks (spawn and worker).
//! - [`runtime`]: where hooks run. A connection's reader runs the filter chain on
//!   each message it read, on its own task (each sender's order holds, and a fast
//!   hook costs no thread hop), before handing the batch to the router. After
//!   routing, the router queues the message for the notify task. Hooks' `emit`s
//!   enter the router as new messages with a hop count. WASM calls take a warm
//!   instance from the hook's pool; subprocess calls run off the async threads.
//! - [`reload`]: watches the config and the hooks' files, builds a new set off the
//!   routing path and swaps it in; a bad set leaves the last good one in force.

pub mod config;
pub mod process;
pub mod reload;
pub mod runtime;
pub mod scaffold;
pub mod wasm;

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use config::{HookConfig, OnError, Phase, Runner};
use process::{SpawnHook, WorkerHook};
use wasm::{MessageView, WasmEngine, WasmInstance, WasmModule};

/// Most hops an emitted message may be from a client's message; deeper emits are
/// refused, which cuts hook loops.
pub const MAX_HOPS: u8 = 4;

/// Consecutive failures after which a hook is suspended.
pub const FAILURES_BEFORE_SUSPEND: u32 = 5;
/// First suspension; each further one doubles, up to [`SUSPEND_MAX`].
pub const SUSPEND_INITIAL: Duration = Duration::from_secs(1);
pub const SUSPEND_MAX: Duration = Duration::from_secs(60);

/// Idle warm instances kept per WASM hook (calls in flight at once beyond this
/// make instances that are dropped afterwards).
pub const MAX_IDLE_INSTANCES: usize = 16;

/// Latency samples kept per hook for p50/p99.
const LATENCY_SAMPLES: usize = 1024;

/// A hook's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Drop(String),
    Replace(String),
}

/// A hook call that failed, as distinct from a hook's own verdict.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookError {
    #[error("cannot load: {0}")]
    Load(String),
    #[error("init failed: {0}")]
    Init(String),
    #[error("deadline exceeded")]
    Timeout,
    #[error("memory limit exceeded")]
    OutOfMemory,
    #[error("trapped: {0}")]
    Trap(String),
    #[error("invalid verdict: {0}")]
    BadVerdict(String),
    #[error("changed `to` without the `routing` grant")]
    Routing,
    #[error("process: {0}")]
    Process(String),
    #[error("suspended after repeated failures")]
    Suspended,
}

/// Where hooks' `emit` calls go: (hook name, message JSON, hop count).
pub type EmitSink = Arc<dyn Fn(&str, String, u8) -> Result<(), String> + Send + Sync>;

/// A loaded hook's runner.
pub enum LoadedRunner {
    Wasm(WasmModule),
    Worker(WorkerHook),
    Spawn(Arc<SpawnHook>),
}

/// One hook of a set: its config, runner, warm instances and counters.
pub struct LoadedHook {
    pub config: Arc<HookConfig>,
    pub runner: LoadedRunner,
    pub stats: HookStats,
    /// Idle warm WASM instances. A call takes one (or makes one) and gives it back
    /// if the call succeeded. The lock is held only to pop or push.
    pool: Mutex<Vec<WasmInstance>>,
    /// The guest exports `handle-batch`: filters call it once per batch.
    batches: bool,
}

impl LoadedHook {
    /// A warm instance from the pool, or a new one when the pool is empty.
    async fn instance(
        &self,
        module: &WasmModule,
        cx: &CallContext<'_>,
    ) -> Result<WasmInstance, HookError> {
        let idle = HookStats::lock(&self.pool).pop();
        match idle {
            Some(instance) => Ok(instance),
            None => WasmInstance::new(cx.engine, module, &self.config, cx.emit.clone()).await,
        }
    }

    fn return_instance(&self, instance: WasmInstance) {
        let mut pool = HookStats::lock(&self.pool);
        if pool.len() < MAX_IDLE_INSTANCES {
            pool.push(instance);
        }
    }

    /// Calls `shutdown` on the idle instances (when the set is retired).
    pub async fn shutdown(&self) {
        let idle: Vec<WasmInstance> = std::mem::take(&mut *HookStats::lock(&self.pool));
        for instance in idle {
            instance.shutdown().await;
        }
    }
}

/// Counters and health of one hook.
#[derive(Default)]
pub struct HookStats {
    pub calls: AtomicU64,
    pub errors: AtomicU64,
    pub drops: AtomicU64,
    pub replaced: AtomicU64,
    pub suspensions: AtomicU64,
    /// Short sections only (push a sample, read a copy); never held across a call.
    latencies: Mutex<VecDeque<u32>>,
    breaker: Mutex<Breaker>,
    last_error: Mutex<Option<String>>,
}

#[derive(Default)]
struct Breaker {
    failures: u32,
    suspended_until: Option<Instant>,
    next_suspension: Option<Duration>,
}

impl HookStats {
    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn record(&self, took: Duration) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let mut l = Self::lock(&self.latencies);
        if l.len() == LATENCY_SAMPLES {
            l.pop_front();
        }
        l.push_back(took.as_micros().min(u32::MAX as u128) as u32);
    }

    fn suspended(&self) -> bool {
        Self::lock(&self.breaker)
            .suspended_until
            .is_some_and(|t| Instant::now() < t)
    }

    fn succeeded(&self) {
        let mut b = Self::lock(&self.breaker);
        b.failures = 0;
        if b.suspended_until.is_some_and(|t| Instant::now() >= t) {
            b.suspended_until = None;
            b.next_suspension = None;
        }
    }

    /// Counts a failure; returns the suspension just started, if any.
    fn failed(&self, error: &HookError) -> Option<Duration> {
        self.errors.fetch_add(1, Ordering::Relaxed);
        *Self::lock(&self.last_error) = Some(error.to_string());
        let mut b = Self::lock(&self.breaker);
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

    fn percentiles(&self) -> (Option<u32>, Option<u32>) {
        let mut v: Vec<u32> = Self::lock(&self.latencies).iter().copied().collect();
        if v.is_empty() {
            return (None, None);
        }
        v.sort_unstable();
        let at = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
        (Some(at(0.5)), Some(at(0.99)))
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

    /// Loads every hook: compiles WASM (through the cache), starts workers, and
    /// checks each WASM hook by instantiating it and calling `init`.
    pub async fn build(
        generation: u64,
        configs: Vec<HookConfig>,
        engine: &WasmEngine,
        emit: &EmitSink,
    ) -> Result<Self, String> {
        let mut hooks = Vec::new();
        for config in configs {
            let config = Arc::new(config);
            let fail = |e: HookError| format!("hook `{}`: {e}", config.name);
            let mut pool = Vec::new();
            let mut batches = false;
            let runner = match &config.runner {
                Runner::Wasm(path) => {
                    let module = engine.load(&config, path).map_err(fail)?;
                    let first = WasmInstance::new(engine, &module, &config, emit.clone())
                        .await
                        .map_err(fail)?;
                    batches = first.batches();
                    pool.push(first);
                    LoadedRunner::Wasm(module)
                }
                Runner::Worker(argv) => LoadedRunner::Worker(
                    WorkerHook::start(config.clone(), argv.clone()).map_err(fail)?,
                ),
                Runner::Spawn(argv) => {
                    LoadedRunner::Spawn(Arc::new(SpawnHook::new(config.clone(), argv.clone())))
                }
            };
            hooks.push(Arc::new(LoadedHook {
                config,
                runner,
                stats: HookStats::default(),
                pool: Mutex::new(pool),
                batches,
            }));
        }
        Ok(Self { generation, hooks })
    }

    pub fn has_filters(&self) -> bool {
        self.hooks.iter().any(|h| h.config.phase == Phase::Filter)
    }

    pub fn has_notify(&self) -> bool {
        self.hooks.iter().any(|h| h.config.phase == Phase::Notify)
    }

    /// Per-hook status for `hookbus hooks status`.
    pub fn status(&self) -> Vec<Value> {
        self.hooks
            .iter()
            .map(|h| {
                let s = &h.stats;
                let (p50, p99) = s.percentiles();
                let kind = match &h.runner {
                    LoadedRunner::Wasm(WasmModule::Component(_)) => "wasm component",
                    LoadedRunner::Wasm(WasmModule::Core(_)) => "wasm core module",
                    LoadedRunner::Worker(_) => "worker",
                    LoadedRunner::Spawn(_) => "spawn",
                };
                let mut v = json!({
                    "name": h.config.name,
                    "kind": kind,
                    "phase": match h.config.phase { Phase::Filter => "filter", Phase::Notify => "notify" },
                    "calls": s.calls.load(Ordering::Relaxed),
                    "errors": s.errors.load(Ordering::Relaxed),
                    "drops": s.drops.load(Ordering::Relaxed),
                    "replaced": s.replaced.load(Ordering::Relaxed),
                    "suspensions": s.suspensions.load(Ordering::Relaxed),
                    "suspended": s.suspended(),
                    "p50_us": p50,
                    "p99_us": p99,
                    "last_error": *HookStats::lock(&s.last_error),
                });
                if let LoadedRunner::Spawn(spawn) = &h.runner {
                    v["overflow"] = spawn.overflow.load(Ordering::Relaxed).into();
                }
                if let LoadedRunner::Worker(worker) = &h.runner {
                    v["starts"] = worker.starts.load(Ordering::Relaxed).into();
                }
                v
            })
            .collect()
    }
}

/// The routing fields a hook sees: the raw JSON text of each top-level `type`, `to`,
/// `from` and `id` member, borrowed from the message (`None` when absent).
#[derive(Debug, Default)]
pub struct Fields<'a> {
    kind: Option<&'a str>,
    to: Option<&'a str>,
    from: Option<&'a str>,
    id: Option<&'a str>,
}

/// A raw JSON value as a string, if it is one.
fn raw_str(raw: Option<&str>) -> Option<Cow<'_, str>> {
    let raw = raw?;
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    if !inner.contains('\\') {
        return Some(Cow::Borrowed(inner));
    }
    serde_json::from_str::<String>(raw).ok().map(Cow::Owned)
}

/// Typed copies of the routing fields, for matching and for the call.
pub struct FieldStrs<'a> {
    kind: Option<Cow<'a, str>>,
    to: Option<Cow<'a, str>>,
    from: Option<Cow<'a, str>>,
    id: Option<Cow<'a, str>>,
}

impl<'a> Fields<'a> {
    /// Reads the routing fields of `json`, which must already be known to be valid
    /// JSON (the protocol parser or `rewrite` checked it): one pass over the top
    /// level, nested values skipped without being parsed. A key written with escapes
    /// is decoded, so `"t\u006f"` is `to`, as for the router. When a key repeats, the
    /// last one counts. Not an object: no fields.
    pub fn parse(json: &'a str) -> Self {
        let mut fields = Fields::default();
        let complete = top_level_members(json, |key, value| {
            let key: Cow<'_, str> = if key.contains('\\') {
                match serde_json::from_str::<String>(&format!("\"{key}\"")) {
                    Ok(k) => Cow::Owned(k),
                    Err(_) => return,
                }
            } else {
                Cow::Borrowed(key)
            };
            let slot = match &*key {
                "type" => &mut fields.kind,
                "to" => &mut fields.to,
                "from" => &mut fields.from,
                "id" => &mut fields.id,
                _ => return,
            };
            *slot = Some(value);
        });
        if complete {
            fields
        } else {
            Fields::default()
        }
    }

    pub fn strs(&self) -> FieldStrs<'a> {
        FieldStrs {
            kind: raw_str(self.kind),
            to: raw_str(self.to),
            from: raw_str(self.from),
            id: raw_str(self.id),
        }
    }
}

impl FieldStrs<'_> {
    pub fn to(&self) -> &str {
        self.to.as_deref().unwrap_or("")
    }

    pub fn matches(&self, hook: &HookConfig) -> bool {
        hook.matcher.matches(
            self.kind.as_deref().unwrap_or(""),
            self.to(),
            self.from.as_deref().unwrap_or(""),
        )
    }

    pub fn view<'s>(&'s self, json: &'s str) -> MessageView<'s> {
        MessageView {
            kind: self.kind.as_deref().unwrap_or(""),
            to: self.to.as_deref().filter(|t| !t.is_empty()),
            from: self.from.as_deref(),
            id: self.id.as_deref(),
            json,
        }
    }
}

/// Calls `member(key, value)` for each top-level member of the JSON object `json`
/// (the key's text between its quotes, the value's raw text). Assumes valid JSON;
/// returns false when the text is not an object or ends early.
fn top_level_members<'a>(json: &'a str, mut member: impl FnMut(&'a str, &'a str)) -> bool {
    let bytes = json.as_bytes();
    let mut i = skip_ws(bytes, 0);
    if bytes.get(i) != Some(&b'{') {
        return false;
    }
    i = skip_ws(bytes, i + 1);
    if bytes.get(i) == Some(&b'}') {
        return true;
    }
    loop {
        if bytes.get(i) != Some(&b'"') {
            return false;
        }
        let key_start = i + 1;
        let Some(key_end) = string_end(bytes, i) else {
            return false;
        };
        i = skip_ws(bytes, key_end);
        if bytes.get(i) != Some(&b':') {
            return false;
        }
        let start = skip_ws(bytes, i + 1);
        let Some(end) = value_end(bytes, start) else {
            return false;
        };
        // Every index here sits on an ASCII byte, so on a char boundary.
        member(&json[key_start..key_end - 1], &json[start..end]);
        i = skip_ws(bytes, end);
        match bytes.get(i) {
            Some(b',') => i = skip_ws(bytes, i + 1),
            Some(b'}') => return true,
            _ => return false,
        }
    }
}

fn skip_ws(bytes: &[u8], mut i: usize) -> usize {
    while matches!(bytes.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// `bytes[start]` is an opening quote: the index after the closing one.
fn string_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    loop {
        i += memchr::memchr2(b'"', b'\\', bytes.get(i..)?)?;
        if bytes[i] == b'"' {
            return Some(i + 1);
        }
        i += 2; // a backslash and the character it escapes
    }
}

/// The index just after the value starting at `start`.
fn value_end(bytes: &[u8], start: usize) -> Option<usize> {
    match bytes.get(start)? {
        b'"' => string_end(bytes, start),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = start;
            while i < bytes.len() {
                match bytes[i] {
                    b'"' => {
                        i = string_end(bytes, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            None
        }
        _ => {
            let len = bytes[start..]
                .iter()
                .position(|b| matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))?;
            (len > 0).then_some(start + len)
        }
    }
}

/// Everything a hook call needs besides the message.
pub struct CallContext<'a> {
    pub engine: &'a WasmEngine,
    pub emit: &'a EmitSink,
}

/// Calls hook number `index` of `set` on `json`. Updates the hook's counters and
/// suspension; a failed WASM instance is dropped, and a fresh one made next time.
pub async fn call(
    set: &HookSet,
    index: usize,
    json: &str,
    fields: &FieldStrs<'_>,
    hops: u8,
    cx: &CallContext<'_>,
) -> Result<Verdict, HookError> {
    let hook = &set.hooks[index];
    if hook.stats.suspended() {
        return Err(HookError::Suspended);
    }
    let started = Instant::now();
    let result = match &hook.runner {
        LoadedRunner::Wasm(module) => match hook.instance(module, cx).await {
            Ok(mut instance) => {
                let result = instance.handle(&fields.view(json), hops).await;
                if result.is_ok() {
                    hook.return_instance(instance);
                }
                result
            }
            Err(e) => Err(e),
        },
        LoadedRunner::Worker(_) => {
            // The worker's pipes are blocking I/O: keep them off the async threads.
            let (hook, json, emit) = (hook.clone(), json.to_owned(), cx.emit.clone());
            tokio::task::spawn_blocking(move || match &hook.runner {
                LoadedRunner::Worker(worker) => worker.handle(&json, hops, &emit),
                _ => Err(HookError::Process("not a worker".into())),
            })
            .await
            .unwrap_or_else(|e| Err(HookError::Process(format!("worker call panicked: {e}"))))
        }
        LoadedRunner::Spawn(spawn) => {
            let target = hook.clone();
            let queued = spawn.dispatch(
                &tokio::runtime::Handle::current(),
                json.into(),
                move |result, took| {
                    target.stats.record(took);
                    let _ = finish(&target, result.map(|()| Verdict::Pass));
                },
            );
            if !queued {
                tracing::warn!(
                    hook = hook.config.name,
                    "spawn backlog full: message skipped"
                );
            }
            return Ok(Verdict::Pass);
        }
    };
    hook.stats.record(started.elapsed());
    finish(hook, result)
}

fn finish(hook: &LoadedHook, result: Result<Verdict, HookError>) -> Result<Verdict, HookError> {
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

/// A message going through the filter chain.
pub struct Pending {
    text: Text,
    pub hops: u8,
    /// Whether a hook replaced it.
    pub changed: bool,
    /// Set when a hook dropped it: (hook, reason).
    pub dropped: Option<(String, String)>,
}

/// A message's JSON: still the frame it arrived in, or a hook's replacement.
enum Text {
    Frame(bytes::Bytes),
    Owned(String),
}

impl Pending {
    /// A message as read from a client (`frame` includes the length header).
    pub fn from_frame(frame: bytes::Bytes, hops: u8) -> Self {
        Self {
            text: Text::Frame(frame),
            hops,
            changed: false,
            dropped: None,
        }
    }

    /// The JSON as the previous hook left it.
    pub fn json(&self) -> &str {
        match &self.text {
            // Frames reach hooks only after the parser checked their UTF-8.
            Text::Frame(frame) => {
                std::str::from_utf8(crate::frame::payload(frame)).unwrap_or_default()
            }
            Text::Owned(json) => json,
        }
    }

    /// The rewritten JSON, if a hook replaced the message.
    pub fn into_replacement(self) -> Option<String> {
        match self.text {
            Text::Owned(json) if self.changed => Some(json),
            _ => None,
        }
    }
}

/// Runs the filter hooks of `set`, in order, on a batch of messages (one read of
/// one connection). Each message sees the previous hook's output; a drop ends its
/// chain; a failing hook applies its `on_error`. The batch goes through one hook
/// at a time, which lets a worker subprocess take the whole batch in one exchange.
pub async fn run_filters(set: &HookSet, items: &mut [Pending], cx: &CallContext<'_>) {
    for (index, hook) in set.hooks.iter().enumerate() {
        if hook.config.phase != Phase::Filter {
            continue;
        }
        let (selected, outcomes) = filter_batch(set, index, items, cx).await;
        for (i, outcome) in selected.into_iter().zip(outcomes) {
            apply(hook, &mut items[i], outcome);
        }
    }
}

/// Runs hook `index` on the items it matches; returns their indexes and outcomes.
/// Workers and batch-taking guests get them in one exchange, other hooks one call
/// per message.
async fn filter_batch(
    set: &HookSet,
    index: usize,
    items: &[Pending],
    cx: &CallContext<'_>,
) -> (Vec<usize>, Vec<Result<Verdict, HookError>>) {
    let hook = &set.hooks[index];
    let whole_batch = hook.batches || matches!(hook.runner, LoadedRunner::Worker(_));
    let mut selected = Vec::new();
    let mut views = Vec::new();
    let mut outcomes = Vec::new();
    for (i, item) in items.iter().enumerate() {
        if item.dropped.is_some() {
            continue;
        }
        let json = item.json();
        let fields = Fields::parse(json).strs();
        if !fields.matches(&hook.config) {
            continue;
        }
        selected.push(i);
        if hook.batches {
            views.push((fields, json));
        } else if !whole_batch {
            outcomes.push(call(set, index, json, &fields, item.hops, cx).await);
        }
    }
    if whole_batch && !selected.is_empty() {
        outcomes = if hook.batches {
            if let [(fields, json)] = &views[..] {
                // A batch of one costs less through plain `handle`.
                let hops = items[selected[0]].hops;
                return (
                    selected,
                    vec![call(set, index, json, fields, hops, cx).await],
                );
            }
            let hops = selected.iter().map(|&i| items[i].hops).max().unwrap_or(0);
            let views: Vec<MessageView<'_>> = views.iter().map(|(f, json)| f.view(json)).collect();
            call_wasm_batch(hook, &views, hops, cx).await
        } else {
            call_worker_batch(hook, items, &selected, cx).await
        };
    }
    (selected, outcomes)
}

/// Calls a guest's `handle-batch` once for `msgs`. A failure of the call is one
/// failure of the hook, and every message of the batch gets its error.
async fn call_wasm_batch(
    hook: &LoadedHook,
    msgs: &[MessageView<'_>],
    hops: u8,
    cx: &CallContext<'_>,
) -> Vec<Result<Verdict, HookError>> {
    let all = |e: HookError| msgs.iter().map(|_| Err(e.clone())).collect();
    if hook.stats.suspended() {
        return all(HookError::Suspended);
    }
    let LoadedRunner::Wasm(module) = &hook.runner else {
        return all(HookError::Trap("handle-batch: not a WASM hook".into()));
    };
    let started = Instant::now();
    let result = match hook.instance(module, cx).await {
        Ok(mut instance) => {
            let result = instance.handle_batch(msgs, hops).await;
            if result.is_ok() {
                hook.return_instance(instance);
            }
            result
        }
        Err(e) => Err(e),
    };
    let per_message = started.elapsed() / msgs.len() as u32;
    for _ in msgs {
        hook.stats.record(per_message);
    }
    match result {
        Ok(verdicts) => verdicts.into_iter().map(|v| finish(hook, Ok(v))).collect(),
        Err(e) => {
            let _ = finish(hook, Err(e.clone()));
            all(e)
        }
    }
}

/// Applies one hook's outcome to one message.
fn apply(hook: &LoadedHook, item: &mut Pending, outcome: Result<Verdict, HookError>) {
    let outcome = match outcome {
        // A replacement the host refuses counts as the hook's failure.
        Ok(Verdict::Replace(new)) => {
            match rewrite(&Fields::parse(item.json()), new, hook.config.grants.routing) {
                Ok(new) => Ok(Verdict::Replace(new)),
                Err(e) => finish(hook, Err(e)),
            }
        }
        other => other,
    };
    match outcome {
        Ok(Verdict::Pass) => {}
        Ok(Verdict::Drop(reason)) => {
            hook.stats.drops.fetch_add(1, Ordering::Relaxed);
            item.dropped = Some((hook.config.name.clone(), reason));
        }
        Ok(Verdict::Replace(new)) => {
            hook.stats.replaced.fetch_add(1, Ordering::Relaxed);
            item.text = Text::Owned(new);
            item.changed = true;
        }
        Err(e) => {
            if hook.config.on_error == OnError::Drop {
                hook.stats.drops.fetch_add(1, Ordering::Relaxed);
                item.dropped = Some((hook.config.name.clone(), format!("on_error: drop ({e})")));
            }
        }
    }
}

/// Sends a batch to a worker in one exchange: every request is written before the
/// answers are read, so the worker is never idle waiting for the next message.
async fn call_worker_batch(
    hook: &Arc<LoadedHook>,
    items: &[Pending],
    selected: &[usize],
    cx: &CallContext<'_>,
) -> Vec<Result<Verdict, HookError>> {
    if hook.stats.suspended() {
        return selected.iter().map(|_| Err(HookError::Suspended)).collect();
    }
    let batch: Vec<(String, u8)> = selected
        .iter()
        .map(|&i| (items[i].json().to_owned(), items[i].hops))
        .collect();
    let (target, emit, n) = (hook.clone(), cx.emit.clone(), batch.len());
    let started = Instant::now();
    let results = tokio::task::spawn_blocking(move || match &target.runner {
        LoadedRunner::Worker(worker) => worker.handle_many(&batch, &emit),
        _ => vec![Err(HookError::Process("not a worker".into())); batch.len()],
    })
    .await
    .unwrap_or_else(|e| vec![Err(HookError::Process(format!("worker call panicked: {e}"))); n]);
    let each = started.elapsed() / n.max(1) as u32;
    results
        .into_iter()
        .map(|result| {
            hook.stats.record(each);
            finish(hook, result)
        })
        .collect()
}

/// Checks and normalises a replacement: a JSON object, `type` and `id` kept from
/// the original, `to` unchanged unless `routing` is granted.
fn rewrite(original: &Fields<'_>, new: String, routing: bool) -> Result<String, HookError> {
    let check_to = |new_to: &str| {
        if !routing && new_to != original.strs().to() {
            return Err(HookError::Routing);
        }
        Ok(())
    };
    // A replacement must be one JSON object: checked without building it.
    let bad =
        |e: serde_json::Error| HookError::BadVerdict(format!("replace needs a JSON object: {e}"));
    serde_json::from_str::<serde::de::IgnoredAny>(&new).map_err(bad)?;
    // Usual case: the hook kept `type` and `id` (enrichment, redaction), so its text
    // is delivered as it is, never rebuilt.
    if new.trim_start().starts_with('{') {
        let fields = Fields::parse(&new);
        if fields.kind == original.kind && fields.id == original.id {
            check_to(fields.strs().to())?;
            return Ok(new);
        }
    }
    let mut map: serde_json::Map<String, Value> = serde_json::from_str(&new).map_err(bad)?;
    for (key, raw) in [("type", original.kind), ("id", original.id)] {
        if let Some(value) = raw.and_then(|r| serde_json::from_str::<Value>(r).ok()) {
            map.insert(key.into(), value);
        }
    }
    check_to(map.get("to").and_then(Value::as_str).unwrap_or(""))?;
    Ok(Value::Object(map).to_string())
}

/// Runs the notify hooks of `set` that match, ignoring verdicts.
pub async fn run_notify(set: &HookSet, json: &str, hops: u8, cx: &CallContext<'_>) {
    let fields = Fields::parse(json).strs();
    for (index, hook) in set.hooks.iter().enumerate() {
        if hook.config.phase == Phase::Notify && fields.matches(&hook.config) {
            let _ = call(set, index, json, &fields, hops, cx).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn raw<'a>(f: &Fields<'a>) -> [Option<&'a str>; 4] {
        [f.kind, f.to, f.from, f.id]
    }

    #[test]
    fn routing_fields_are_read_from_the_top_level_only() {
        let json = r#" { "body" : {"to":"inner","x":["}",{"from":"no"}]}, "to" : "a\"b",
            "t\u0079pe":"message","id":7,"from":null,"s":"{\\","n":-1.5e3 } "#;
        let f = Fields::parse(json);
        assert_eq!(
            raw(&f),
            [
                Some(r#""message""#),
                Some(r#""a\"b""#),
                Some("null"),
                Some("7")
            ]
        );
        let strs = f.strs();
        assert_eq!(strs.to(), "a\"b");
        assert_eq!(strs.from, None);
        assert_eq!(
            raw(&Fields::parse(r#"{"to":"a","to":"b"}"#))[1],
            Some(r#""b""#)
        );
        for not_an_object in ["[]", "\"to\"", "1", "", "{\"to\""] {
            assert_eq!(
                raw(&Fields::parse(not_an_object)),
                [None; 4],
                "{not_an_object}"
            );
        }
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "[a-z\"\\\\{}\\[\\],: é\u{1F600}]{0,8}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map("(to|from|id|type|[a-z]{1,3})", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// The scanner agrees with serde_json on any object, pretty-printed or not.
        #[test]
        fn the_scanner_agrees_with_serde(
            top in prop::collection::btree_map("(to|from|id|type|body|[a-z]{1,3})", json_value(), 0..6),
            pretty in any::<bool>(),
        ) {
            let value = Value::Object(top.clone().into_iter().collect());
            let text = if pretty {
                serde_json::to_string_pretty(&value).unwrap()
            } else {
                value.to_string()
            };
            let f = Fields::parse(&text);
            for (key, got) in [("type", f.kind), ("to", f.to), ("from", f.from), ("id", f.id)] {
                let want = top.get(key);
                let got: Option<Value> = got.map(|r| serde_json::from_str(r).unwrap());
                prop_assert_eq!(got.as_ref(), want, "{} in {}", key, text);
            }
        }
    }

    fn rewritten(original: &str, new: &str, routing: bool) -> Result<Value, HookError> {
        rewrite(&Fields::parse(original), new.to_string(), routing)
            .map(|text| serde_json::from_str(&text).unwrap())
    }

    #[test]
    fn a_replacement_that_keeps_type_and_id_is_delivered_as_written() {
        let original = r#"{"type":"message","id":"7","to":"a","body":1}"#;
        let new = r#"{"type": "message", "id": "7", "to": "a", "body": 2, "extra": true}"#;
        let text = rewrite(&Fields::parse(original), new.to_string(), false).unwrap();
        assert_eq!(text, new, "kept byte for byte");
    }

    #[test]
    fn type_and_id_are_forced_back_to_the_originals() {
        let original = r#"{"type":"message","id":"7","to":"a"}"#;
        let got = rewritten(
            original,
            r#"{"type":"other","id":"8","to":"a","x":1}"#,
            false,
        );
        assert_eq!(
            got.unwrap(),
            serde_json::json!({"type":"message","id":"7","to":"a","x":1})
        );
        let got = rewritten(original, r#"{"to":"a"}"#, false).unwrap();
        assert_eq!((&got["type"], &got["id"]), (&"message".into(), &"7".into()));
    }

    #[test]
    fn changing_to_needs_the_routing_grant_on_both_paths() {
        let original = r#"{"type":"message","id":"7","to":"a"}"#;
        for new in [
            r#"{"type":"message","id":"7","to":"b"}"#,
            r#"{"type":"message","to":"b"}"#,
        ] {
            assert!(matches!(
                rewritten(original, new, false),
                Err(HookError::Routing)
            ));
            assert_eq!(rewritten(original, new, true).unwrap()["to"], "b");
        }
    }

    #[test]
    fn a_replacement_must_be_a_json_object() {
        let original = r#"{"type":"message","to":"a"}"#;
        for bad in ["[1]", "nope", r#"{"to":"a"} trailing"#, "\"x\""] {
            assert!(
                matches!(
                    rewritten(original, bad, true),
                    Err(HookError::BadVerdict(_))
                ),
                "{bad}"
            );
        }
    }
}
