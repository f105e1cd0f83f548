//! The WASM host: one wasmtime [`Engine`], compiled artifacts cached on disk, and
//! warm, sandboxed instances.
//!
//! Two kinds of guest are accepted, told apart by their header:
//! - **components** implementing `wit/hook.wit` (world `hook`), through bindings
//!   generated from that file;
//! - **core modules** speaking the plain ABI of docs/HOOKS.md (`alloc`, `handle`,
//!   optional `init`, imports from module `hookbus`), for languages without
//!   component tooling.
//!
//! Calls are async and run on the calling task (a connection's reader, for
//! filters), so a fast call costs no thread hop. Every call runs on an epoch
//! budget: a ticker thread advances the epoch every [`EPOCH_TICK`] while calls are
//! running (and sleeps otherwise); at each tick a running guest yields to the async
//! executor, so a slow one never holds a runtime thread, and once its budget is
//! spent it is interrupted. Memory is capped with [`StoreLimits`]. Guests get WASI with nothing granted unless
//! hooks.yaml says so: no preopened dirs, no env, clocks reading zero, no network.
//! Guest stdout and stderr go to the daemon's log.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, ResourceTable};
use wasmtime::{
    Config, Engine, Instance, InstancePre, Linker, Memory, Module, Store, StoreLimits,
    StoreLimitsBuilder, TypedFunc, UpdateDeadline,
};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::config::{DirMode, HookConfig};
use super::{EmitSink, HookError, Verdict};

/// Bindings generated from `wit/hook.wit`, the single source of the contract.
mod bindings {
    wasmtime::component::bindgen!({ world: "hook", path: "wit", exports: { default: async } });
}

use bindings::hookbus::hook::types::{self as wit, Envelope, Level, Message};
use bindings::{Hook, HookPre};

/// Granularity of CPU deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// The least CPU time instantiation and `init` get, however short the hook's
/// per-message `timeout_ms`.
pub const INIT_BUDGET: Duration = Duration::from_secs(1);

/// The ticker parks after this many ticks without a running call.
const TICKER_IDLE_TICKS: u32 = 200;

/// The shared engine and its artifact cache.
#[derive(Clone)]
pub struct WasmEngine {
    engine: Engine,
    cache_dir: Option<PathBuf>,
    ticker: Arc<Ticker>,
}

impl std::fmt::Debug for WasmEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmEngine")
            .field("cache_dir", &self.cache_dir)
            .finish()
    }
}

/// The default artifact cache: `$XDG_CACHE_HOME/hookbus/wasm` or `~/.cache/hookbus/wasm`.
pub fn default_cache_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
        .map(|d| d.join("hookbus").join("wasm"))
}

