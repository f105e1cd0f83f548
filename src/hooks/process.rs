//! Subprocess hooks. `command` is run without a shell, with the hook's `env` and
//! `cwd`, in its own process group.
//!
//! - **spawn**: one process per message, the message JSON on stdin (hermes-bus
//!   style). Runs on the async runtime, never blocks routing, at most
//!   `limits.concurrency` at once with a bounded backlog; a timeout kills the whole
//!   process group, and every child is waited for, so none is left a zombie.
//! - **worker**: one long-lived process speaking JSON lines (docs/HOOKS.md):
//!   `init`, `handle`, `health`, `shutdown`. Restarted with backoff when it dies or
//!   misses a deadline.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{debug, info, warn};

use super::config::HookConfig;
use super::{EmitSink, HookError, Verdict};

/// Spawn runs waiting for a concurrency slot, per hook; more are counted and skipped.
pub const SPAWN_BACKLOG: usize = 1024;

/// Most bytes of a spawned process's stderr that are logged.
const MAX_STDERR_LOG: usize = 16 * 1024;

/// First and longest delay before restarting a worker that died.
const WORKER_BACKOFF_INITIAL: Duration = Duration::from_millis(100);
const WORKER_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// How long a worker may take to exit after `shutdown` before it is killed.
const WORKER_SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

fn command(hook: &HookConfig, argv: &[String]) -> Command {
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]).envs(&hook.env).process_group(0);
    if let Some(cwd) = &hook.cwd {
        cmd.current_dir(cwd);
    }
    cmd
}

/// A spawn-mode hook.
pub struct SpawnHook {
    hook: Arc<HookConfig>,
    argv: Vec<String>,
    slots: Arc<tokio::sync::Semaphore>,
    waiting: AtomicUsize,
    /// Runs skipped because the backlog was full.
    pub overflow: AtomicU64,
}

impl SpawnHook {
    pub fn new(hook: Arc<HookConfig>, argv: Vec<String>) -> Self {
        Self {
            slots: Arc::new(tokio::sync::Semaphore::new(hook.concurrency)),
            hook,
            argv,
            waiting: AtomicUsize::new(0),
            overflow: AtomicU64::new(0),
        }
    }

    /// Queues one run with `input` on stdin; `done` gets its outcome. Returns false
    /// (and counts it) when the backlog is full.
    pub fn dispatch(
        self: &Arc<Self>,
        runtime: &tokio::runtime::Handle,
        input: Arc<str>,
        done: impl FnOnce(Result<(), HookError>, Duration) + Send + 'static,
    ) -> bool {
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= SPAWN_BACKLOG {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            self.overflow.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let this = self.clone();
        runtime.spawn(async move {
            let permit = this.slots.clone().acquire_owned().await;
            this.waiting.fetch_sub(1, Ordering::SeqCst);
            let started = Instant::now();
            let result = this.run(&input).await;
            drop(permit);
            done(result, started.elapsed());
        });
        true
    }

    /// Runs the command once, feeding `input`, and waits for it (or kills its group).
    pub async fn run(&self, input: &str) -> Result<(), HookError> {
        let mut cmd = tokio::process::Command::from(command(&self.hook, &self.argv));
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| HookError::Process(format!("cannot run {:?}: {e}", self.argv[0])))?;
        let pid = child.id().map(|p| Pid::from_raw(p as i32));
        let mut stdin = child.stdin.take();
        let mut stderr = child.stderr.take();
        let input = input.as_bytes().to_vec();
        let run = async {
            if let Some(mut stdin) = stdin.take() {
                // A hook that does not read its stdin is not an error.
                let _ = stdin.write_all(&input).await;
                let _ = stdin.shutdown().await;
            }
            let mut err = Vec::new();
            if let Some(stderr) = stderr.as_mut() {
                let _ = stderr
                    .take(MAX_STDERR_LOG as u64)
                    .read_to_end(&mut err)
                    .await;
            }
            let status = child.wait().await;
            (status, err)
        };
        match tokio::time::timeout(self.hook.timeout, run).await {
            Ok((status, err)) => {
                for line in String::from_utf8_lossy(&err)
                    .lines()
                    .filter(|l| !l.is_empty())
                {
                    info!(hook = self.hook.name, stream = "stderr", "{line}");
                }
                match status {
                    Ok(s) if s.success() => Ok(()),
                    Ok(s) => Err(HookError::Process(format!("exited with {s}"))),
                    Err(e) => Err(HookError::Process(format!("wait failed: {e}"))),
                }
            }
            Err(_) => {
                if let Some(pid) = pid {
                    let _ = killpg(pid, Signal::SIGKILL);
                }
                // Reap it: the group is dead, so this returns at once.
                let _ = child.wait().await;
                Err(HookError::Timeout)
            }
        }
    }
}

