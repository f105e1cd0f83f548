//! Worker hooks: one long-lived process speaking JSON lines (docs/HOOKS.md):
//! `init`, `handle`, `health`, `shutdown`.
//!
//! One exchange at a time: the requests of a batch are written while the answers
//! are read, all within one deadline ([`batch_deadline`]). A worker that misses it,
//! exits, or writes a line over the frame limit has its process group killed;
//! messages without an answer get the hook's `on_error`; the worker is started
//! again on the next call after a backoff. `init` gets the same budget as WASM
//! init. Lines the worker writes are capped and read into a bounded queue, so a
//! chatty worker blocks on its own stdout instead of filling the daemon's memory.

use std::ops::Range;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::{mpsc, Mutex};
use tracing::{debug, info, warn};

use super::{command, kill_group, log_stderr, read_line, start, truncate, Line};
use crate::hooks::config::HookConfig;
use crate::hooks::guest_log::{self, MAX_LOG_LINE};
use crate::hooks::wasm::INIT_BUDGET;
use crate::hooks::{batch_deadline, emit_allowance, EmitSink, HookError, Verdict};

/// First and longest delay before restarting a worker that failed.
const WORKER_BACKOFF_INITIAL: Duration = Duration::from_millis(100);
const WORKER_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// How long a worker may take to exit after `shutdown` before its group is killed.
pub const WORKER_SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Longest a dropped worker is waited for after its group was killed.
const REAP_IN_DROP: Duration = Duration::from_millis(200);

/// Lines read from a worker's stdout and not yet taken by an exchange.
const LINE_QUEUE: usize = 256;

/// A worker-mode hook.
pub struct WorkerHook {
    hook: Arc<HookConfig>,
    argv: Vec<String>,
    /// Longest line accepted from the worker (the bus's frame limit).
    max_line: usize,
    /// Held for one exchange with the process (an async lock: exchanges await).
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
    lines: mpsc::Receiver<Line>,
}

impl WorkerHook {
    /// Starts the worker and sends `init`; fails (and kills it) if it does not
    /// answer `{"ok":true}` within the init budget.
    pub async fn start(
        hook: Arc<HookConfig>,
        argv: Vec<String>,
        max_line: usize,
    ) -> Result<Self, HookError> {
        let worker = Self {
            hook,
            argv,
            max_line,
            state: Mutex::new(WorkerState {
                process: None,
                backoff: WORKER_BACKOFF_INITIAL,
                not_before: None,
            }),
            next_id: AtomicU64::new(1),
            starts: AtomicU64::new(0),
        };
        let process = worker.spawn().await?;
        worker.state.lock().await.process = Some(process);
        Ok(worker)
    }

