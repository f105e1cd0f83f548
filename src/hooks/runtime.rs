//! Where hooks run inside the daemon: the filter chain on connection readers, a
//! notify task after the router, and the emit path back into the router.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use super::config::{self, HookSource};
use super::wasm::WasmEngine;
use super::{run_filters, run_notify, CallContext, EmitSink, HookSet, Pending, MAX_HOPS};
use crate::frame;
use crate::protocol::{self, Request, Routed};
use crate::router::Command;

/// Messages queued for notify hooks; more are counted and skipped, never waited for.
pub const NOTIFY_QUEUE: usize = 4096;

/// How long a replaced hook set may stay in use by in-flight calls before its
/// instances and workers are shut down anyway.
const RETIRE_WAIT: Duration = Duration::from_secs(10);

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
    /// Read lock held only to clone the Arc; write lock only to swap it.
    current: RwLock<Arc<HookSet>>,
    has_filters: AtomicBool,
    has_notify: AtomicBool,
    next_generation: AtomicU64,
    /// Serialises reloads (the file watcher and start-up).
    reload_lock: tokio::sync::Mutex<()>,
    last_reload: Mutex<ReloadReport>,
    router: Arc<OnceLock<mpsc::WeakSender<Command>>>,
    notify_tx: OnceLock<mpsc::Sender<NotifyJob>>,
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
    pub async fn new(
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
            reload_lock: tokio::sync::Mutex::new(()),
            last_reload: Mutex::new(ReloadReport::default()),
            router,
            notify_tx: OnceLock::new(),
            emit,
            filtered_out: AtomicU64::new(0),
            notify_overflow: AtomicU64::new(0),
            hop_limited,
        });
        match runtime.reload().await {
            Ok(n) => info!(source = %runtime.source, hooks = n, "hooks loaded"),
            Err(e) => {
                error!(source = %runtime.source, error = %e, "hooks not loaded: running without hooks until the config is fixed")
            }
        }
        Ok(runtime)
    }

    /// The hook set in force.
    pub fn current(&self) -> Arc<HookSet> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether readers must run the filter chain.
    pub fn has_filters(&self) -> bool {
        self.has_filters.load(Ordering::Acquire)
    }

    fn context(&self) -> CallContext<'_> {
        CallContext {
            engine: &self.engine,
            emit: &self.emit,
        }
    }

    /// Loads the config again, builds and validates a new set away from routing,
    /// and swaps it in. On error the current set stays. Returns the number of hooks.
    pub async fn reload(&self) -> Result<usize, String> {
        let _serial = self.reload_lock.lock().await;
        let started = Instant::now();
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        let result = match config::load(&self.source) {
            Ok(configs) => HookSet::build(generation, configs, &self.engine, &self.emit).await,
            Err(e) => Err(e.to_string()),
        };
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

    /// Starts the notify task; emitted messages go to `router` (held weakly, so the
    /// router still stops when the server does).
    pub fn start(self: &Arc<Self>, router: &mpsc::Sender<Command>) {
        let _ = self.router.set(router.downgrade());
        let (tx, rx) = mpsc::channel(NOTIFY_QUEUE);
        if self.notify_tx.set(tx).is_ok() {
            tokio::spawn(notify_loop(Arc::downgrade(self), rx));
        }
    }

    /// Runs the filter chain on the messages among `requests` (in order), dropping
    /// what filters drop.
    pub async fn filter(&self, requests: Vec<Request>) -> Vec<Request> {
        let set = self.current();
        if !set.has_filters() {
            return requests;
        }
        let mut items: Vec<Pending> = requests
            .iter()
            .filter_map(|r| match r {
                Request::Message(msg) => Some(Pending::from_frame(msg.frame.clone(), msg.hops)),
                _ => None,
            })
            .collect();
        run_filters(&set, &mut items, &self.context()).await;
        let mut items = items.into_iter();
        let mut out = Vec::with_capacity(requests.len());
        for request in requests {
            let Request::Message(msg) = request else {
                out.push(request);
                continue;
            };
            let Some(item) = items.next() else { break };
            if let Some((hook, reason)) = item.dropped {
                self.filtered_out.fetch_add(1, Ordering::Relaxed);
                debug!(hook, reason, "message dropped by filter");
                continue;
            }
            let Some(json) = item.into_replacement() else {
                out.push(Request::Message(msg));
                continue;
            };
            match protocol::parse(frame::encode(json.as_bytes())) {
                Request::Message(mut new) => {
                    new.hops = msg.hops;
                    out.push(Request::Message(new));
                }
                other => warn!(
                    ?other,
                    "a filter produced a message the bus cannot route; dropped"
                ),
            }
        }
        out
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
        // The files of the config as it stands, or, if it does not load, of the
        // hooks in force, so fixing a broken module also reloads.
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

/// Runs notify hooks until the runtime is dropped.
async fn notify_loop(runtime: std::sync::Weak<HookRuntime>, mut rx: mpsc::Receiver<NotifyJob>) {
    while let Some(job) = rx.recv().await {
        let Some(runtime) = runtime.upgrade() else {
            return;
        };
        let set = runtime.current();
        if let Ok(text) = std::str::from_utf8(frame::payload(&job.frame)) {
            run_notify(&set, text, job.hops, &runtime.context()).await;
        }
    }
}

/// Shuts a replaced set down once in-flight calls are done with it: idle instances
/// get `shutdown`, workers are stopped (when the last reference goes).
fn retire(old: Arc<HookSet>) {
    if old.hooks.is_empty() {
        return;
    }
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return; // dropped here, without `shutdown` calls
    };
    handle.spawn(async move {
        let deadline = Instant::now() + RETIRE_WAIT;
        while Arc::strong_count(&old) > 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for hook in &old.hooks {
            hook.shutdown().await;
        }
        // Stopping workers waits on their processes: not on an async thread.
        let _ = tokio::task::spawn_blocking(move || drop(old)).await;
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
