//! The one wasmtime [`Engine`], its on-disk artifact cache, and loading a hook's
//! file into a linked, ready-to-instantiate [`WasmModule`].

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf};
use wasmtime::{Config, Engine, InstancePre, Linker, Module};

use super::bindings::{Hook, HookPre};
use super::component::ComponentState;
use super::core_module::{self, CoreState};
use super::ticker::Ticker;
use crate::hooks::HookError;

/// Largest module file a hook may name; checked before the file is read.
pub const MAX_MODULE_BYTES: u64 = 256 << 20;

/// The shared engine and its artifact cache.
#[derive(Clone)]
pub struct WasmEngine {
    pub(super) engine: Engine,
    cache_dir: Option<PathBuf>,
    pub(super) ticker: Arc<Ticker>,
}

impl std::fmt::Debug for WasmEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmEngine")
            .field("cache_dir", &self.cache_dir)
            .finish()
    }
}

/// A compiled, linked hook module, ready to instantiate.
pub enum WasmModule {
    Component(Box<HookPre<ComponentState>>),
    Core(InstancePre<CoreState>),
}

/// The default artifact cache: `$XDG_CACHE_HOME/hookbus/wasm` or `~/.cache/hookbus/wasm`.
pub fn default_cache_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
        .map(|d| d.join("hookbus").join("wasm"))
}

/// Reads a module file, refusing one over [`MAX_MODULE_BYTES`] before reading it.
pub fn read_module(path: &Path) -> Result<Vec<u8>, HookError> {
    let cannot =
        |e: std::io::Error| HookError::Load(format!("cannot read {}: {e}", path.display()));
    let size = std::fs::metadata(path).map_err(cannot)?.len();
    if size > MAX_MODULE_BYTES {
        return Err(HookError::Load(format!(
            "{} is {size} bytes; a hook module may be at most {MAX_MODULE_BYTES} bytes",
            path.display()
        )));
    }
    std::fs::read(path).map_err(cannot)
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

    /// Compiles (or loads from the cache) and links the module at `path`.
    pub fn load(&self, path: &Path) -> Result<WasmModule, HookError> {
        let raw = read_module(path)?;
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
            core_module::add_imports(&mut linker).map_err(link_error)?;
            let pre = linker.instantiate_pre(&module).map_err(|e| {
                HookError::Load(format!("{} cannot be linked: {e:#} (core modules may import `hookbus` log/emit/now_ms and WASI preview 1)", path.display()))
            })?;
            core_module::check_exports(&module)
                .map_err(|e| HookError::Load(format!("{}: {e}", path.display())))?;
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