    async fn spawn(&self) -> Result<WorkerProcess, HookError> {
        let mut cmd = command(&self.hook, &self.argv);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = start(&mut cmd, &self.argv)?;
        self.starts.fetch_add(1, Ordering::Relaxed);
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            kill_group(&mut child).await;
            return Err(HookError::Process("cannot open the worker's pipes".into()));
        };
        let (tx, lines) = mpsc::channel(LINE_QUEUE);
        tokio::spawn(read_lines(stdout, tx, self.max_line));
        tokio::spawn(log_stderr(self.hook.name.clone(), stderr));
        let mut process = WorkerProcess {
            child,
            stdin,
            lines,
        };
        let config: Value = serde_json::from_str(&self.hook.config).unwrap_or(Value::Null);
        let init = json!({"type": "init", "hook": self.hook.name, "config": config});
        let budget = self.hook.timeout.max(INIT_BUDGET);
        let answer = tokio::time::timeout(budget, process.request(&init, &self.hook.name)).await;
        let failure = match answer {
            Ok(Ok(answer)) if answer["ok"] == true => None,
            Ok(Ok(answer)) => Some(HookError::Init(
                truncate(
                    answer["error"]
                        .as_str()
                        .unwrap_or("init did not answer {\"ok\":true}"),
                    MAX_LOG_LINE,
                )
                .into_owned(),
            )),
            Ok(Err(e)) => Some(HookError::Init(e.to_string())),
            Err(_) => Some(HookError::Init(format!(
                "init did not answer within {} ms",
                budget.as_millis()
            ))),
        };
        if let Some(e) = failure {
            kill_group(&mut process.child).await;
            return Err(e);
        }
        debug!(
            hook = self.hook.name,
            pid = process.child.id(),
            "worker started"
        );
        Ok(process)
    }

    /// Sends `batch` (message JSON and hop count each) in one exchange and returns
    /// a verdict per message. A failure fails every message not yet answered and
    /// restarts the worker.
    pub async fn handle_many(
        &self,
        batch: &[(String, u8)],
        emit: &EmitSink,
    ) -> Vec<Result<Verdict, HookError>> {
        let all = |e: HookError| batch.iter().map(|_| Err(e.clone())).collect();
        let deadline = batch_deadline(self.hook.timeout, batch.len());
        let started = Instant::now();
        // Waiting for another exchange counts against this one's deadline.
        let Ok(mut state) = tokio::time::timeout(deadline, self.state.lock()).await else {
            return all(HookError::Timeout);
        };
        if state.process.is_none() {
            if state.not_before.is_some_and(|t| Instant::now() < t) {
                return all(HookError::Process(
                    "the worker is restarting after a failure".into(),
                ));
            }
            match self.spawn().await {
                Ok(p) => {
                    info!(hook = self.hook.name, "worker restarted");
                    state.process = Some(p);
                }
                Err(e) => {
                    state.back_off();
                    return all(e);
                }
            }
        }
        let first = self
            .next_id
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let mut requests = String::new();
        for (k, (json, _)) in batch.iter().enumerate() {
            let message = match serde_json::from_str::<Value>(json) {
                Ok(message) => message,
                Err(e) => return all(HookError::BadVerdict(e.to_string())),
            };
            let request = json!({"type": "handle", "id": first + k as u64, "message": message});
            requests.push_str(&request.to_string());
            requests.push('\n');
        }
        let Some(process) = state.process.as_mut() else {
            return all(HookError::Process("the worker is not running".into()));
        };
        let left = deadline.saturating_sub(started.elapsed());
        let mut results = Vec::with_capacity(batch.len());
        let exchange = process.exchange(
            &requests,
            first..first + batch.len() as u64,
            |k, answer| {
                let hops = batch[k].1.saturating_add(1);
                match answer {
                    Answer::Emit(m) => emit(&self.hook.name, m, hops),
                    Answer::Verdict(v) => {
                        results.push(worker_verdict(&v));
                        Ok(())
                    }
                }
            },
            |k| emit_allowance(batch[k].1),
            &self.hook.name,
        );
        let failure = match tokio::time::timeout(left, exchange).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => Some(HookError::Timeout),
        };
        match failure {
            None => state.backoff = WORKER_BACKOFF_INITIAL,
            Some(e) => {
                warn!(hook = self.hook.name, error = %e, "worker failed; killing it, it restarts on the next message");
                while results.len() < batch.len() {
                    results.push(Err(e.clone()));
                }
                if let Some(mut p) = state.process.take() {
                    kill_group(&mut p.child).await;
                }
                state.back_off();
            }
        }
        results
    }

    /// Asks the worker for its health, within its timeout.
    pub async fn health(&self) -> Result<(), String> {
        let timeout = self.hook.timeout;
        let Ok(mut state) = tokio::time::timeout(timeout, self.state.lock()).await else {
            return Err("busy".into());
        };
        let Some(process) = state.process.as_mut() else {
            return Err("not running".into());
        };
        let request = json!({"type": "health"});
        let asked = process.request(&request, &self.hook.name);
        match tokio::time::timeout(timeout, asked).await {
            Ok(Ok(a)) if a["ok"] == true => Ok(()),
            Ok(Ok(a)) => Err(
                truncate(a["detail"].as_str().unwrap_or("unhealthy"), MAX_LOG_LINE).into_owned(),
            ),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => {
                // A worker that cannot answer `health` in time cannot answer messages.
                if let Some(mut p) = state.process.take() {
                    kill_group(&mut p.child).await;
                }
                state.back_off();
                Err(HookError::Timeout.to_string())
            }
        }
    }

    /// Sends `shutdown`, gives the worker [`WORKER_SHUTDOWN_GRACE`] to exit, then
    /// kills its process group.
    pub async fn shutdown(&self) {
        let Ok(mut state) = tokio::time::timeout(WORKER_SHUTDOWN_GRACE, self.state.lock()).await
        else {
            return; // an exchange holds it; `Drop` kills the process
        };
        let Some(mut p) = state.process.take() else {
            return;
        };
        let line = format!("{}\n", json!({"type": "shutdown"}));
        let polite = async {
            let _ = p.stdin.write_all(line.as_bytes()).await;
            let _ = p.stdin.shutdown().await;
            let _ = p.child.wait().await;
        };
        let _ = tokio::time::timeout(WORKER_SHUTDOWN_GRACE, polite).await;
        kill_group(&mut p.child).await;
    }
}

impl Drop for WorkerHook {
    /// The last resort when `shutdown` was not called or could not take the lock:
    /// kill the group and reap the worker (it dies at once; waited for at most
    /// [`REAP_IN_DROP`]).
    fn drop(&mut self) {
        let Some(p) = self.state.get_mut().process.as_mut() else {
            return;
        };
        if let Some(pid) = p.child.id() {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let deadline = Instant::now() + REAP_IN_DROP;
            while matches!(p.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            super::reaper::forget(pid);
        }
    }
}

impl WorkerState {
    fn back_off(&mut self) {
        self.not_before = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(WORKER_BACKOFF_MAX);
    }
}

/// What a worker wrote for the message being answered.
enum Answer {
    Emit(String),
    Verdict(Value),
}

impl WorkerProcess {
    /// Writes a control request (`init`, `health`) and reads its answer (a line
    /// without an `id`, or any JSON object that is not `emit` or `log`).
    async fn request(&mut self, request: &Value, hook: &str) -> Result<Value, HookError> {
        let Self {
            child,
            stdin,
            lines,
        } = self;
        let line = format!("{request}\n");
        let write = write_all(stdin, &line);
        let read = async {
            loop {
                match next_line(lines, child, hook).await? {
                    Parsed::Answer(value) => return Ok(value),
                    Parsed::Emit(_) => debug!(hook, "emit outside a message ignored"),
                }
            }
        };
        let (written, answer) = tokio::join!(write, read);
        written.and(answer)
    }

