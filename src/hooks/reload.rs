//! Hot reload: watch the config file and every module or script it names, and
//! reload the hook set when one changes.
//!
//! Parent directories are watched, not the files, because editors and compilers
//! replace files by rename. A file whose directory does not exist yet (the default
//! `~/.config/hookbus/hooks.yaml` before it is created) is watched through its
//! nearest existing ancestor, and the watches move down as directories appear.
//! Events are debounced by [`RELOAD_DEBOUNCE`]; the reload itself reads the config
//! again after building, so a file caught half-saved is not taken.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tracing::{info, warn};

use super::runtime::HookRuntime;
use super::LoadError;

/// Quiet time after the last change before reloading.
pub const RELOAD_DEBOUNCE: Duration = Duration::from_millis(100);

/// Starts the watcher thread (reloads run on it, through the current async
/// runtime). It stops when `runtime` has no other owner.
pub fn watch(runtime: &Arc<HookRuntime>) -> Result<(), LoadError> {
    let handle = tokio::runtime::Handle::try_current()
        .map_err(|_| LoadError::Watch("it needs the async runtime".into()))?;
    let (tx, rx) = std::sync::mpsc::channel();
    let mut watcher = notify::recommended_watcher(move |event| {
        let _ = tx.send(event);
    })
    .map_err(|e| LoadError::Watch(format!("cannot watch files: {e}")))?;
    let weak = Arc::downgrade(runtime);
    let mut files = absolute(runtime.watched_files());
    let mut dirs = BTreeSet::new();
    rewatch(&mut watcher, &files, &mut dirs);
    runtime.set_watching(files.iter().cloned().collect());
    std::thread::Builder::new()
        .name("hookbus-reload".into())
        .spawn(move || loop {
            let first = match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(event) => event,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if weak.strong_count() == 0 {
                        return;
                    }
                    continue;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
            };
            if !touches(&first, &files) {
                continue;
            }
            // Quiet for RELOAD_DEBOUNCE: only changes count, so a stream of other
            // events in a watched directory (reads, say) does not hold a reload off.
            let mut quiet_from = std::time::Instant::now();
            loop {
                let left = RELOAD_DEBOUNCE.saturating_sub(quiet_from.elapsed());
                match rx.recv_timeout(left) {
                    Ok(event) if touches(&event, &files) => quiet_from = std::time::Instant::now(),
                    Ok(_) => {}
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => break,
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                }
            }
            let Some(runtime) = weak.upgrade() else {
                return;
            };
            match handle.block_on(runtime.reload()) {
                Ok(n) => info!(hooks = n, "hooks reloaded"),
                Err(e) => warn!(error = %e, "reload failed; the hooks in force stay"),
            }
            files = absolute(runtime.watched_files());
            rewatch(&mut watcher, &files, &mut dirs);
            runtime.set_watching(files.iter().cloned().collect());
        })
        .map_err(|e| LoadError::Watch(format!("cannot start the reload thread: {e}")))?;
    Ok(())
}

fn absolute(files: Vec<PathBuf>) -> BTreeSet<PathBuf> {
    let cwd = std::env::current_dir().unwrap_or_default();
    files.into_iter().map(|f| cwd.join(f)).collect()
}

/// Whether `event` changed one of `files` or a directory on the way to one (created,
/// renamed or removed). Reads (our own included) and metadata changes do not
/// count, or each reload would trigger the next.
fn touches(event: &notify::Result<notify::Event>, files: &BTreeSet<PathBuf>) -> bool {
    use notify::event::{EventKind, ModifyKind};
    let Ok(event) = event else { return false };
    let changes = match event.kind {
        EventKind::Create(_) | EventKind::Remove(_) => true,
        EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Modify(_) => true,
        _ => false,
    };
    changes
        && event
            .paths
            .iter()
            .any(|p| files.contains(p) || files.iter().any(|f| f.starts_with(p)))
}

fn rewatch(watcher: &mut impl Watcher, files: &BTreeSet<PathBuf>, dirs: &mut BTreeSet<PathBuf>) {
    let wanted: BTreeSet<PathBuf> = files
        .iter()
        .filter_map(|f| {
            f.ancestors()
                .skip(1)
                .find(|d| d.is_dir())
                .map(Path::to_owned)
        })
        .collect();
    for dir in dirs.difference(&wanted) {
        let _ = watcher.unwatch(dir);
    }
    for dir in wanted.difference(dirs) {
        if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive) {
            warn!(dir = %dir.display(), error = %e, "cannot watch for hook changes");
        }
    }
    *dirs = wanted;
}
