//! The hook engine: hooks that filter, enrich and notify around every routed
//! message.
//!
//! # Layout
//! - [`config`]: hooks.yaml and env-var hook lists, validated into [`config::HookConfig`]s.
//! - [`set`]: one immutable, loaded generation of hooks ([`HookSet`]) and one call
//!   of one hook; [`pool`] keeps a WASM hook's warm instances, [`stats`] its
//!   counters and breaker.
//! - [`fields`]: the routing fields hooks match on, read without parsing the body.
//! - [`chain`]: the filter chain over one read's messages, and notify hooks.
//! - [`wasm`]: the wasmtime host (components and core modules, CPU and wall-time
//!   deadlines, memory caps, deny-by-default WASI); [`process`]: subprocess hooks
//!   (spawn and worker) and the reaper.
//! - [`runtime`]: where hooks run in the daemon. A connection's reader runs the
//!   filter chain on each read, on its own task (each sender's order holds), before
//!   handing the batch to the router. After routing, the router queues the message
//!   for the notify task. Hooks' `emit`s enter the router through [`EmitSink`] as
//!   new messages with a hop count.
//! - [`reload`]: watches the config and the hooks' files, builds a new set off the
//!   routing path and swaps it in; a bad set leaves the last good one in force.

pub mod chain;
pub mod config;
pub mod fields;
pub mod guest_log;
pub mod pool;
pub mod process;
pub mod reload;
pub mod runtime;
pub mod set;
pub mod stats;
pub mod wasm;

use std::sync::Arc;
use std::time::Duration;

pub use chain::{run_filters, run_notify, Pending};
pub use fields::{FieldStrs, Fields};
pub use set::{call, CallContext, HookSet, LoadedHook, LoadedRunner};

/// Most hops an emitted message may be from a client's message; deeper emits are
/// refused, which cuts hook loops.
pub const MAX_HOPS: u8 = 4;

/// Most messages a hook may emit while handling one client's message; more are
/// refused.
pub const MAX_EMITS_PER_MESSAGE: usize = 16;

/// Emits a hook may make while handling a message with `hops` hops: a client's
/// message allows [`MAX_EMITS_PER_MESSAGE`], a message a hook emitted only one, so
/// a hook that reacts to its own emits makes a chain, not a storm (with
/// [`MAX_HOPS`], at most 16 + 3 messages per hook from one client message).
pub fn emit_allowance(hops: u8) -> usize {
    if hops == 0 {
        MAX_EMITS_PER_MESSAGE
    } else {
        1
    }
}

/// The longest deadline of one batched call (`handle-batch`, a worker exchange),
/// unless the hook's own per-message timeout is longer.
pub const MAX_BATCH_DEADLINE: Duration = Duration::from_secs(1);

/// The deadline of one call handling `n` messages: `timeout` each, capped at
/// [`MAX_BATCH_DEADLINE`] (or `timeout`, if longer).
pub fn batch_deadline(timeout: Duration, n: usize) -> Duration {
    let n = u32::try_from(n.max(1)).unwrap_or(u32::MAX);
    timeout
        .saturating_mul(n)
        .min(timeout.max(MAX_BATCH_DEADLINE))
}

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

/// Why a hook set could not be loaded (the set in force, if any, stays).
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("hook `{hook}`: {error}")]
    Hook { hook: String, error: HookError },
    #[error("the config kept changing while it was loaded; the next change loads it again")]
    Unsettled,
    #[error("cannot start the hook engine: {0}")]
    Engine(HookError),
    #[error("hot reload is off: {0}")]
    Watch(String),
}

/// Where hooks' `emit` calls go: (hook name, message JSON, hop count). The router
/// side is [`runtime`]'s; `hookbus hooks test` prints instead.
pub type EmitSink = Arc<dyn Fn(&str, String, u8) -> Result<(), String> + Send + Sync>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_deadlines_are_capped() {
        let ms = Duration::from_millis;
        assert_eq!(batch_deadline(ms(5), 1), ms(5));
        assert_eq!(batch_deadline(ms(5), 10), ms(50));
        assert_eq!(batch_deadline(ms(5), 1_000_000), MAX_BATCH_DEADLINE);
        assert_eq!(batch_deadline(ms(5000), 100), ms(5000));
        assert_eq!(batch_deadline(ms(5), 0), ms(5));
    }
}
