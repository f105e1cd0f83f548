//! The daemon as a child subreaper: a descendant of a hook that leaves its
//! process group (`setsid`, a double fork) and is orphaned becomes the daemon's
//! child instead of init's, and is killed and reaped here, so no hook process
//! outlives its run or the daemon.
//!
//! Direct children (the hook processes themselves) are registered when started
//! and are waited for by their owners, never here.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// The reaper looks for inherited processes whenever a child exits (an orphan is
/// adopted before its parent's exit is signalled), and at least this often.
pub const REAP_EVERY: Duration = Duration::from_secs(5);

/// Direct children started by hooks and not yet waited for. Held only to insert,
/// remove or filter pids: no await, no blocking call inside but the fork itself.
static CHILDREN: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

fn children() -> std::sync::MutexGuard<'static, BTreeSet<u32>> {
    CHILDREN.lock().unwrap_or_else(|p| p.into_inner())
}

/// Starts `cmd` and registers the child (under the lock, so a sweep never sees
/// it unregistered).
pub fn spawn(cmd: &mut Command) -> std::io::Result<Child> {
    let mut registered = children();
    let child = cmd.spawn()?;
    if let Some(pid) = child.id() {
        registered.insert(pid);
    }
    Ok(child)
}

/// Unregisters a direct child that has been waited for.
pub fn forget(pid: u32) {
    children().remove(&pid);
}

/// Makes this process a child subreaper and starts sweeping, on SIGCHLD and every
/// [`REAP_EVERY`]. Only the daemon calls this: in any other process it would reap
/// children it does not own. Needs the async runtime.
pub fn start() -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    nix::sys::prctl::set_child_subreaper(true)?;
    let mut exited = signal(SignalKind::child())?;
    tokio::spawn(async move {
        let mut backstop = tokio::time::interval(REAP_EVERY);
        loop {
            tokio::select! {
                _ = exited.recv() => {}
                _ = backstop.tick() => {}
            }
            // Reading /proc and waiting for a killed process: off the async threads.
            let _ = tokio::task::spawn_blocking(sweep).await;
        }
    });
    Ok(())
}

/// Kills and reaps every child of this process that no hook started directly.
/// Returns how many there were.
pub fn sweep() -> usize {
    let me = std::process::id();
    let found = child_pids(me);
    let strays: Vec<u32> = {
        let registered = children();
        found
            .into_iter()
            .filter(|p| !registered.contains(p))
            .collect()
    };
    for &pid in &strays {
        let pid = Pid::from_raw(pid as i32);
        let _ = kill(pid, Signal::SIGKILL);
        let _ = waitpid(pid, None);
    }
    if !strays.is_empty() {
        tracing::warn!(
            processes = strays.len(),
            "killed processes that escaped their hook's process group"
        );
    }
    strays.len()
}

/// Kills the process group of every registered hook process and every stray
/// child: the last step of a daemon stop.
pub fn kill_all() {
    let registered: Vec<u32> = children().iter().copied().collect();
    for pid in registered {
        let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
    sweep();
}

/// Pids whose parent is `parent`, from /proc.
fn child_pids(parent: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| {
        let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // "pid (comm) state ppid …": comm may hold spaces and parentheses.
        let rest = &stat[stat.rfind(')')? + 1..];
        let ppid: u32 = rest.split_whitespace().nth(1)?.parse().ok()?;
        (ppid == parent).then_some(pid)
    })
    .collect()
}
