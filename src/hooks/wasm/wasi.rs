//! The WASI a guest sees: nothing granted unless hooks.yaml says so (no preopened
//! dirs, no env, no network); real clocks unless `grants.clock: false`; stdout and
//! stderr into the log through [`guest_log`].

use std::sync::Arc;
use std::time::Duration;

use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use crate::hooks::config::{DirMode, HookConfig};
use crate::hooks::guest_log::{self, MAX_LOG_LINE};
use crate::hooks::HookError;

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

struct LogStream {
    hook: Arc<str>,
    stream: &'static str,
    line: Vec<u8>,
}

impl LogStream {
    fn emit_line(&mut self) {
        let text = String::from_utf8_lossy(&self.line);
        guest_log::line(&self.hook, self.stream, tracing::Level::INFO, &text);
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

/// WASI clocks for guests with `grants.clock: false`: always zero.
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

/// The WASI context of `hook`, as its grants allow.
pub(super) fn builder(hook: &HookConfig) -> Result<WasiCtxBuilder, HookError> {
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
    if !hook.grants.clock() {
        b.wall_clock(ZeroClock);
        b.monotonic_clock(ZeroClock);
    }
    Ok(b)
}
