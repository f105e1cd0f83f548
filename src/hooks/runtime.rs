//! Where hooks run inside the daemon: the filter chain on connection readers, a
//! notify task after the router, the emit path back into the bus, periodic
//! health checks, reloads, and the bounded stop.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::config::{self, HookSource};
use super::process::{reaper, truncate};
use super::stats::MAX_STATUS_TEXT;
use super::wasm::WasmEngine;
use super::{
    run_filters, run_notify, CallContext, EmitSink, Fields, HookSet, LoadError, Pending, MAX_HOPS,
};
use crate::frame;
use crate::protocol::{self, Dropped, Op, Request, Routed};

/// Messages queued for notify hooks; more are counted and skipped, never waited for.
pub const NOTIFY_QUEUE: usize = 4096;

/// How long a replaced hook set may stay in use by in-flight calls before its
/// instances and workers are shut down anyway.
const RETIRE_WAIT: Duration = Duration::from_secs(10);

/// How often hooks' `health` is asked for.
pub const HEALTH_EVERY: Duration = Duration::from_secs(10);

/// Times a reload builds again because the config changed while it was building.
const RELOAD_ATTEMPTS: usize = 5;

/// Where messages hooks emit go: the narrow port the bus hands to the engine (the
/// router's queue, in the daemon), so the engine never names the router.
pub trait EmitPort: Send + Sync {
    /// Queues `msg` without waiting; an error says why it was refused.
    fn emit(&self, msg: Routed) -> Result<(), String>;
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
    max_frame: usize,
    /// Read lock held only to clone the Arc; write lock only to swap it.
    current: RwLock<Arc<HookSet>>,
    has_filters: AtomicBool,
    has_notify: AtomicBool,
    has_blocking: AtomicBool,
    next_generation: AtomicU64,
    /// Serialises reloads (the file watcher and start-up).
    reload_lock: tokio::sync::Mutex<()>,
    last_reload: Mutex<ReloadReport>,
    /// The files the reloader watches, for `hooks status`.
    watching: Mutex<Vec<std::path::PathBuf>>,
    port: Arc<OnceLock<Box<dyn EmitPort>>>,
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
    /// Creates the engine and loads the hooks of `source`, checking each
    /// (`max_frame` is the bus's frame limit). A config that cannot load is an
    /// error: the bus must not start without the hooks it was told to run.
    pub async fn new(
        source: HookSource,
        cache_dir: Option<std::path::PathBuf>,
        max_frame: usize,
    ) -> Result<Arc<Self>, LoadError> {
        let engine = WasmEngine::new(cache_dir).map_err(LoadError::Engine)?;
        let port: Arc<OnceLock<Box<dyn EmitPort>>> = Arc::new(OnceLock::new());
        let hop_limited = Arc::new(AtomicU64::new(0));
        let emit = bus_emitter(port.clone(), hop_limited.clone(), max_frame);
        let runtime = Arc::new(Self {
            engine,
            source,
            max_frame,
            current: RwLock::new(Arc::new(HookSet::empty())),
            has_filters: AtomicBool::new(false),
            has_notify: AtomicBool::new(false),
            has_blocking: AtomicBool::new(false),
            next_generation: AtomicU64::new(1),
            reload_lock: tokio::sync::Mutex::new(()),
            last_reload: Mutex::new(ReloadReport::default()),
            watching: Mutex::new(Vec::new()),
            port,
            notify_tx: OnceLock::new(),
            emit,
            filtered_out: AtomicU64::new(0),
            notify_overflow: AtomicU64::new(0),
            hop_limited,
        });
        let n = runtime.reload().await?;
        info!(source = %runtime.source, hooks = n, "hooks loaded");
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

    /// Whether readers must call [`Self::admit`] and [`Self::filter`] before handing
    /// requests on (filters, or spawn hooks with `overflow: block`, in force).
    pub fn runs_inline(&self) -> bool {
        self.has_filters() || self.has_blocking.load(Ordering::Acquire)
    }

    fn context(&self) -> CallContext<'_> {
        CallContext {
            engine: &self.engine,
            emit: &self.emit,
            max_frame: self.max_frame,
        }
    }

