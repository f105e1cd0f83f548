//! Running the server as a daemon: binding the socket safely, the pid file,
//! signals, and `hookbus daemon start|stop|status|restart`.

use std::io::{BufRead, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::client::{self, ClientError};
use crate::paths;
use crate::server::{self, Config};

/// How long `daemon start` waits for the new daemon's socket to answer.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How long `daemon stop` waits for the daemon to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors running or controlling the daemon.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("a daemon is already running at {}; stop it with `hookbus daemon stop`", .0.display())]
    AlreadyRunning(PathBuf),
    #[error("{} exists and is not a socket; remove it or choose another --socket", .0.display())]
    NotASocket(PathBuf),
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the daemon did not start: {0}")]
    StartFailed(String),
    #[error(
        "the daemon (pid {pid}) did not exit within {STOP_TIMEOUT:?}; kill it with `kill -9 {pid}`"
    )]
    StopTimeout { pid: i32 },
    #[error(transparent)]
    Client(#[from] ClientError),
}

fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> DaemonError + 'a {
    move |source| DaemonError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// Binds the bus socket: creates its directory (mode 0700), replaces a stale
/// socket file, refuses to run beside a live daemon, and makes the socket 0600.
pub fn bind(socket: &Path) -> Result<UnixListener, DaemonError> {
    if let Some(dir) = socket.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io_err("create directory", dir))?;
        } else if let Ok(meta) = dir.metadata() {
            if meta.permissions().mode() & 0o077 != 0 {
                warn!(dir = %dir.display(), "the socket's directory is open to other users; \
                    the daemon still refuses their connections, but prefer a 0700 directory");
            }
        }
    }
    match std::fs::symlink_metadata(socket) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(DaemonError::NotASocket(socket.to_owned()))
        }
        Ok(_) => {
            if std::os::unix::net::UnixStream::connect(socket).is_ok() {
                return Err(DaemonError::AlreadyRunning(socket.to_owned()));
            }
            info!(socket = %socket.display(), "removing stale socket");
            std::fs::remove_file(socket).map_err(io_err("remove stale socket", socket))?;
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(socket).map_err(io_err("bind", socket))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .map_err(io_err("chmod", socket))?;
    Ok(listener)
}

/// Runs the server in the foreground until SIGTERM or SIGINT: binds, writes the
/// pid file, serves, then removes the socket and the pid file.
pub async fn serve(config: Config) -> Result<(), DaemonError> {
    let socket = config.socket_path.clone();
    if let Some((old, new)) = crate::fd_limit::raise_soft_limit() {
        info!(
            from = old,
            to = new,
            "raised the open-file limit to its hard limit"
        );
    }
    let listener = bind(&socket)?;
    let pid_path = paths::pid_file(&socket);
    create_dir(&pid_path)?;
    std::fs::write(&pid_path, format!("{}\n", std::process::id()))
        .map_err(io_err("write pid file", &pid_path))?;

    let shutdown = CancellationToken::new();
    let signals = shutdown_on_signal(shutdown.clone())
        .map_err(io_err("install signal handlers for", &socket))?;
    let hooks = config.hooks.clone();
    if hooks.is_some() {
        if let Err(e) = crate::hooks::process::reaper::start() {
            warn!("cannot become a child subreaper ({e}): processes that escape a hook's process group will not be killed");
        }
    }
    info!(pid = std::process::id(), socket = %socket.display(), "hookbus daemon started");
    // The whole stop, from the signal to the last hook process killed, takes at
    // most `shutdown_timeout`.
    let limit = config.shutdown_timeout;
    let signalled = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            shutdown.cancelled().await;
            Instant::now()
        })
    };
    let run = server::run(listener, config, shutdown.clone());
    tokio::pin!(run);
    tokio::select! {
        _ = &mut run => {}
        _ = async {
            shutdown.cancelled().await;
            tokio::time::sleep(limit).await;
        } => warn!("the server did not stop within {limit:?}; stopping anyway"),
    }
    let stop_started = signalled.await.unwrap_or_else(|_| Instant::now());
    signals.abort();
    if let Some(hooks) = hooks {
        let left = limit.saturating_sub(stop_started.elapsed());
        hooks.shutdown(left.max(Duration::from_millis(100))).await;
    }

    // Remove our files only if they are still ours (a new daemon may have taken over).
    if read_pid(&pid_path) == Some(std::process::id() as i32) {
        let _ = std::fs::remove_file(&pid_path);
    }
    let _ = std::fs::remove_file(&socket);
    info!("hookbus daemon stopped");
    Ok(())
}