impl WasmEngine {
    /// Creates the engine; `cache_dir` `None` disables the artifact cache.
    pub fn new(cache_dir: Option<PathBuf>) -> Result<Self, HookError> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        let engine = Engine::new(&config)
            .map_err(|e| HookError::Load(format!("cannot create the wasm engine: {e}")))?;
        let ticker = Ticker::start(engine.clone());
        Ok(Self {
            engine,
            cache_dir,
            ticker,
        })
    }

    /// Compiles (or loads from the cache) and links a hook's module.
    pub fn load(&self, hook: &HookConfig, path: &Path) -> Result<WasmModule, HookError> {
        let raw = std::fs::read(path)
            .map_err(|e| HookError::Load(format!("cannot read {}: {e}", path.display())))?;
        let bytes = if raw.starts_with(b"\0asm") {
            raw
        } else {
            wat::parse_bytes(&raw)
                .map_err(|e| {
                    HookError::Load(format!(
                        "{} is neither wasm nor valid wat: {e}",
                        path.display()
                    ))
                })?
                .into_owned()
        };
        // The header's version field: 1 for core modules, 0x1000d for components.
        let is_component = bytes.get(4..8) == Some(&[0x0d, 0x00, 0x01, 0x00]);
        let key = self.cache_key(&bytes);
        if is_component {
            let component = self.compile(&bytes, &key, true, |b| {
                // SAFETY: `b` was produced by `Engine::precompile_component` of an engine
                // with the same configuration (the cache key includes the engine's
                // compatibility hash), either just now or by an earlier run into our
                // private cache directory.
                unsafe { Component::deserialize(&self.engine, b) }
            })?;
            let mut linker = wasmtime::component::Linker::<ComponentState>::new(&self.engine);
            wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(link_error)?;
            Hook::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s).map_err(link_error)?;
            let pre = linker.instantiate_pre(&component).map_err(|e| {
                HookError::Load(format!("{} cannot be linked: {e:#} (it must implement world `hook` of wit/hook.wit and import only WASI 0.2 and hookbus:hook/host)", path.display()))
            })?;
            let pre = HookPre::new(pre).map_err(|e| {
                HookError::Load(format!(
                    "{} does not export `init` and `handle` as wit/hook.wit defines them: {e:#}",
                    path.display()
                ))
            })?;
            Ok(WasmModule::Component(Box::new(pre)))
        } else {
            let module = self.compile(&bytes, &key, false, |b| {
                // SAFETY: as above, for `Engine::precompile_module`.
                unsafe { Module::deserialize(&self.engine, b) }
            })?;
            let mut linker = Linker::<CoreState>::new(&self.engine);
            wasmtime_wasi::p1::add_to_linker_async(&mut linker, |s| &mut s.wasi)
                .map_err(link_error)?;
            add_core_imports(&mut linker).map_err(link_error)?;
            let pre = linker.instantiate_pre(&module).map_err(|e| {
                HookError::Load(format!("{} cannot be linked: {e:#} (core modules may import `hookbus` log/emit/now_ms and WASI preview 1)", path.display()))
            })?;
            for (name, what) in [
                ("memory", "its memory"),
                ("alloc", "alloc(len: i32) -> i32"),
                ("handle", "handle(ptr: i32, len: i32) -> i64"),
            ] {
                if module.get_export(name).is_none() {
                    return Err(HookError::Load(format!("{} is a core module but does not export `{name}` ({what}); see docs/HOOKS.md", path.display())));
                }
            }
            let _ = hook;
            Ok(WasmModule::Core(pre))
        }
    }

    fn cache_key(&self, bytes: &[u8]) -> String {
        let mut engine_hash = std::hash::DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut engine_hash);
        let mut h = Sha256::new();
        h.update(env!("CARGO_PKG_VERSION").as_bytes());
        h.update(engine_hash.finish().to_le_bytes());
        h.update(bytes);
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Compiles `bytes`, going through the on-disk cache when there is one.
    fn compile<T>(
        &self,
        bytes: &[u8],
        key: &str,
        component: bool,
        deserialize: impl Fn(&[u8]) -> wasmtime::Result<T>,
    ) -> Result<T, HookError> {
        let cached = self
            .cache_dir
            .as_ref()
            .map(|d| d.join(format!("{key}.cwasm")));
        if let Some(path) = &cached {
            if let Ok(artifact) = std::fs::read(path) {
                match deserialize(&artifact) {
                    Ok(t) => return Ok(t),
                    Err(e) => {
                        tracing::debug!(path = %path.display(), error = %e, "ignoring unusable cached artifact")
                    }
                }
            }
        }
        let artifact = if component {
            self.engine.precompile_component(bytes)
        } else {
            self.engine.precompile_module(bytes)
        }
        .map_err(|e| HookError::Load(format!("compilation failed: {e:#}")))?;
        if let Some(path) = &cached {
            if let Err(e) = write_atomically(path, &artifact) {
                tracing::warn!(path = %path.display(), error = %e, "cannot cache the compiled hook; it will be compiled again next time");
            }
        }
        deserialize(&artifact)
            .map_err(|e| HookError::Load(format!("loading the compiled module failed: {e:#}")))
    }
}

fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4()));
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path)
}

fn link_error(e: wasmtime::Error) -> HookError {
    HookError::Load(format!("cannot set up the linker: {e:#}"))
}