    /// Loads the config again, builds and validates a new set away from routing
    /// (keeping unchanged hooks as they are), and swaps it in. The config is read
    /// again after the build: if it changed meanwhile (an editor still saving), the
    /// set is built again from the new text. On error the current set stays.
    /// Returns the number of hooks.
    pub async fn reload(&self) -> Result<usize, LoadError> {
        let _serial = self.reload_lock.lock().await;
        let started = Instant::now();
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        let current = self.current();
        let mut result = Err(LoadError::Unsettled);
        for _ in 0..RELOAD_ATTEMPTS {
            let before = self.source.snapshot();
            let built = match config::load(&self.source) {
                Ok(configs) => {
                    let ctx = self.context();
                    HookSet::build(
                        generation,
                        configs,
                        &current,
                        ctx.engine,
                        ctx.emit,
                        self.max_frame,
                    )
                    .await
                }
                Err(e) => Err(e.into()),
            };
            if self.source.snapshot() == before {
                result = built;
                break;
            }
            debug!("the hooks config changed while it was loaded; loading it again");
            if let Ok(set) = built {
                set.shutdown_unshared(&current).await;
            }
        }
        let report = |ok: bool, error: Option<&LoadError>| ReloadReport {
            ok,
            generation,
            at_unix: protocol::unix_now(),
            took_ms: started.elapsed().as_secs_f64() * 1000.0,
            error: error.map(|e| truncate(&e.to_string(), MAX_STATUS_TEXT).into_owned()),
        };
        match result {
            Ok(set) => {
                let n = set.hooks.len();
                let set = Arc::new(set);
                self.has_filters.store(set.has_filters(), Ordering::Release);
                self.has_notify.store(set.has_notify(), Ordering::Release);
                self.has_blocking
                    .store(set.blocking_spawns().next().is_some(), Ordering::Release);
                let old = std::mem::replace(
                    &mut *self.current.write().unwrap_or_else(|p| p.into_inner()),
                    set.clone(),
                );
                if n == 0 && !old.hooks.is_empty() {
                    info!(source = %self.source, "no hooks in the config any more: hooks unloaded");
                }
                retire(old, set);
                *self.last_reload.lock().unwrap_or_else(|p| p.into_inner()) = report(true, None);
                Ok(n)
            }
            Err(e) => {
                *self.last_reload.lock().unwrap_or_else(|p| p.into_inner()) =
                    report(false, Some(&e));
                Err(e)
            }
        }
    }

    /// Starts the notify task and the health checks; emitted messages go to `port`.
    pub fn start(self: &Arc<Self>, port: impl EmitPort + 'static) {
        let _ = self.port.set(Box::new(port));
        let (tx, rx) = mpsc::channel(NOTIFY_QUEUE);
        if self.notify_tx.set(tx).is_ok() {
            tokio::spawn(notify_loop(Arc::downgrade(self), rx));
            tokio::spawn(health_loop(Arc::downgrade(self)));
        }
    }

    /// Waits, before a read's messages go on, until every `overflow: block` spawn
    /// hook they match has room in its backlog. Only this sender waits.
    pub async fn admit(&self, requests: &[Request]) {
        if !self.has_blocking.load(Ordering::Acquire) {
            return;
        }
        let set = self.current();
        let spawns: Vec<_> = set.blocking_spawns().collect();
        // Each request's fields are read once, for every hook.
        let mut waits = vec![false; spawns.len()];
        for request in requests {
            let Some((frame, _)) = request.op.filtered_frame() else {
                continue;
            };
            let Ok(json) = std::str::from_utf8(frame::payload(frame)) else {
                continue;
            };
            let fields = Fields::parse(json).strs();
            for (wait, (config, _)) in waits.iter_mut().zip(&spawns) {
                *wait |= fields.matches(config);
            }
        }
        for ((_, spawn), wait) in spawns.iter().zip(waits) {
            if wait {
                spawn.wait_room().await;
            }
        }
    }

