//! A WASM hook's warm instances: at most `limits.instances` alive at once (idle
//! and in calls together); a call beyond waits for one, which back-pressures only
//! its sender. An instance goes back to the pool only after a call that
//! succeeded; one that failed (trap, deadline, memory) is dropped with its store.

use std::sync::Mutex;

use tokio::sync::{Semaphore, SemaphorePermit};

use super::wasm::WasmInstance;
use super::HookError;

pub struct Pool {
    /// Idle instances. Held only to pop or push.
    idle: Mutex<Vec<WasmInstance>>,
    /// One permit per instance alive in a call.
    live: Semaphore,
}

/// An instance taken from the pool for one call.
pub struct Lease<'a> {
    pool: &'a Pool,
    pub instance: WasmInstance,
    _permit: SemaphorePermit<'a>,
}

impl Pool {
    pub fn new(instances: usize, first: Option<WasmInstance>) -> Self {
        Self {
            idle: Mutex::new(first.into_iter().collect()),
            live: Semaphore::new(instances),
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<WasmInstance>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An idle instance, or a new one from `make` while under the cap; waits for
    /// one otherwise.
    pub async fn take<F>(&self, make: impl FnOnce() -> F) -> Result<Lease<'_>, HookError>
    where
        F: std::future::Future<Output = Result<WasmInstance, HookError>>,
    {
        let permit = self
            .live
            .acquire()
            .await
            .map_err(|_| HookError::Process("the hook is shutting down".into()))?;
        let idle = self.idle().pop();
        let instance = match idle {
            Some(instance) => instance,
            None => make().await?,
        };
        Ok(Lease {
            pool: self,
            instance,
            _permit: permit,
        })
    }

    /// Instances alive now: in calls and idle.
    pub fn live(&self, cap: usize) -> usize {
        cap - self.live.available_permits() + self.idle().len()
    }

    /// Takes every idle instance (to shut them down).
    pub fn drain(&self) -> Vec<WasmInstance> {
        std::mem::take(&mut *self.idle())
    }
}

impl Lease<'_> {
    /// Returns the instance to the pool after a call that succeeded.
    pub fn keep(self) {
        self.pool.idle().push(self.instance);
    }
}
