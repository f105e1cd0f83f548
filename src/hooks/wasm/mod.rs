//! The WASM host: one wasmtime engine, compiled artifacts cached on disk, and
//! warm, sandboxed instances.
//!
//! Two kinds of guest are accepted, told apart by their header:
//! - **components** implementing `wit/hook.wit` ([`component`]), through bindings
//!   generated from that file;
//! - **core modules** speaking the plain ABI of docs/HOOKS.md ([`core_module`]),
//!   for languages without component tooling (AssemblyScript, Zig, Go, WAT).
//!
//! [`engine`] compiles and links; [`instance`] calls, each call bounded in CPU
//! ([`ticker`]) and wall time; [`host`] is what guests can call back; [`wasi`] is
//! the deny-by-default WASI they see. Calls are async and run on the calling task
//! (a connection's reader, for filters), so a fast call costs no thread hop.

mod component;
mod core_module;
mod engine;
mod host;
mod instance;
mod ticker;
mod wasi;

pub use engine::{default_cache_dir, read_module, WasmEngine, WasmModule, MAX_MODULE_BYTES};
pub use instance::{MessageView, WasmInstance, INIT_BUDGET, WALL_SLACK};
pub use ticker::EPOCH_TICK;

/// Bindings generated from `wit/hook.wit`, the single source of the contract.
mod bindings {
    wasmtime::component::bindgen!({ world: "hook", path: "wit", exports: { default: async } });
}
