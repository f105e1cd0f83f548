//! Spawn hooks: one process per message, the message JSON on stdin, hermes-bus
//! style. At most `limits.concurrency` run at once; the others wait in a backlog
//! of `limits.backlog` runs and [`BACKLOG_BYTES`]. When the backlog is full,
//! `limits.overflow` decides: `skip` counts and logs the run (at most once a
//! second), `block` makes the sending connection wait for room (see
//! `HookRuntime::admit`). A run writes stdin, drains stdout and stderr (keeping a
//! bounded tail for the log) and waits, all at once and within `timeout_ms`; a
//! run that misses it has its process group killed.

use std::process::Stdio;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, Semaphore};
use tracing::warn;

use super::{command, kill_group, reaper, start};
use crate::hooks::config::{HookConfig, Overflow};
use crate::hooks::guest_log;
use crate::hooks::HookError;

/// Bytes of message JSON a spawn hook's backlog may hold, whatever its run count.
pub const BACKLOG_BYTES: usize = 64 << 20;

/// Bytes of a run's stdout and stderr kept (the end) for the log.
pub const OUTPUT_TAIL: usize = 16 * 1024;

/// Skips are logged at most this often, with the count since the last line.
const SKIP_LOG_EVERY: Duration = Duration::from_secs(1);

/// A spawn-mode hook.
pub struct SpawnHook {
    hook: Arc<HookConfig>,
    argv: Vec<String>,
    slots: Arc<Semaphore>,
    queued_runs: AtomicUsize,
    queued_bytes: AtomicUsize,
    /// Woken whenever a run leaves the backlog.
    room: Notify,
    /// Runs skipped because the backlog was full.
    pub skipped: AtomicU64,
    /// `skipped` when the last skip line was logged, and when.
    skip_log: std::sync::Mutex<(u64, Option<Instant>)>,
}

impl SpawnHook {
    pub fn new(hook: Arc<HookConfig>, argv: Vec<String>) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(hook.concurrency)),
            hook,
            argv,
            queued_runs: AtomicUsize::new(0),
            queued_bytes: AtomicUsize::new(0),
            room: Notify::new(),
            skipped: AtomicU64::new(0),
            skip_log: std::sync::Mutex::new((0, None)),
        }
    }

    /// Whether the backlog can take another run of `bytes`.
    fn has_room(&self, bytes: usize) -> bool {
        self.queued_runs.load(Ordering::SeqCst) < self.hook.backlog
            && self.queued_bytes.load(Ordering::SeqCst) + bytes <= BACKLOG_BYTES
    }

    /// Whether a full backlog makes senders wait (`overflow: block`).
    pub fn blocks(&self) -> bool {
        self.hook.overflow == Overflow::Block
    }

    /// Waits until the backlog has room (for `overflow: block`).
    pub async fn wait_room(&self) {
        loop {
            let notified = self.room.notified();
            if self.has_room(0) {
                return;
            }
            notified.await;
        }
    }

    /// Queues one run with `input` on stdin; `done` gets its outcome. With a full
    /// backlog, `skip` counts the run and returns false; `block` queues it anyway
    /// (its senders already waited for room).
    pub fn dispatch(
        self: &Arc<Self>,
        runtime: &tokio::runtime::Handle,
        input: Arc<str>,
        done: impl FnOnce(Result<(), HookError>, Duration) + Send + 'static,
    ) -> bool {
        if !self.has_room(input.len()) && !self.blocks() {
            self.skip();
            return false;
        }
        self.queued_runs.fetch_add(1, Ordering::SeqCst);
        self.queued_bytes.fetch_add(input.len(), Ordering::SeqCst);
        let this = self.clone();
        runtime.spawn(async move {
            let permit = this.slots.clone().acquire_owned().await;
            this.queued_runs.fetch_sub(1, Ordering::SeqCst);
            this.queued_bytes.fetch_sub(input.len(), Ordering::SeqCst);
            this.room.notify_waiters();
            let started = Instant::now();
            let result = this.run(&input).await;
            drop(permit);
            done(result, started.elapsed());
        });
        true
    }

    fn skip(&self) {
        let total = self.skipped.fetch_add(1, Ordering::Relaxed) + 1;
        let mut log = self.skip_log.lock().unwrap_or_else(|p| p.into_inner());
        if log.1.is_none_or(|at| at.elapsed() >= SKIP_LOG_EVERY) {
            warn!(
                hook = self.hook.name,
                skipped = total - log.0,
                total,
                backlog = self.hook.backlog,
                "spawn backlog full: runs skipped (raise limits.backlog or set limits.overflow: block)"
            );
            *log = (total, Some(Instant::now()));
        }
    }

    /// Runs the command once: writes `input` to stdin while draining stdout and
    /// stderr, waits for it, and kills its group if that takes longer than the
    /// hook's timeout.
    pub async fn run(&self, input: &str) -> Result<(), HookError> {
        let mut cmd = command(&self.hook, &self.argv);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = start(&mut cmd, &self.argv)?;
        let pid = child.id();
        let (stdin, stdout, stderr) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take());
        let feed = async {
            if let Some(mut stdin) = stdin {
                // A hook that does not read its stdin is not an error.
                let _ = stdin.write_all(input.as_bytes()).await;
                let _ = stdin.shutdown().await;
            }
        };
        let run = async {
            let ((), out, err, status) =
                tokio::join!(feed, tail(stdout), tail(stderr), child.wait());
            (out, err, status)
        };
        let outcome = tokio::time::timeout(self.hook.timeout, run).await;
        let Ok((out, err, status)) = outcome else {
            kill_group(&mut child).await;
            return Err(HookError::Timeout);
        };
        if let Some(pid) = pid {
            reaper::forget(pid);
        }
        for (stream, text) in [("stdout", out), ("stderr", err)] {
            for line in String::from_utf8_lossy(&text)
                .lines()
                .filter(|l| !l.is_empty())
            {
                guest_log::line(&self.hook.name, stream, tracing::Level::INFO, line);
            }
        }
        match status {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => Err(HookError::Process(format!("exited with {s}"))),
            Err(e) => Err(HookError::Process(format!("wait failed: {e}"))),
        }
    }
}

/// Reads `stream` to its end, keeping only its last [`OUTPUT_TAIL`] bytes.
async fn tail(stream: Option<impl AsyncRead + Unpin>) -> Vec<u8> {
    let Some(mut stream) = stream else {
        return Vec::new();
    };
    let mut kept = Vec::new();
    let mut buf = vec![0u8; 8192];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            break;
        }
        kept.extend_from_slice(&buf[..n]);
        if kept.len() > 2 * OUTPUT_TAIL {
            kept.drain(..kept.len() - OUTPUT_TAIL);
        }
    }
    if kept.len() > OUTPUT_TAIL {
        kept.drain(..kept.len() - OUTPUT_TAIL);
    }
    kept
}