/// A compiled, linked hook module, ready to instantiate.
pub enum WasmModule {
    Component(Box<HookPre<ComponentState>>),
    Core(InstancePre<CoreState>),
}

/// Host-side state every guest call can reach.
pub struct HostCtx {
    pub name: Arc<str>,
    pub emit: EmitSink,
    /// Hop count of the message being handled; emitted messages get one more.
    pub hops: u8,
    /// Epoch ticks the running call may still use.
    ticks_left: u64,
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

impl HostCtx {
    fn log(&self, level: Level, text: &str) {
        let hook = &*self.name;
        match level {
            Level::Trace => tracing::trace!(hook, "{text}"),
            Level::Debug => tracing::debug!(hook, "{text}"),
            Level::Info => tracing::info!(hook, "{text}"),
            Level::Warn => tracing::warn!(hook, "{text}"),
            Level::Error => tracing::error!(hook, "{text}"),
        }
    }

    fn emit(&self, json: String) -> Result<(), String> {
        (self.emit)(&self.name, json, self.hops.saturating_add(1))
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The machine's host name, read once.
fn bus_host() -> &'static str {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".to_string())
    })
}

/// Store data of a component instance.
pub struct ComponentState {
    host: HostCtx,
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
}

impl WasiView for ComponentState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl bindings::hookbus::hook::types::Host for ComponentState {}

impl bindings::hookbus::hook::host::Host for ComponentState {
    fn log(&mut self, level: Level, text: String) {
        self.host.log(level, &text);
    }

    fn emit(&mut self, message_json: String) -> Result<(), String> {
        self.host.emit(message_json)
    }

    fn hook_name(&mut self) -> String {
        self.host.name.to_string()
    }

    fn now_ms(&mut self) -> u64 {
        now_ms()
    }

    fn bus_host(&mut self) -> String {
        bus_host().to_string()
    }
}

/// Store data of a core-module instance.
pub struct CoreState {
    host: HostCtx,
    wasi: WasiP1Ctx,
    limits: StoreLimits,
}

fn add_core_imports(linker: &mut Linker<CoreState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "hookbus",
        "log",
        |mut caller: wasmtime::Caller<'_, CoreState>, level: i32, ptr: i32, len: i32| {
            let text = read_guest_string(&mut caller, ptr, len)
                .unwrap_or_else(|e| format!("(unreadable log line: {e})"));
            let level = match level {
                0 => Level::Trace,
                1 => Level::Debug,
                2 => Level::Info,
                3 => Level::Warn,
                _ => Level::Error,
            };
            caller.data().host.log(level, &text);
        },
    )?;
    linker.func_wrap(
        "hookbus",
        "emit",
        |mut caller: wasmtime::Caller<'_, CoreState>, ptr: i32, len: i32| -> i32 {
            match read_guest_string(&mut caller, ptr, len) {
                Ok(json) => match caller.data().host.emit(json) {
                    Ok(()) => 0,
                    Err(e) => {
                        tracing::debug!(
                            hook = &*caller.data().host.name,
                            error = e,
                            "emit refused"
                        );
                        1
                    }
                },
                Err(_) => 2,
            }
        },
    )?;
    linker.func_wrap("hookbus", "now_ms", || -> i64 { now_ms() as i64 })?;
    Ok(())
}

fn read_guest_string(
    caller: &mut wasmtime::Caller<'_, CoreState>,
    ptr: i32,
    len: i32,
) -> Result<String, String> {
    let memory = caller
        .get_export("memory")
        .and_then(|e| e.into_memory())
        .ok_or("module exports no memory")?;
    let data = memory.data(&caller);
    let range = (ptr as u32 as usize)..(ptr as u32 as usize).saturating_add(len as u32 as usize);
    let bytes = data.get(range).ok_or("pointer out of bounds")?;
    String::from_utf8(bytes.to_vec()).map_err(|_| "not UTF-8".to_owned())
}

/// Advances the engine's epoch every [`EPOCH_TICK`] while any call is running,
/// and parks when there has been none for a while, so an idle daemon sleeps.
struct Ticker {
    active: AtomicUsize,
    parked: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
}