    /// Runs the filter chain on the messages, publishes and requests among
    /// `requests` (in order). One a filter drops becomes [`Op::Dropped`], so its
    /// sender can be told.
    pub async fn filter(&self, requests: Vec<Request>) -> Vec<Request> {
        let set = self.current();
        if !set.has_filters() {
            return requests;
        }
        let mut items: Vec<Pending> = requests
            .iter()
            .filter_map(|r| r.op.filtered_frame())
            .map(|(frame, hops)| Pending::from_frame(frame.clone(), hops))
            .collect();
        run_filters(&set, &mut items, &self.context()).await;
        let mut items = items.into_iter();
        let mut out = Vec::with_capacity(requests.len());
        for request in requests {
            let Some((frame, hops)) = request.op.filtered_frame() else {
                out.push(request);
                continue;
            };
            let (frame, hops) = (frame.clone(), hops);
            let Some(item) = items.next() else { break };
            if let Some((hook, reason)) = item.dropped.clone() {
                self.filtered_out.fetch_add(1, Ordering::Relaxed);
                debug!(hook, reason, "frame dropped by filter");
                let id = match &request.op {
                    Op::Message(msg) => msg.id(),
                    Op::Publish(p) => protocol::MsgId::new(p.id()),
                    Op::Ask(a) => protocol::MsgId::new(&a.id),
                    _ => protocol::MsgId::null(),
                };
                // A request or a job is answered `dropped`, as it expects an answer.
                let was_request = matches!(request.op, Op::Ask(_) | Op::Job(_));
                out.push(Request {
                    rid: request.rid,
                    op: Op::Dropped(Box::new(Dropped {
                        id,
                        hook,
                        reason,
                        frame,
                        was_request,
                    })),
                });
                continue;
            }
            let Some(json) = item.into_replacement() else {
                out.push(request);
                continue;
            };
            let new = protocol::parse_within(frame::encode(json.as_bytes()), self.max_frame);
            let op = match (request.op, new.op) {
                (Op::Message(_), Op::Message(mut new)) => {
                    new.hops = hops;
                    Op::Message(new)
                }
                (Op::Publish(_), op @ Op::Publish(_))
                | (Op::Ask(_), op @ Op::Ask(_))
                | (Op::Job(_), op @ Op::Job(_)) => op,
                // The sender is told why (`frame_too_large`, say).
                (_, op @ Op::Invalid(_)) => op,
                (_, _) => Op::Invalid(Box::new(protocol::ProtocolError::bad_request(
                    "a filter hook rewrote this into another type of frame; it was not routed",
                ))),
            };
            out.push(Request {
                rid: request.rid,
                op,
            });
        }
        out
    }