fn shutdown_on_signal(shutdown: CancellationToken) -> std::io::Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        info!(signal = name, "shutting down: draining connections");
        shutdown.cancel();
    }))
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn alive(pid: i32) -> bool {
    // Signal 0 checks existence; EPERM means it exists under another user.
    !matches!(
        kill(Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

/// Asks the daemon at `socket` for its status.
pub async fn query_status(socket: &Path) -> Result<Value, ClientError> {
    client::query(socket, &json!({"type": "status"})).await
}

/// Options forwarded from `daemon start` to the detached `serve`.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Extra arguments for `hookbus serve` (limits, log level).
    pub serve_args: Vec<String>,
}

/// Creates the directory `file` goes in (private), if it is missing.
fn create_dir(file: &Path) -> Result<(), DaemonError> {
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err("create directory", dir))?;
    }
    Ok(())
}

/// Starts a detached daemon and waits until its socket answers. Returns the status
/// of the running daemon (the existing one if one was already running).
pub async fn start(socket: &Path, options: &StartOptions) -> Result<(Value, bool), DaemonError> {
    if let Ok(status) = query_status(socket).await {
        return Ok((status, false));
    }
    clean_stale(socket);
    let log_path = paths::log_file(socket);
    create_dir(socket)?;
    create_dir(&log_path)?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(io_err("open log file", &log_path))?;
    let log_offset = log.metadata().map(|m| m.len()).unwrap_or(0);
    let exe = std::env::current_exe().map_err(io_err("locate", Path::new("the hookbus binary")))?;
    let mut cmd = std::process::Command::new(&exe);
    cmd.arg("serve")
        .arg("--socket")
        .arg(socket)
        .args(&options.serve_args)
        .env_remove(paths::SOCKET_ENV)
        .stdin(Stdio::null())
        .stdout(
            log.try_clone()
                .map_err(io_err("open log file", &log_path))?,
        )
        .stderr(log);
    // SAFETY: `setsid` is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()
                .map(drop)
                .map_err(std::io::Error::from)
        });
    }
    let mut child = cmd.spawn().map_err(io_err("run", &exe))?;

    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(status) = query_status(socket).await {
            // The daemon is detached: it is reaped by init once we exit.
            return Ok((status, true));
        }
        if let Ok(Some(exit)) = child.try_wait() {
            return Err(DaemonError::StartFailed(format!(
                "it exited with {exit}. Its log ({}) says:\n{}",
                log_path.display(),
                tail(&log_path, log_offset, 20)
            )));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(DaemonError::StartFailed(format!(
                "its socket did not answer within {START_TIMEOUT:?}; see {}",
                log_path.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The last `lines` lines written to `path` after byte `offset`.
fn tail(path: &Path, offset: u64, lines: usize) -> String {
    let Ok(file) = std::fs::File::open(path) else {
        return String::new();
    };
    let mut reader = std::io::BufReader::new(file);
    let _ = std::io::Seek::seek(&mut reader, std::io::SeekFrom::Start(offset));
    let all: Vec<String> = reader.lines().map_while(Result::ok).collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Removes a stale socket or pid file (one whose daemon is gone).
fn clean_stale(socket: &Path) {
    let pid_path = paths::pid_file(socket);
    if let Some(pid) = read_pid(&pid_path) {
        if !alive(pid) {
            info!(pid, "removing stale pid file");
            let _ = std::fs::remove_file(&pid_path);
        }
    }
    if std::fs::symlink_metadata(socket).is_ok_and(|m| m.file_type().is_socket())
        && std::os::unix::net::UnixStream::connect(socket).is_err()
    {
        info!(socket = %socket.display(), "removing stale socket");
        let _ = std::fs::remove_file(socket);
    }
}

/// What `stop` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Stopped {
    Stopped { pid: i32 },
    NotRunning,
}

/// Stops the daemon serving `socket` with SIGTERM and waits for it to exit.
pub async fn stop(socket: &Path) -> Result<Stopped, DaemonError> {
    // Prefer the pid the live daemon reports; fall back to the pid file.
    let pid = match query_status(socket).await {
        Ok(status) => status["pid"].as_i64().map(|p| p as i32),
        Err(_) => read_pid(&paths::pid_file(socket)).filter(|&p| alive(p) && is_hookbus(p)),
    };
    let Some(pid) = pid else {
        clean_stale(socket);
        return Ok(Stopped::NotRunning);
    };
    if let Err(e) = kill(Pid::from_raw(pid), Signal::SIGTERM) {
        if e != nix::errno::Errno::ESRCH {
            return Err(DaemonError::Io {
                action: "signal",
                path: PathBuf::from(format!("pid {pid}")),
                source: e.into(),
            });
        }
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    while alive(pid) {
        if Instant::now() > deadline {
            return Err(DaemonError::StopTimeout { pid });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    clean_stale(socket);
    Ok(Stopped::Stopped { pid })
}

/// Whether `pid` runs a hookbus binary (guards against a recycled pid in a stale
/// pid file).
fn is_hookbus(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|cmd| String::from_utf8_lossy(&cmd).contains("hookbus"))
        .unwrap_or(false)
}

/// Writes a status report for people.
pub fn print_status(out: &mut impl Write, status: &Value) -> std::io::Result<()> {
    writeln!(
        out,
        "hookbus {} running",
        status["version"].as_str().unwrap_or("?")
    )?;
    writeln!(out, "  pid:         {}", status["pid"])?;
    writeln!(
        out,
        "  uptime:      {}",
        human_duration(status["uptime_s"].as_f64().unwrap_or(0.0))
    )?;
    writeln!(
        out,
        "  socket:      {}",
        status["socket"].as_str().unwrap_or("?")
    )?;
    writeln!(out, "  connections: {}", status["connections"])?;
    let memory = &status["memory"];
    if let (Some(used), Some(budget)) = (memory["used"].as_u64(), memory["budget"].as_u64()) {
        writeln!(
            out,
            "  memory:      {} of {} held for clients ({} waits)",
            human_bytes(used),
            human_bytes(budget),
            memory["waits"]
        )?;
    }
    let store = &status["store"];
    match store["state"].as_str() {
        None => writeln!(out, "  store:       none (--no-store)")?,
        Some(state) => {
            writeln!(
                out,
                "  store:       {state}, {} ({} KV keys)",
                store["path"].as_str().unwrap_or("?"),
                status["kv"]["keys"]
            )?;
            if let Some(error) = store["error"].as_str() {
                writeln!(out, "               {error}")?;
            }
            let jobs = &store["jobs"];
            writeln!(
                out,
                "  jobs:        {} queued, {} leased, {} claims waiting",
                jobs["queued"], jobs["leased"], jobs["claims_waiting"]
            )?;
        }
    }
    let endpoints = status["endpoints"].as_object().cloned().unwrap_or_default();
    let mut names: Vec<&String> = endpoints.keys().collect();
    names.sort();
    // Who runs each endpoint, from the session list (older daemons have none).
    let sessions = status["sessions"].as_array().cloned().unwrap_or_default();
    writeln!(out, "  endpoints:   {}", endpoints.len())?;
    for name in names {
        let id = endpoints[name].as_str().unwrap_or("?");
        let peer = sessions
            .iter()
            .find(|s| s["id"] == id)
            .map(|s| {
                let exe = s["exe"].as_str().unwrap_or("?");
                match s["pid"].as_i64() {
                    Some(pid) => format!(", pid {pid} {exe}"),
                    None => format!(", {exe}"),
                }
            })
            .unwrap_or_default();
        writeln!(out, "    {name}  ({id}{peer})")?;
    }
    writeln!(out, "  counters:")?;
    if let Some(counters) = status["counters"].as_object() {
        for (name, value) in counters {
            writeln!(out, "    {name:<26} {value}")?;
        }
    }
    Ok(())
}

fn human_bytes(n: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    match n {
        0..=1023 => format!("{n} B"),
        1024..=MIB => format!("{:.1} KiB", n as f64 / 1024.0),
        _ => format!("{:.1} MiB", n as f64 / MIB as f64),
    }
}

fn human_duration(secs: f64) -> String {
    let s = secs as u64;
    match s {
        0..=59 => format!("{secs:.1}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}