impl Ticker {
    fn start(engine: Engine) -> Arc<Self> {
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

/// Guest output, one log line per line written.
struct LogOutput {
    hook: Arc<str>,
    stream: &'static str,
}

impl wasmtime_wasi::cli::IsTerminal for LogOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for LogOutput {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(tokio::io::sink())
    }

    fn p2_stream(&self) -> Box<dyn wasmtime_wasi::p2::OutputStream> {
        Box::new(LogStream {
            hook: self.hook.clone(),
            stream: self.stream,
            line: Vec::new(),
        })
    }
}

/// Longest partial line kept before it is logged anyway.
const MAX_LOG_LINE: usize = 4096;

struct LogStream {
    hook: Arc<str>,
    stream: &'static str,
    line: Vec<u8>,
}

impl LogStream {
    fn emit_line(&mut self) {
        let text = String::from_utf8_lossy(&self.line);
        tracing::info!(
            hook = &*self.hook,
            stream = self.stream,
            "{}",
            text.trim_end()
        );
        self.line.clear();
    }
}

impl wasmtime_wasi::p2::OutputStream for LogStream {
    fn write(&mut self, bytes: bytes::Bytes) -> wasmtime_wasi::p2::StreamResult<()> {
        for &b in bytes.iter() {
            if b == b'\n' {
                self.emit_line();
            } else {
                self.line.push(b);
                if self.line.len() >= MAX_LOG_LINE {
                    self.emit_line();
                }
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> wasmtime_wasi::p2::StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> wasmtime_wasi::p2::StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl wasmtime_wasi::p2::Pollable for LogStream {
    async fn ready(&mut self) {}
}

impl Drop for LogStream {
    fn drop(&mut self) {
        if !self.line.is_empty() {
            self.emit_line();
        }
    }
}

/// WASI clocks for guests without the `clock` grant: always zero.
struct ZeroClock;

impl wasmtime_wasi::HostWallClock for ZeroClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl wasmtime_wasi::HostMonotonicClock for ZeroClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

fn wasi_builder(hook: &HookConfig) -> Result<WasiCtxBuilder, HookError> {
    let name: Arc<str> = hook.name.as_str().into();
    let mut b = WasiCtxBuilder::new();
    b.stdout(LogOutput {
        hook: name.clone(),
        stream: "stdout",
    });
    b.stderr(LogOutput {
        hook: name,
        stream: "stderr",
    });
    for var in &hook.grants.env {
        if let Ok(value) = std::env::var(var) {
            b.env(var, value);
        }
    }
    for dir in &hook.grants.dirs {
        let guest = dir
            .guest
            .clone()
            .unwrap_or_else(|| dir.host.to_string_lossy().into_owned());
        let perms = match dir.mode {
            DirMode::Ro => FsPerms::ReadOnly,
            DirMode::Rw => FsPerms::ReadWrite,
        };
        b.preopened_dir(&dir.host, &guest, perms)
            .map_err(|e| HookError::Load(format!("cannot grant {}: {e}", dir.host.display())))?;
    }
    if !hook.grants.clock {
        b.wall_clock(ZeroClock);
        b.monotonic_clock(ZeroClock);
    }
    Ok(b)
}

/// A warm instance in its own store.
pub struct WasmInstance {
    ticker: Arc<Ticker>,
    timeout_ticks: u64,
    kind: InstanceKind,
}

enum InstanceKind {
    Component {
        store: Store<ComponentState>,
        bindings: Hook,
        instance: wasmtime::component::Instance,
        /// `handle-batch`, when the guest exports it.
        batch: Option<BatchFunc>,
    },
    Core {
        store: Store<CoreState>,
        memory: Memory,
        alloc: TypedFunc<i32, i32>,
        handle: TypedFunc<(i32, i32), i64>,
    },
}

type BatchFunc = wasmtime::component::TypedFunc<(Vec<Message>,), (Vec<wit::Verdict>,)>;

impl From<wit::Verdict> for Verdict {
    fn from(v: wit::Verdict) -> Self {
        match v {
            wit::Verdict::Pass => Verdict::Pass,
            wit::Verdict::Drop(reason) => Verdict::Drop(reason),
            wit::Verdict::Replace(json) => Verdict::Replace(json),
        }
    }
}

/// What `handle` got: the routing fields and the JSON text.
pub struct MessageView<'a> {
    pub kind: &'a str,
    pub to: Option<&'a str>,
    pub from: Option<&'a str>,
    pub id: Option<&'a str>,
    pub json: &'a str,
}

impl MessageView<'_> {
    /// The contract's `message` record, as lowered into the guest.
    fn to_wit(&self) -> Message {
        Message {
            envelope: Envelope {
                kind: self.kind.to_owned(),
                to: self.to.map(str::to_owned),
                from: self.from.map(str::to_owned),
                id: self.id.map(str::to_owned),
            },
            json: self.json.to_owned(),
        }
    }
}

/// Counts a call as running (for the ticker) until dropped, so a call whose future
/// is dropped midway is still counted out.
struct Running<'a>(&'a Ticker);

impl<'a> Running<'a> {
    fn new(ticker: &'a Ticker) -> Self {
        ticker.enter();
        Self(ticker)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.exit();
    }
}

impl WasmInstance {
    /// Instantiates `module` for `hook` and calls its `init` with the hook's config.
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
        let host = HostCtx {
            name: hook.name.as_str().into(),
            emit,
            hops: 0,
            ticks_left: 0,
        };
        let ticks = |d: Duration| d.as_micros().div_ceil(EPOCH_TICK.as_micros()).max(1) as u64;
        let timeout_ticks = ticks(hook.timeout);
        // Instantiation and `init` may build tables or parse config: they get at
        // least INIT_BUDGET, whatever the per-message limit.
        let init_budget = hook.timeout.max(INIT_BUDGET);
        let init_ticks = ticks(init_budget);
        let in_init = |during: &'static str| {
            move |e: wasmtime::Error| match classify(e, during) {
                HookError::Timeout => HookError::Init(format!(
                    "{during} did not finish within {} ms",
                    init_budget.as_millis()
                )),
                other => other,
            }
        };
        let _running = Running::new(&engine.ticker);
        match module {
            WasmModule::Component(pre) => {
                let state = ComponentState {
                    host,
                    wasi: wasi_builder(hook)?.build(),
                    table: ResourceTable::new(),
                    limits,
                };
                let mut store = new_store(&engine.engine, state);
                arm(&mut store, init_ticks);
                let instance = pre
                    .instance_pre()
                    .instantiate_async(&mut store)
                    .await
                    .map_err(in_init("instantiation"))?;
                let bindings =
                    Hook::new(&mut store, &instance).map_err(|e| classify(e, "instantiation"))?;
                arm(&mut store, init_ticks);
                match bindings
                    .call_init(&mut store, &hook.config)
                    .await
                    .map_err(in_init("init"))?
                {
                    Ok(()) => {}
                    Err(e) => return Err(HookError::Init(e)),
                }
                // World `hook-batch` adds `handle-batch`; plain `hook` guests lack it.
                let batch: Option<BatchFunc> =
                    instance.get_typed_func(&mut store, "handle-batch").ok();
                Ok(WasmInstance {
                    ticker: engine.ticker.clone(),
                    timeout_ticks,
                    kind: InstanceKind::Component {
                        store,
                        bindings,
                        instance,
                        batch,
                    },
                })
            }
            WasmModule::Core(pre) => {
                let state = CoreState {
                    host,
                    wasi: wasi_builder(hook)?.build_p1(),
                    limits,
                };
                let mut store = new_store(&engine.engine, state);
                arm(&mut store, init_ticks);
                let instance: Instance = pre
                    .instantiate_async(&mut store)
                    .await
                    .map_err(in_init("instantiation"))?;
                let memory = instance
                    .get_memory(&mut store, "memory")
                    .ok_or_else(|| HookError::Load("the module exports no memory".into()))?;
                let alloc = instance
                    .get_typed_func::<i32, i32>(&mut store, "alloc")
                    .map_err(|e| HookError::Load(format!("`alloc` must be (i32) -> i32: {e}")))?;
                let handle = instance
                    .get_typed_func::<(i32, i32), i64>(&mut store, "handle")
                    .map_err(|e| {
                        HookError::Load(format!("`handle` must be (i32, i32) -> i64: {e}"))
                    })?;
                if let Ok(init) = instance.get_typed_func::<(i32, i32), i32>(&mut store, "init") {
                    arm(&mut store, init_ticks);
                    let ptr =
                        write_guest(&mut store, &memory, &alloc, hook.config.as_bytes()).await?;
                    let code = init
                        .call_async(&mut store, (ptr, hook.config.len() as i32))
                        .await
                        .map_err(in_init("init"))?;
                    if code != 0 {
                        return Err(HookError::Init(format!("init returned {code}")));
                    }
                }
                Ok(WasmInstance {
                    ticker: engine.ticker.clone(),
                    timeout_ticks,
                    kind: InstanceKind::Core {
                        store,
                        memory,
                        alloc,
                        handle,
                    },
                })
            }
        }
    }

