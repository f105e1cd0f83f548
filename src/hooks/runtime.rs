//! Where hooks run inside the daemon: filter shard threads between connections
//! and the router, a notify thread after the router, and the emit path back in.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use super::config::{self, HookSource};
use super::wasm::WasmEngine;
use super::{
    run_filters, run_notify, CallContext, EmitSink, Filtered, HookSet, Instances, MAX_HOPS,
};
use crate::frame;
use crate::protocol::{self, Request, Routed};
use crate::router::{Command, SessionKey};

/// Batches queued per filter shard; readers wait when it is full.
pub const SHARD_QUEUE: usize = 256;

/// Messages queued for notify hooks; more are counted and skipped, never waited for.
pub const NOTIFY_QUEUE: usize = 4096;

/// How long a replaced hook set may stay in use by in-flight batches before its
/// workers are shut down anyway.
const RETIRE_WAIT: Duration = Duration::from_secs(10);

/// Requests from one connection read, for a filter shard.
pub struct ShardJob {
    pub key: SessionKey,
    pub requests: Vec<Request>,
    pub router: mpsc::Sender<Command>,
    /// The connection's count of jobs not yet forwarded to the router.
    pub pending: Arc<AtomicUsize>,
}

struct NotifyJob {
    frame: bytes::Bytes,
    hops: u8,
}

/// Result of the last (re)load, for `hooks status`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReloadReport {
    pub ok: bool,
    pub generation: u64,
    pub at_unix: f64,
    pub took_ms: f64,
    pub error: Option<String>,
}

/// The daemon's hook engine.
pub struct HookRuntime {
    pub engine: WasmEngine,
    pub source: HookSource,
    current: RwLock<Arc<HookSet>>,
    has_filters: AtomicBool,
    has_notify: AtomicBool,
    next_generation: AtomicU64,
    reload_lock: Mutex<()>,
    last_reload: Mutex<ReloadReport>,
    router: Arc<OnceLock<mpsc::WeakSender<Command>>>,
    shards: OnceLock<Vec<mpsc::Sender<ShardJob>>>,
    notify_tx: OnceLock<std::sync::mpsc::SyncSender<NotifyJob>>,
    runtime: OnceLock<tokio::runtime::Handle>,
    emit: EmitSink,
    /// Messages dropped by filters.
    pub filtered_out: AtomicU64,
    /// Messages not given to notify hooks because their queue was full.
    pub notify_overflow: AtomicU64,
    /// Emits refused by the hop limit.
    pub hop_limited: Arc<AtomicU64>,
}

impl std::fmt::Debug for HookRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookRuntime")
            .field("source", &self.source)
            .finish()
    }
}

impl HookRuntime {
    /// Creates the engine and loads the hooks of `source`. A bad config is reported
    /// (log and `hooks status`) and leaves no hooks in force: the bus still runs.
    pub fn new(
        source: HookSource,
        cache_dir: Option<std::path::PathBuf>,
    ) -> Result<Arc<Self>, super::HookError> {
        let engine = WasmEngine::new(cache_dir)?;
        let router: Arc<OnceLock<mpsc::WeakSender<Command>>> = Arc::new(OnceLock::new());
        let hop_limited = Arc::new(AtomicU64::new(0));
        let emit = bus_emitter(router.clone(), hop_limited.clone());
        let runtime = Arc::new(Self {
            engine,
            source,
            current: RwLock::new(Arc::new(HookSet::empty())),
            has_filters: AtomicBool::new(false),
            has_notify: AtomicBool::new(false),
            next_generation: AtomicU64::new(1),
            reload_lock: Mutex::new(()),
            last_reload: Mutex::new(ReloadReport::default()),
            router,
            shards: OnceLock::new(),
            notify_tx: OnceLock::new(),
            runtime: OnceLock::new(),
            emit,
            filtered_out: AtomicU64::new(0),
            notify_overflow: AtomicU64::new(0),
            hop_limited,
        });
        match runtime.reload() {
            Ok(n) => info!(source = %runtime.source, hooks = n, "hooks loaded"),
            Err(e) => {
                error!(source = %runtime.source, error = %e, "hooks not loaded: running without hooks until the config is fixed")
            }
        }
        Ok(runtime)
    }

