//! Calls into a core module speaking the plain ABI of docs/HOOKS.md: exports
//! `memory`, `alloc(len) -> ptr`, `handle(ptr, len) -> i64` (verdict `ptr << 32 |
//! len`, 0 for pass), optional `init(ptr, len) -> i32` and `_initialize` (WASI
//! reactors); imports from module `hookbus` (`log`, `emit`, `now_ms`) and WASI
//! preview 1.

use wasmtime::{Instance, InstancePre, Linker, Memory, Module, Store, StoreLimits, TypedFunc};
use wasmtime_wasi::p1::WasiP1Ctx;

use super::bindings::hookbus::hook::types::Level;
use super::host::{HostCtx, HostData};
use super::instance::{classify, MessageView};
use crate::hooks::{HookError, Verdict};

/// Store data of a core-module instance.
pub struct CoreState {
    pub(super) host: HostCtx,
    pub(super) wasi: WasiP1Ctx,
    limits: StoreLimits,
}

impl CoreState {
    pub(super) fn new(host: HostCtx, wasi: WasiP1Ctx, limits: StoreLimits) -> Self {
        Self { host, wasi, limits }
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

/// Checks the exports the ABI needs, and refuses a WASI command module.
pub(super) fn check_exports(module: &Module) -> Result<(), String> {
    if module.get_export("_start").is_some() && module.get_export("_initialize").is_none() {
        return Err(
            "is a WASI command (it exports `_start`), which runs once and exits; \
            build it as a reactor instead: Go `-buildmode=c-shared`, C `-mexec-model=reactor`, \
            Zig `-fno-entry`, Rust `crate-type = [\"cdylib\"]` (see docs/HOOKS.md)"
                .into(),
        );
    }
    for (name, what) in [
        ("memory", "its memory"),
        ("alloc", "alloc(len: i32) -> i32"),
        ("handle", "handle(ptr: i32, len: i32) -> i64"),
    ] {
        if module.get_export(name).is_none() {
            return Err(format!(
                "is a core module but does not export `{name}` ({what}); see docs/HOOKS.md"
            ));
        }
    }
    Ok(())
}

pub(super) fn add_imports(linker: &mut Linker<CoreState>) -> wasmtime::Result<()> {
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
                Ok(json) => match caller.data_mut().host.emit(json) {
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
    linker.func_wrap(
        "hookbus",
        "now_ms",
        |caller: wasmtime::Caller<'_, CoreState>| -> i64 { caller.data().host.now_ms() as i64 },
    )?;
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

/// A live core-module instance in its own store.
pub struct CoreInstance {
    store: Store<CoreState>,
    memory: Memory,
    alloc: TypedFunc<i32, i32>,
    handle: TypedFunc<(i32, i32), i64>,
}

impl CoreInstance {
    /// Instantiates, runs `_initialize` when exported (a WASI reactor's runtime
    /// set-up), then `init` with `config`, on the budget already armed.
    pub(super) async fn start(
        mut store: Store<CoreState>,
        pre: &InstancePre<CoreState>,
        config: &str,
    ) -> Result<Self, HookError> {
        let instance: Instance = pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| classify(e, "instantiation"))?;
        if let Ok(initialize) = instance.get_typed_func::<(), ()>(&mut store, "_initialize") {
            initialize
                .call_async(&mut store, ())
                .await
                .map_err(|e| classify(e, "_initialize"))?;
        }
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| HookError::Load("the module exports no memory".into()))?;
        let alloc = instance
            .get_typed_func::<i32, i32>(&mut store, "alloc")
            .map_err(|e| HookError::Load(format!("`alloc` must be (i32) -> i32: {e}")))?;
        let handle = instance
            .get_typed_func::<(i32, i32), i64>(&mut store, "handle")
            .map_err(|e| HookError::Load(format!("`handle` must be (i32, i32) -> i64: {e}")))?;
        let mut this = Self {
            store,
            memory,
            alloc,
            handle,
        };
        if let Ok(init) = instance.get_typed_func::<(i32, i32), i32>(&mut this.store, "init") {
            let ptr = this.write(config.as_bytes()).await?;
            let code = init
                .call_async(&mut this.store, (ptr, config.len() as i32))
                .await
                .map_err(|e| classify(e, "init"))?;
            if code != 0 {
                return Err(HookError::Init(format!("init returned {code}")));
            }
        }
        Ok(this)
    }

    pub(super) fn store(&mut self) -> &mut Store<CoreState> {
        &mut self.store
    }

    /// Copies `data` into a buffer the guest's `alloc` gave.
    async fn write(&mut self, data: &[u8]) -> Result<i32, HookError> {
        let ptr = self
            .alloc
            .call_async(&mut self.store, data.len() as i32)
            .await
            .map_err(|e| classify(e, "alloc"))?;
        self.memory
            .write(&mut self.store, ptr as u32 as usize, data)
            .map_err(|_| HookError::BadVerdict("alloc returned a pointer outside memory".into()))?;
        Ok(ptr)
    }

    pub(super) async fn handle(&mut self, msg: &MessageView<'_>) -> Result<Verdict, HookError> {
        let ptr = self.write(msg.json.as_bytes()).await?;
        let packed = self
            .handle
            .call_async(&mut self.store, (ptr, msg.json.len() as i32))
            .await
            .map_err(|e| classify(e, "handle"))?;
        if packed == 0 {
            return Ok(Verdict::Pass);
        }
        let (ptr, len) = (
            (packed as u64 >> 32) as usize,
            (packed as u64 & 0xffff_ffff) as usize,
        );
        let bytes = self
            .memory
            .data(&self.store)
            .get(ptr..ptr.saturating_add(len))
            .ok_or_else(|| {
                HookError::BadVerdict("handle returned a pointer outside memory".into())
            })?;
        verdict(bytes)
    }
}

/// Core ABI verdicts: `{"drop":"reason"}`, `{"replace":{…message…}}` or `{"pass":true}`.
fn verdict(bytes: &[u8]) -> Result<Verdict, HookError> {
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