    /// Queues a routed message or publish for notify hooks, without waiting.
    pub fn notify(&self, frame: &bytes::Bytes, hops: u8) {
        if !self.has_notify.load(Ordering::Acquire) {
            return;
        }
        let Some(tx) = self.notify_tx.get() else {
            return;
        };
        let job = NotifyJob {
            frame: frame.clone(),
            hops,
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
            "watching": self.watching.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            "generation": set.generation,
            "last_reload": *self.last_reload.lock().unwrap_or_else(|p| p.into_inner()),
            "filtered_out": self.filtered_out.load(Ordering::Relaxed),
            "notify_overflow": self.notify_overflow.load(Ordering::Relaxed),
            "hop_limited": self.hop_limited.load(Ordering::Relaxed),
            "hooks": set.status(),
        })
    }

    /// Files whose change should trigger a reload: the config (and the target of
    /// a config that is a symlink) and the files of its hooks.
    pub fn watched_files(&self) -> Vec<std::path::PathBuf> {
        let mut files = Vec::new();
        if let Some(path) = self.source.file() {
            files.push(path.to_owned());
            if let Ok(target) = std::fs::canonicalize(path) {
                if target != path {
                    files.push(target);
                }
            }
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

    /// Records what the reloader watches (see [`super::reload`]).
    pub fn set_watching(&self, files: Vec<std::path::PathBuf>) {
        *self.watching.lock().unwrap_or_else(|p| p.into_inner()) = files;
    }

    /// Stops every hook within `grace`: idle instances get `shutdown`, workers are
    /// asked to stop; then every hook process group, and anything that escaped
    /// one, is killed.
    pub async fn shutdown(&self, grace: Duration) {
        let set = self.current();
        let polite = async {
            for hook in &set.hooks {
                hook.shutdown().await;
            }
        };
        if tokio::time::timeout(grace, polite).await.is_err() {
            warn!("hooks did not stop within {grace:?}; killing them");
        }
        let _ = tokio::task::spawn_blocking(reaper::kill_all).await;
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

/// Asks every hook for its health every [`HEALTH_EVERY`], until the runtime is
/// dropped.
async fn health_loop(runtime: std::sync::Weak<HookRuntime>) {
    loop {
        tokio::time::sleep(HEALTH_EVERY).await;
        let Some(runtime) = runtime.upgrade() else {
            return;
        };
        let set = runtime.current();
        for hook in &set.hooks {
            let health = hook.check_health(&runtime.context()).await;
            if let Some(Err(e)) = &health {
                warn!(hook = hook.config.name, error = %truncate(e, MAX_STATUS_TEXT), "hook reports itself unhealthy");
            }
            hook.stats.set_health(health);
        }
    }
}

/// Shuts the hooks of a replaced set that the new set does not keep down, once
/// in-flight calls are done with them (or after [`RETIRE_WAIT`]).
fn retire(old: Arc<HookSet>, new: Arc<HookSet>) {
    if old.hooks.is_empty() {
        return;
    }
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return; // dropped here; workers are killed by their `Drop`
    };
    handle.spawn(async move {
        let deadline = Instant::now() + RETIRE_WAIT;
        while Arc::strong_count(&old) > 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        old.shutdown_unshared(&new).await;
    });
}

/// The emit sink of the daemon: hook messages enter the bus through the port as
/// new messages, within the hop limit and the frame limit.
fn bus_emitter(
    port: Arc<OnceLock<Box<dyn EmitPort>>>,
    hop_limited: Arc<AtomicU64>,
    max_frame: usize,
) -> EmitSink {
    Arc::new(move |hook: &str, json: String, hops: u8| {
        if hops > MAX_HOPS {
            hop_limited.fetch_add(1, Ordering::Relaxed);
            return Err(format!(
                "hop limit reached: this message descends from {MAX_HOPS} emits already"
            ));
        }
        let msg = emitted_message(hook, &json, hops, max_frame)?;
        port.get().ok_or("the bus is not running")?.emit(msg)
    })
}

/// Builds the message a hook emitted: a JSON object within `max_frame` bytes;
/// `type` defaults to `message` and `from` to `hook:<name>`.
pub fn emitted_message(
    hook: &str,
    json: &str,
    hops: u8,
    max_frame: usize,
) -> Result<Routed, String> {
    if json.len() > max_frame {
        return Err(format!(
            "the message is {} bytes, over the bus's frame limit of {max_frame}",
            json.len()
        ));
    }
    let mut map: serde_json::Map<String, Value> =
        serde_json::from_str(json).map_err(|e| format!("emit needs a JSON object: {e}"))?;
    map.entry("type").or_insert_with(|| "message".into());
    map.entry("from")
        .or_insert_with(|| format!("hook:{hook}").into());
    if map["type"] != "message" {
        return Err("emitted messages must have type `message`".into());
    }
    let frame = frame::encode(Value::Object(map).to_string().as_bytes());
    if frame::payload(&frame).len() > max_frame {
        return Err(format!(
            "the message with its `id` and `from` is over the bus's frame limit of {max_frame}"
        ));
    }
    match protocol::parse(frame).op {
        Op::Message(mut msg) => {
            msg.hops = hops;
            // `id` and `ts` were added by the parser: the delivered frame must still fit.
            if frame::payload(&msg.frame).len() > max_frame {
                return Err(format!(
                    "the message is over the bus's frame limit of {max_frame}"
                ));
            }
            Ok(msg)
        }
        Op::Invalid(e) => Err(e.detail),
        _ => Err("not a message".into()),
    }
}