    /// The hook set in force.
    pub fn current(&self) -> Arc<HookSet> {
        // Read lock held only to clone the Arc.
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether readers must send messages through the filter shards.
    pub fn has_filters(&self) -> bool {
        self.has_filters.load(Ordering::Acquire)
    }

    /// Loads the config again, builds and validates a new set away from routing,
    /// and swaps it in. On error the current set stays. Returns the number of hooks.
    pub fn reload(&self) -> Result<usize, String> {
        let _serial = self.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
        let started = Instant::now();
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        let result = config::load(&self.source)
            .map_err(|e| e.to_string())
            .and_then(|configs| HookSet::build(generation, configs, &self.engine, &self.emit));
        let report = |ok: bool, error: Option<String>| ReloadReport {
            ok,
            generation,
            at_unix: protocol::unix_now(),
            took_ms: started.elapsed().as_secs_f64() * 1000.0,
            error,
        };
        match result {
            Ok(set) => {
                let n = set.hooks.len();
                let set = Arc::new(set);
                self.has_filters.store(set.has_filters(), Ordering::Release);
                self.has_notify.store(set.has_notify(), Ordering::Release);
                let old = std::mem::replace(
                    &mut *self.current.write().unwrap_or_else(|p| p.into_inner()),
                    set,
                );
                retire(old);
                *self.last_reload.lock().unwrap_or_else(|p| p.into_inner()) = report(true, None);
                Ok(n)
            }
            Err(e) => {
                *self.last_reload.lock().unwrap_or_else(|p| p.into_inner()) =
                    report(false, Some(e.clone()));
                Err(e)
            }
        }
    }

    /// Starts the shard and notify threads; emitted messages go to `router` (held
    /// weakly, so the router still stops when the server does).
    pub fn start(
        self: &Arc<Self>,
        router: &mpsc::Sender<Command>,
        runtime: tokio::runtime::Handle,
    ) {
        let _ = self.router.set(router.downgrade());
        let _ = self.runtime.set(runtime);
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let mut shards = Vec::new();
        for i in 0..threads {
            let (tx, rx) = mpsc::channel(SHARD_QUEUE);
            let this = Arc::downgrade(self);
            let spawned = std::thread::Builder::new()
                .name(format!("hookbus-filter-{i}"))
                .spawn(move || Self::shard_loop(this, rx));
            match spawned {
                Ok(_) => shards.push(tx),
                Err(e) => error!(error = %e, "cannot start a filter thread"),
            }
        }
        let _ = self.shards.set(shards);
        let (tx, rx) = std::sync::mpsc::sync_channel(NOTIFY_QUEUE);
        let this = Arc::downgrade(self);
        match std::thread::Builder::new()
            .name("hookbus-notify".into())
            .spawn(move || Self::notify_loop(this, rx))
        {
            Ok(_) => {
                let _ = self.notify_tx.set(tx);
            }
            Err(e) => error!(error = %e, "cannot start the notify thread"),
        }
    }

    /// The shard for a connection: always the same one, so its order is kept.
    pub fn shard(&self, key: SessionKey) -> Option<&mpsc::Sender<ShardJob>> {
        let shards = self.shards.get()?;
        shards.get((key as usize) % shards.len().max(1))
    }

    /// Runs until the runtime is dropped (its shard senders go with it).
    fn shard_loop(this: std::sync::Weak<Self>, mut rx: mpsc::Receiver<ShardJob>) {
        let mut instances = Instances::default();
        while let Some(job) = rx.blocking_recv() {
            let Some(this) = this.upgrade() else { return };
            let set = this.current();
            let mut cx = CallContext {
                engine: &this.engine,
                emit: &this.emit,
                instances: &mut instances,
                runtime: this.runtime.get(),
            };
            let mut out = Vec::with_capacity(job.requests.len());
            for request in job.requests {
                match request {
                    Request::Message(msg) if set.has_filters() => {
                        if let Some(msg) = this.filter(&set, msg, &mut cx) {
                            out.push(Request::Message(msg));
                        }
                    }
                    other => out.push(other),
                }
            }
            if !out.is_empty() {
                let _ = job.router.blocking_send(Command::Requests {
                    key: job.key,
                    requests: out,
                });
            }
            job.pending.fetch_sub(1, Ordering::AcqRel);
        }
    }

    fn filter(&self, set: &HookSet, msg: Routed, cx: &mut CallContext<'_>) -> Option<Routed> {
        let Ok(text) = std::str::from_utf8(frame::payload(&msg.frame)) else {
            return Some(msg); // parsed as UTF-8 already; cannot happen
        };
        match run_filters(set, text, msg.hops, cx) {
            Filtered::Deliver(None) => Some(msg),
            Filtered::Deliver(Some(json)) => {
                match protocol::parse(frame::encode(json.as_bytes())) {
                    Request::Message(mut new) => {
                        new.hops = msg.hops;
                        Some(new)
                    }
                    other => {
                        warn!(
                            ?other,
                            "a filter produced a message the bus cannot route; dropped"
                        );
                        None
                    }
                }
            }
            Filtered::Dropped { hook, reason } => {
                self.filtered_out.fetch_add(1, Ordering::Relaxed);
                debug!(hook, reason, "message dropped by filter");
                None
            }
        }
    }

    /// Queues a routed message for notify hooks, without waiting.
    pub fn notify(&self, msg: &Routed) {
        if !self.has_notify.load(Ordering::Acquire) {
            return;
        }
        let Some(tx) = self.notify_tx.get() else {
            return;
        };
        let job = NotifyJob {
            frame: msg.frame.clone(),
            hops: msg.hops,
        };
        if tx.try_send(job).is_err() {
            let n = self.notify_overflow.fetch_add(1, Ordering::Relaxed);
            if n.is_power_of_two() {
                warn!(
                    skipped = n + 1,
                    "notify hooks are behind: their queue is full, messages skipped"
                );
            }
        }
    }

    fn notify_loop(this: std::sync::Weak<Self>, rx: std::sync::mpsc::Receiver<NotifyJob>) {
        let mut instances = Instances::default();
        while let Ok(job) = rx.recv() {
            let Some(this) = this.upgrade() else { return };
            let set = this.current();
            let mut cx = CallContext {
                engine: &this.engine,
                emit: &this.emit,
                instances: &mut instances,
                runtime: this.runtime.get(),
            };
            if let Ok(text) = std::str::from_utf8(frame::payload(&job.frame)) {
                run_notify(&set, text, job.hops, &mut cx);
            }
        }
    }

    /// The `hooks_status` answer.
    pub fn status(&self) -> Value {
        let set = self.current();
        json!({
            "source": self.source.to_string(),
            "generation": set.generation,
            "last_reload": *self.last_reload.lock().unwrap_or_else(|p| p.into_inner()),
            "filtered_out": self.filtered_out.load(Ordering::Relaxed),
            "notify_overflow": self.notify_overflow.load(Ordering::Relaxed),
            "hop_limited": self.hop_limited.load(Ordering::Relaxed),
            "hooks": set.status(),
        })
    }

    /// Files whose change should trigger a reload.
    pub fn watched_files(&self) -> Vec<std::path::PathBuf> {
        let mut files = Vec::new();
        if let HookSource::File(path) = &self.source {
            files.push(path.clone());
        }
        // The files of the hooks in force, or, if loading failed, of the config as
        // it stands, so fixing a broken module also reloads.
        match config::load(&self.source) {
            Ok(configs) => files.extend(configs.iter().flat_map(|c| c.watched_files())),
            Err(_) => files.extend(
                self.current()
                    .hooks
                    .iter()
                    .flat_map(|h| h.config.watched_files()),
            ),
        }
        files
    }
}

/// Drops a replaced set once in-flight batches are done with it (on its own thread,
/// since shutting down workers can take a moment).
fn retire(old: Arc<HookSet>) {
    if old.hooks.is_empty() {
        return;
    }
    let _ = std::thread::Builder::new()
        .name("hookbus-retire".into())
        .spawn(move || {
            let deadline = Instant::now() + RETIRE_WAIT;
            while Arc::strong_count(&old) > 1 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            drop(old);
        });
}

/// The emit sink of the daemon: hook messages enter the router as new messages.
fn bus_emitter(
    router: Arc<OnceLock<mpsc::WeakSender<Command>>>,
    hop_limited: Arc<AtomicU64>,
) -> EmitSink {
    Arc::new(move |hook: &str, json: String, hops: u8| {
        if hops > MAX_HOPS {
            hop_limited.fetch_add(1, Ordering::Relaxed);
            return Err(format!(
                "hop limit reached: this message descends from {MAX_HOPS} emits already"
            ));
        }
        let msg = emitted_message(hook, &json, hops)?;
        let router = router
            .get()
            .and_then(mpsc::WeakSender::upgrade)
            .ok_or("the bus is not running")?;
        router
            .try_send(Command::Emitted(msg))
            .map_err(|_| "the bus is busy; try again".to_owned())
    })
}

/// Builds the message a hook emitted: a JSON object; `type` defaults to `message`
/// and `from` to `hook:<name>`.
pub fn emitted_message(hook: &str, json: &str, hops: u8) -> Result<Routed, String> {
    let mut map: serde_json::Map<String, Value> =
        serde_json::from_str(json).map_err(|e| format!("emit needs a JSON object: {e}"))?;
    map.entry("type").or_insert_with(|| "message".into());
    map.entry("from")
        .or_insert_with(|| format!("hook:{hook}").into());
    if map["type"] != "message" {
        return Err("emitted messages must have type `message`".into());
    }
    match protocol::parse(frame::encode(Value::Object(map).to_string().as_bytes())) {
        Request::Message(mut msg) => {
            msg.hops = hops;
            Ok(msg)
        }
        Request::Invalid(e) => Err(e.detail),
        _ => Err("not a message".into()),
    }
}