/// A worker-mode hook: one process, requests serialised through a lock.
pub struct WorkerHook {
    hook: Arc<HookConfig>,
    argv: Vec<String>,
    /// Held for the length of one request/answer exchange with the process; callers
    /// are hook threads, never async tasks.
    state: Mutex<WorkerState>,
    next_id: AtomicU64,
    /// Times the process was (re)started.
    pub starts: AtomicU64,
}

struct WorkerState {
    process: Option<WorkerProcess>,
    backoff: Duration,
    not_before: Option<Instant>,
}

struct WorkerProcess {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl WorkerHook {
    /// Starts the worker and sends `init`; fails if it does not answer `{"ok":true}`.
    pub fn start(hook: Arc<HookConfig>, argv: Vec<String>) -> Result<Self, HookError> {
        let worker = Self {
            hook,
            argv,
            state: Mutex::new(WorkerState {
                process: None,
                backoff: WORKER_BACKOFF_INITIAL,
                not_before: None,
            }),
            next_id: AtomicU64::new(1),
            starts: AtomicU64::new(0),
        };
        {
            let mut state = worker.lock();
            let process = worker.spawn()?;
            state.process = Some(process);
        }
        Ok(worker)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WorkerState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn spawn(&self) -> Result<WorkerProcess, HookError> {
        let mut cmd = command(&self.hook, &self.argv);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| HookError::Process(format!("cannot run {:?}: {e}", self.argv[0])))?;
        self.starts.fetch_add(1, Ordering::Relaxed);
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(HookError::Process("cannot open the worker's pipes".into()));
        };
        let (tx, lines) = mpsc::channel();
        let name = self.hook.name.clone();
        std::thread::Builder::new()
            .name(format!("hook-{name}-out"))
            .spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| HookError::Process(format!("cannot start a reader thread: {e}")))?;
        let name = self.hook.name.clone();
        std::thread::Builder::new()
            .name(format!("hook-{name}-err"))
            .spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    info!(hook = name, stream = "stderr", "{line}");
                }
            })
            .map_err(|e| HookError::Process(format!("cannot start a reader thread: {e}")))?;
        let mut process = WorkerProcess {
            child,
            stdin,
            lines,
        };
        let config: Value = serde_json::from_str(&self.hook.config).unwrap_or(Value::Null);
        let answer = process.request(
            &json!({"type": "init", "hook": self.hook.name, "config": config}),
            self.hook.timeout,
            &self.hook.name,
        )?;
        if answer["ok"] != true {
            process.kill();
            return Err(HookError::Init(
                answer["error"]
                    .as_str()
                    .unwrap_or("init did not answer {\"ok\":true}")
                    .to_owned(),
            ));
        }
        debug!(
            hook = self.hook.name,
            pid = process.child.id(),
            "worker started"
        );
        Ok(process)
    }

    /// Sends one message and waits for its verdict (within the hook's timeout).
    pub fn handle(&self, json: &str, hops: u8, emit: &EmitSink) -> Result<Verdict, HookError> {
        self.handle_many(&[(json.to_owned(), hops)], emit)
            .pop()
            .unwrap_or_else(|| Err(HookError::Process("the worker gave no answer".into())))
    }

    /// Sends several messages in one exchange: all requests first, then the answers
    /// in order (each within the hook's timeout of the previous one). On a failure
    /// the rest fail too and the worker is restarted.
    pub fn handle_many(
        &self,
        batch: &[(String, u8)],
        emit: &EmitSink,
    ) -> Vec<Result<Verdict, HookError>> {
        let mut state = self.lock();
        if state.process.is_none() {
            if state.not_before.is_some_and(|t| Instant::now() < t) {
                return batch
                    .iter()
                    .map(|_| {
                        Err(HookError::Process(
                            "the worker is restarting after a failure".into(),
                        ))
                    })
                    .collect();
            }
            match self.spawn() {
                Ok(p) => {
                    info!(hook = self.hook.name, "worker restarted");
                    state.process = Some(p);
                }
                Err(e) => {
                    Self::back_off(&mut state);
                    return batch.iter().map(|_| Err(e.clone())).collect();
                }
            }
        }
        let Some(process) = state.process.as_mut() else {
            return batch
                .iter()
                .map(|_| Err(HookError::Process("the worker is not running".into())))
                .collect();
        };
        let first = self
            .next_id
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let mut out = String::new();
        for (k, (json, _)) in batch.iter().enumerate() {
            match serde_json::from_str::<Value>(json) {
                Ok(message) => {
                    out.push_str(
                        &json!({"type": "handle", "id": first + k as u64, "message": message})
                            .to_string(),
                    );
                    out.push('\n');
                }
                Err(e) => {
                    return batch
                        .iter()
                        .map(|_| Err(HookError::BadVerdict(e.to_string())))
                        .collect()
                }
            }
        }
        let mut results = Vec::with_capacity(batch.len());
        let written = process
            .stdin
            .write_all(out.as_bytes())
            .and_then(|()| process.stdin.flush());
        let mut failure = written
            .err()
            .map(|e| HookError::Process(format!("cannot write to the worker: {e}")));
        for (k, (_, hops)) in batch.iter().enumerate() {
            if let Some(e) = &failure {
                results.push(Err(e.clone()));
                continue;
            }
            let emitter = |m: String| emit(&self.hook.name, m, hops.saturating_add(1));
            match process.read_answer(
                Some(first + k as u64),
                self.hook.timeout,
                &self.hook.name,
                Some(&emitter),
            ) {
                Ok(answer) => results.push(worker_verdict(&answer)),
                Err(e) => {
                    failure = Some(e.clone());
                    results.push(Err(e));
                }
            }
        }
        match failure {
            None => state.backoff = WORKER_BACKOFF_INITIAL,
            Some(e) => {
                warn!(hook = self.hook.name, error = %e, "worker failed; restarting it");
                if let Some(mut p) = state.process.take() {
                    p.kill();
                }
                Self::back_off(&mut state);
            }
        }
        results
    }

    fn back_off(state: &mut WorkerState) {
        state.not_before = Some(Instant::now() + state.backoff);
        state.backoff = (state.backoff * 2).min(WORKER_BACKOFF_MAX);
    }

    /// Asks the worker for its health.
    pub fn health(&self) -> Result<(), String> {
        let mut state = self.lock();
        let Some(process) = state.process.as_mut() else {
            return Err("not running".into());
        };
        match process.request(
            &json!({"type": "health"}),
            self.hook.timeout,
            &self.hook.name,
        ) {
            Ok(a) if a["ok"] == true => Ok(()),
            Ok(a) => Err(a["detail"].as_str().unwrap_or("unhealthy").to_owned()),
            Err(e) => Err(e.to_string()),
        }
    }
}