    /// Calls `handle`. `hops` is the message's hop count, for messages it emits.
    pub async fn handle(&mut self, msg: &MessageView<'_>, hops: u8) -> Result<Verdict, HookError> {
        let _running = Running::new(&self.ticker);
        match &mut self.kind {
            InstanceKind::Component {
                store, bindings, ..
            } => {
                store.data_mut().host.hops = hops;
                arm(store, self.timeout_ticks);
                let verdict = bindings
                    .call_handle(&mut *store, &msg.to_wit())
                    .await
                    .map_err(|e| classify(e, "handle"))?;
                Ok(verdict.into())
            }
            InstanceKind::Core {
                store,
                memory,
                alloc,
                handle,
            } => {
                store.data_mut().host.hops = hops;
                arm(store, self.timeout_ticks);
                let ptr = write_guest(store, memory, alloc, msg.json.as_bytes()).await?;
                let packed = handle
                    .call_async(&mut *store, (ptr, msg.json.len() as i32))
                    .await
                    .map_err(|e| classify(e, "handle"))?;
                if packed == 0 {
                    return Ok(Verdict::Pass);
                }
                let (ptr, len) = (
                    (packed as u64 >> 32) as usize,
                    (packed as u64 & 0xffff_ffff) as usize,
                );
                let bytes = memory
                    .data(&*store)
                    .get(ptr..ptr.saturating_add(len))
                    .ok_or_else(|| {
                        HookError::BadVerdict("handle returned a pointer outside memory".into())
                    })?;
                core_verdict(bytes)
            }
        }
    }

