//! What hooks write (WASM stdout, stderr and `log`; subprocess stderr and stray
//! stdout) goes to the daemon's log here: each line cut to [`MAX_LOG_LINE`], and at
//! most [`MAX_LINES_PER_SECOND`] lines a second per hook, the rest counted and
//! reported, so a chatty or hostile hook cannot fill the log.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::Level;

/// The tracing target of hook output, so the command line can show it without the
/// daemon's own info lines.
pub const GUEST_TARGET: &str = "hookbus::guest";

/// Longest line of hook output written to the log.
pub const MAX_LOG_LINE: usize = 1024;

/// Lines a hook may write to the log per second; more are counted, not written.
pub const MAX_LINES_PER_SECOND: u32 = 100;

const WINDOW: Duration = Duration::from_secs(1);

/// Per hook: the current window, lines written in it, lines held back.
struct Budget {
    since: Instant,
    lines: u32,
    held: u64,
}

/// Budgets by hook name. Held only to count: no I/O inside.
static BUDGETS: Mutex<Option<HashMap<String, Budget>>> = Mutex::new(None);

/// Whether `hook` may log another line now; also the count of lines held back in
/// the window just ended, to report.
fn admit(hook: &str) -> (bool, u64) {
    let mut budgets = BUDGETS.lock().unwrap_or_else(|p| p.into_inner());
    let budgets = budgets.get_or_insert_with(HashMap::new);
    let now = Instant::now();
    let budget = budgets.entry(hook.to_owned()).or_insert(Budget {
        since: now,
        lines: 0,
        held: 0,
    });
    let mut reported = 0;
    if now.duration_since(budget.since) >= WINDOW {
        reported = std::mem::take(&mut budget.held);
        budget.since = now;
        budget.lines = 0;
    }
    if budget.lines >= MAX_LINES_PER_SECOND {
        budget.held += 1;
        return (false, reported);
    }
    budget.lines += 1;
    (true, reported)
}

/// Logs one line a hook wrote (`stream` is `stdout`, `stderr` or `log`).
pub fn line(hook: &str, stream: &str, level: Level, text: &str) {
    let (admitted, held) = admit(hook);
    if held > 0 {
        tracing::warn!(target: GUEST_TARGET, hook, held, "hook output over {MAX_LINES_PER_SECOND} lines a second: lines not logged");
    }
    if !admitted {
        return;
    }
    let text = super::process::truncate(text.trim_end(), MAX_LOG_LINE);
    match level {
        Level::TRACE => tracing::trace!(target: GUEST_TARGET, hook, stream, "{text}"),
        Level::DEBUG => tracing::debug!(target: GUEST_TARGET, hook, stream, "{text}"),
        Level::INFO => tracing::info!(target: GUEST_TARGET, hook, stream, "{text}"),
        Level::WARN => tracing::warn!(target: GUEST_TARGET, hook, stream, "{text}"),
        Level::ERROR => tracing::error!(target: GUEST_TARGET, hook, stream, "{text}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hook_gets_a_bounded_number_of_lines_a_second() {
        let hook = "chatty-test-hook";
        let admitted = (0..MAX_LINES_PER_SECOND * 3)
            .filter(|_| admit(hook).0)
            .count();
        assert_eq!(admitted, MAX_LINES_PER_SECOND as usize);
        assert!(admit("another-test-hook").0, "budgets are per hook");
    }
}