impl Drop for WorkerHook {
    fn drop(&mut self) {
        let mut state = self.lock();
        if let Some(mut p) = state.process.take() {
            let _ = writeln!(p.stdin, "{}", json!({"type": "shutdown"}));
            let deadline = Instant::now() + WORKER_SHUTDOWN_GRACE;
            drop(p.stdin);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = p.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = killpg(Pid::from_raw(p.child.id() as i32), Signal::SIGKILL);
            let _ = p.child.wait();
        }
    }
}

impl WorkerProcess {
    /// Writes `request` and reads lines until the answer (matching `id` when given).
    /// `{"emit":…}` and `{"log":…}` lines may come first.
    /// Writes a control request (`init`, `health`) and reads its answer.
    fn request(
        &mut self,
        request: &Value,
        timeout: Duration,
        hook: &str,
    ) -> Result<Value, HookError> {
        writeln!(self.stdin, "{request}")
            .and_then(|()| self.stdin.flush())
            .map_err(|e| HookError::Process(format!("cannot write to the worker: {e}")))?;
        self.read_answer(None, timeout, hook, None)
    }

    /// Reads lines until the answer (to `id`, when given), passing `emit` and `log`
    /// lines on.
    fn read_answer(
        &mut self,
        id: Option<u64>,
        timeout: Duration,
        hook: &str,
        emit: Option<&dyn Fn(String) -> Result<(), String>>,
    ) -> Result<Value, HookError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match self.lines.recv_timeout(left) {
                Ok(line) => line,
                Err(mpsc::RecvTimeoutError::Timeout) => return Err(HookError::Timeout),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().map(|s| s.to_string()).unwrap_or_default();
                    return Err(HookError::Process(format!("the worker exited ({status})")));
                }
            };
            let Ok(answer) = serde_json::from_str::<Value>(&line) else {
                info!(hook, stream = "stdout", "{line}");
                continue;
            };
            if let Some(message) = answer.get("emit") {
                if let Some(emit) = emit {
                    if let Err(e) = emit(message.to_string()) {
                        debug!(hook, error = e, "emit refused");
                    }
                }
                continue;
            }
            if let Some(text) = answer.get("log") {
                info!(
                    hook,
                    "{}",
                    text.as_str()
                        .map_or_else(|| text.to_string(), str::to_owned)
                );
                continue;
            }
            if id.is_none_or(|id| answer["id"] == id) {
                return Ok(answer);
            }
        }
    }

    fn kill(&mut self) {
        let _ = killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// `{"verdict":"pass"|"drop"|"replace", "reason":…, "message":…}`
fn worker_verdict(answer: &Value) -> Result<Verdict, HookError> {
    match answer["verdict"].as_str() {
        Some("pass") => Ok(Verdict::Pass),
        Some("drop") => Ok(Verdict::Drop(answer["reason"].as_str().unwrap_or_default().to_owned())),
        Some("replace") if answer["message"].is_object() => Ok(Verdict::Replace(answer["message"].to_string())),
        _ => Err(HookError::BadVerdict(format!(
            "the worker answered {answer}; expected {{\"id\":…,\"verdict\":\"pass\"|\"drop\"|\"replace\",…}}"
        ))),
    }
}