    /// Whether the guest takes whole batches (`handle-batch`, world `hook-batch`).
    pub fn batches(&self) -> bool {
        matches!(&self.kind, InstanceKind::Component { batch: Some(_), .. })
    }

    /// Decides on `msgs` in one call of `handle-batch` (see `batches`); `hops` is
    /// the largest hop count among them. The deadline is the per-message one times
    /// the number of messages.
    pub async fn handle_batch(
        &mut self,
        msgs: &[MessageView<'_>],
        hops: u8,
    ) -> Result<Vec<Verdict>, HookError> {
        let InstanceKind::Component {
            store,
            batch: Some(func),
            ..
        } = &mut self.kind
        else {
            return Err(HookError::Trap("handle-batch: not exported".into()));
        };
        let _running = Running::new(&self.ticker);
        store.data_mut().host.hops = hops;
        arm(store, self.timeout_ticks.saturating_mul(msgs.len() as u64));
        let messages = msgs.iter().map(MessageView::to_wit).collect();
        let (verdicts,) = func
            .call_async(&mut *store, (messages,))
            .await
            .map_err(|e| classify(e, "handle-batch"))?;
        if verdicts.len() != msgs.len() {
            return Err(HookError::BadVerdict(format!(
                "handle-batch returned {} verdicts for {} messages",
                verdicts.len(),
                msgs.len()
            )));
        }
        Ok(verdicts.into_iter().map(Verdict::from).collect())
    }

    /// Calls the optional `health` export (components only).
    pub async fn health(&mut self) -> Option<Result<(), String>> {
        let InstanceKind::Component {
            store, instance, ..
        } = &mut self.kind
        else {
            return None;
        };
        let func = instance
            .get_typed_func::<(), (Result<(), String>,)>(&mut *store, "health")
            .ok()?;
        let _running = Running::new(&self.ticker);
        arm(store, self.timeout_ticks);
        Some(match func.call_async(&mut *store, ()).await {
            Ok((r,)) => r,
            Err(e) => Err(format!("health trapped: {e}")),
        })
    }

    /// Calls the optional `shutdown` export, then drops the instance.
    pub async fn shutdown(mut self) {
        let InstanceKind::Component {
            store, instance, ..
        } = &mut self.kind
        else {
            return;
        };
        if let Ok(func) = instance.get_typed_func::<(), ()>(&mut *store, "shutdown") {
            let _running = Running::new(&self.ticker);
            arm(store, self.timeout_ticks);
            let _ = func.call_async(&mut *store, ()).await;
        }
    }
}

/// Store data that carries the host context and the memory limiter.
trait HostData: Send + 'static {
    fn host(&mut self) -> &mut HostCtx;
    fn limits(&mut self) -> &mut StoreLimits;
}

