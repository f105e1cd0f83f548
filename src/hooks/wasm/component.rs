//! Calls into a component implementing `wit/hook.wit` (worlds `hook`,
//! `hook-with-lifecycle`, `hook-batch`), through the generated bindings.

use wasmtime::component::ResourceTable;
use wasmtime::{Store, StoreLimits};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::hookbus::hook::types::{self as wit, Envelope, Level, Message};
use super::bindings::{Hook, HookPre};
use super::host::{self, HostCtx, HostData};
use super::instance::{classify, MessageView};
use crate::hooks::{HookError, Verdict};

/// Store data of a component instance.
pub struct ComponentState {
    pub(super) host: HostCtx,
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
}

impl ComponentState {
    pub(super) fn new(host: HostCtx, wasi: WasiCtx, limits: StoreLimits) -> Self {
        Self {
            host,
            wasi,
            table: ResourceTable::new(),
            limits,
        }
    }
}

impl WasiView for ComponentState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl HostData for ComponentState {
    fn host(&mut self) -> &mut HostCtx {
        &mut self.host
    }
    fn limits(&mut self) -> &mut StoreLimits {
        &mut self.limits
    }
}

impl wit::Host for ComponentState {}

impl super::bindings::hookbus::hook::host::Host for ComponentState {
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
        self.host.now_ms()
    }

    fn bus_host(&mut self) -> String {
        host::bus_host().to_string()
    }
}

impl From<wit::Verdict> for Verdict {
    fn from(v: wit::Verdict) -> Self {
        match v {
            wit::Verdict::Pass => Verdict::Pass,
            wit::Verdict::Drop(reason) => Verdict::Drop(reason),
            wit::Verdict::Replace(json) => Verdict::Replace(json),
        }
    }
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

type BatchFunc = wasmtime::component::TypedFunc<(Vec<Message>,), (Vec<wit::Verdict>,)>;

/// A live component instance in its own store.
pub struct ComponentInstance {
    store: Store<ComponentState>,
    bindings: Hook,
    instance: wasmtime::component::Instance,
    /// `handle-batch`, when the guest exports it.
    batch: Option<BatchFunc>,
}

impl ComponentInstance {
    /// Instantiates and calls `init` with `config`, on the budget already armed.
    pub(super) async fn start(
        mut store: Store<ComponentState>,
        pre: &HookPre<ComponentState>,
        config: &str,
    ) -> Result<Self, HookError> {
        let instance = pre
            .instance_pre()
            .instantiate_async(&mut store)
            .await
            .map_err(|e| classify(e, "instantiation"))?;
        let bindings =
            Hook::new(&mut store, &instance).map_err(|e| classify(e, "instantiation"))?;
        bindings
            .call_init(&mut store, config)
            .await
            .map_err(|e| classify(e, "init"))?
            .map_err(HookError::Init)?;
        // World `hook-batch` adds `handle-batch`; plain `hook` guests lack it.
        let batch: Option<BatchFunc> = instance.get_typed_func(&mut store, "handle-batch").ok();
        Ok(Self {
            store,
            bindings,
            instance,
            batch,
        })
    }

    pub(super) fn store(&mut self) -> &mut Store<ComponentState> {
        &mut self.store
    }

    pub(super) fn batches(&self) -> bool {
        self.batch.is_some()
    }

    pub(super) async fn handle(&mut self, msg: &MessageView<'_>) -> Result<Verdict, HookError> {
        let verdict = self
            .bindings
            .call_handle(&mut self.store, &msg.to_wit())
            .await
            .map_err(|e| classify(e, "handle"))?;
        Ok(verdict.into())
    }

    pub(super) async fn handle_batch(
        &mut self,
        msgs: &[MessageView<'_>],
    ) -> Result<Vec<Verdict>, HookError> {
        let Some(func) = &self.batch else {
            return Err(HookError::Trap("handle-batch: not exported".into()));
        };
        let messages = msgs.iter().map(MessageView::to_wit).collect();
        let (verdicts,) = func
            .call_async(&mut self.store, (messages,))
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

    /// The optional `health` export (world `hook-with-lifecycle`).
    pub(super) async fn health(&mut self) -> Option<Result<(), String>> {
        let func = self
            .instance
            .get_typed_func::<(), (Result<(), String>,)>(&mut self.store, "health")
            .ok()?;
        Some(match func.call_async(&mut self.store, ()).await {
            Ok((r,)) => r,
            Err(e) => Err(format!("health failed: {}", classify(e, "health"))),
        })
    }

    /// The optional `shutdown` export.
    pub(super) async fn shutdown(&mut self) {
        if let Ok(func) = self
            .instance
            .get_typed_func::<(), ()>(&mut self.store, "shutdown")
        {
            let _ = func.call_async(&mut self.store, ()).await;
        }
    }
}