    /// Writes `requests` while reading the answers to `ids`, in order; `each` gets
    /// the index of the message and each of its emits and then its verdict.
    async fn exchange(
        &mut self,
        requests: &str,
        ids: Range<u64>,
        mut each: impl FnMut(usize, Answer) -> Result<(), String>,
        allowance: impl Fn(usize) -> usize,
        hook: &str,
    ) -> Result<(), HookError> {
        let Self {
            child,
            stdin,
            lines,
        } = self;
        let write = write_all(stdin, requests);
        let read = async {
            let mut current = ids.start;
            let mut emits = 0;
            while current < ids.end {
                let k = (current - ids.start) as usize;
                match next_line(lines, child, hook).await? {
                    Parsed::Emit(message) => {
                        emits += 1;
                        if emits > allowance(k) {
                            debug!(hook, "emit refused: over the limit for one message");
                        } else if let Err(e) = each(k, Answer::Emit(message)) {
                            debug!(hook, error = e, "emit refused");
                        }
                    }
                    Parsed::Answer(answer) if answer["id"] == current => {
                        let _ = each(k, Answer::Verdict(answer));
                        current += 1;
                        emits = 0;
                    }
                    Parsed::Answer(answer) => {
                        debug!(hook, answer = %truncate(&answer.to_string(), MAX_LOG_LINE), "answer to no pending request ignored")
                    }
                }
            }
            Ok(())
        };
        // Both halves run at once: a worker that answers before it has read every
        // request never waits on a full pipe.
        let (written, read) = tokio::join!(write, read);
        read.and(written)
    }
}

async fn write_all(stdin: &mut ChildStdin, text: &str) -> Result<(), HookError> {
    let written = match stdin.write_all(text.as_bytes()).await {
        Ok(()) => stdin.flush().await,
        Err(e) => Err(e),
    };
    written.map_err(|e| HookError::Process(format!("cannot write to the worker: {e}")))
}

/// A line that matters to an exchange.
enum Parsed {
    Emit(String),
    Answer(Value),
}

/// The next answer or emit from the worker; `log` lines and text are logged.
async fn next_line(
    lines: &mut mpsc::Receiver<Line>,
    child: &mut Child,
    hook: &str,
) -> Result<Parsed, HookError> {
    loop {
        let line = match lines.recv().await {
            Some(Line::Text(line)) => line,
            Some(Line::TooLong(n)) => {
                return Err(HookError::Process(format!(
                    "the worker wrote a {n}-byte line, over the frame limit"
                )))
            }
            None => {
                let status = child
                    .wait()
                    .await
                    .map(|s| s.to_string())
                    .unwrap_or_default();
                return Err(HookError::Process(format!("the worker exited ({status})")));
            }
        };
        let Ok(value) = serde_json::from_str::<Value>(&line) else {
            guest_log::line(hook, "stdout", tracing::Level::INFO, &line);
            continue;
        };
        if let Some(message) = value.get("emit") {
            return Ok(Parsed::Emit(message.to_string()));
        }
        if let Some(text) = value.get("log") {
            let text = text
                .as_str()
                .map_or_else(|| text.to_string(), str::to_owned);
            guest_log::line(hook, "log", tracing::Level::INFO, &text);
            continue;
        }
        return Ok(Parsed::Answer(value));
    }
}

/// Reads the worker's stdout into `tx`, line by line, each capped at `max`.
async fn read_lines(stdout: ChildStdout, tx: mpsc::Sender<Line>, max: usize) {
    let mut reader = tokio::io::BufReader::new(stdout);
    while let Ok(Some(line)) = read_line(&mut reader, max).await {
        let too_long = matches!(line, Line::TooLong(_));
        if tx.send(line).await.is_err() || too_long {
            return;
        }
    }
}

/// `{"verdict":"pass"|"drop"|"replace", "reason":…, "message":…}`
fn worker_verdict(answer: &Value) -> Result<Verdict, HookError> {
    match answer["verdict"].as_str() {
        Some("pass") => Ok(Verdict::Pass),
        Some("drop") => Ok(Verdict::Drop(answer["reason"].as_str().unwrap_or_default().to_owned())),
        Some("replace") if answer["message"].is_object() => Ok(Verdict::Replace(answer["message"].to_string())),
        _ => Err(HookError::BadVerdict(format!(
            "the worker answered {}; expected {{\"id\":…,\"verdict\":\"pass\"|\"drop\"|\"replace\",…}}",
            truncate(&answer.to_string(), MAX_LOG_LINE)
        ))),
    }
}