impl HostData for ComponentState {
    fn host(&mut self) -> &mut HostCtx {
        &mut self.host
    }
    fn limits(&mut self) -> &mut StoreLimits {
        &mut self.limits
    }
}

impl HostData for CoreState {
    fn host(&mut self) -> &mut HostCtx {
        &mut self.host
    }
    fn limits(&mut self) -> &mut StoreLimits {
        &mut self.limits
    }
}

/// A store with the memory cap and the epoch budget wired in.
fn new_store<T: HostData>(engine: &Engine, data: T) -> Store<T> {
    let mut store = Store::new(engine, data);
    store.limiter(|s| s.limits());
    store.epoch_deadline_callback(|mut cx| budget_tick(cx.data_mut().host()));
    store
}

/// Gives the next call its full budget of `ticks`.
fn arm<T: HostData>(store: &mut Store<T>, ticks: u64) {
    store.data_mut().host().ticks_left = ticks;
    store.set_epoch_deadline(1);
}

async fn write_guest(
    store: &mut Store<CoreState>,
    memory: &Memory,
    alloc: &TypedFunc<i32, i32>,
    data: &[u8],
) -> Result<i32, HookError> {
    let ptr = alloc
        .call_async(&mut *store, data.len() as i32)
        .await
        .map_err(|e| classify(e, "alloc"))?;
    memory
        .write(&mut *store, ptr as u32 as usize, data)
        .map_err(|_| HookError::BadVerdict("alloc returned a pointer outside memory".into()))?;
    Ok(ptr)
}

/// Core ABI verdicts: `{"drop":"reason"}`, `{"replace":{…message…}}` or `{"pass":true}`.
fn core_verdict(bytes: &[u8]) -> Result<Verdict, HookError> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| HookError::BadVerdict(format!("handle returned invalid JSON: {e}")))?;
    if let Some(reason) = value.get("drop") {
        return Ok(Verdict::Drop(
            reason
                .as_str()
                .map_or_else(|| reason.to_string(), str::to_owned),
        ));
    }
    if let Some(message) = value.get("replace") {
        return Ok(Verdict::Replace(message.to_string()));
    }
    if value.get("pass").is_some() {
        return Ok(Verdict::Pass);
    }
    Err(HookError::BadVerdict(format!(
        "handle returned {value}; expected {{\"pass\":true}}, {{\"drop\":…}} or {{\"replace\":…}}"
    )))
}

/// Turns a wasmtime error into a [`HookError`]: deadline, memory cap, or trap.
fn classify(e: wasmtime::Error, during: &str) -> HookError {
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
