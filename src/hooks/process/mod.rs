//! Subprocess hooks. `command` is run without a shell, with the hook's `env` and
//! `cwd`, in its own process group, with a parent-death signal so a daemon killed
//! with SIGKILL takes its hook processes along.
//!
//! - [`spawn`]: one process per message, the message JSON on stdin (hermes-bus
//!   style), behind a bounded backlog.
//! - [`worker`]: one long-lived process speaking JSON lines.
//! - [`reaper`]: the daemon is a child subreaper; descendants that escape their
//!   hook's process group (`setsid`, a double fork) are killed and reaped.
//!
//! All I/O with hook processes is async and bounded: lines are capped, output is
//! drained while input is written, and every exchange has one deadline.

pub mod reaper;
pub mod spawn;
pub mod worker;

use std::os::unix::process::CommandExt;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};
use tokio::process::{Child, Command};

use super::config::HookConfig;
use super::guest_log::{self, MAX_LOG_LINE};
use super::HookError;

pub use spawn::SpawnHook;
pub use worker::WorkerHook;

/// How long a killed process group may take to be reaped.
const REAP_WAIT: Duration = Duration::from_secs(1);

/// The command of a subprocess hook, in its own process group.
fn command(hook: &HookConfig, argv: &[String]) -> Command {
    let mut cmd = std::process::Command::new(&argv[0]);
    cmd.args(&argv[1..]).envs(&hook.env).process_group(0);
    if let Some(cwd) = &hook.cwd {
        cmd.current_dir(cwd);
    }
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
        });
    }
    let mut cmd = Command::from(cmd);
    cmd.kill_on_drop(true);
    cmd
}

/// Starts `cmd`, registered with the [`reaper`] as a direct child.
fn start(cmd: &mut Command, argv: &[String]) -> Result<Child, HookError> {
    reaper::spawn(cmd).map_err(|e| HookError::Process(format!("cannot run {:?}: {e}", argv[0])))
}

/// Kills `child`'s process group and reaps `child`.
async fn kill_group(child: &mut Child) {
    let pid = child.id();
    if let Some(pid) = pid {
        let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
    let _ = child.start_kill();
    let _ = tokio::time::timeout(REAP_WAIT, child.wait()).await;
    if let Some(pid) = pid {
        reaper::forget(pid);
    }
}

/// `text` cut to `max` bytes (on a character boundary), saying how much was cut.
pub fn truncate(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return text.into();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes more)", &text[..end], text.len() - end).into()
}

/// One line read with [`read_line`].
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    Text(String),
    /// A line longer than the cap, of this many bytes; its text was discarded.
    TooLong(usize),
}

/// Reads one line of at most `max` bytes (the newline excluded) without ever
/// holding more; `None` at EOF.
pub async fn read_line(
    reader: &mut (impl AsyncBufRead + Unpin),
    max: usize,
) -> std::io::Result<Option<Line>> {
    let mut line = Vec::new();
    let mut len = 0usize;
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            if len == 0 {
                return Ok(None);
            }
            break;
        }
        let (chunk, done) = match memchr::memchr(b'\n', buf) {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        len += chunk.len();
        if len <= max {
            line.extend_from_slice(chunk);
        } else {
            line = Vec::new();
        }
        let used = done.unwrap_or(buf.len());
        reader.consume(used);
        if done.is_some() {
            break;
        }
    }
    if len > max {
        return Ok(Some(Line::TooLong(len)));
    }
    Ok(Some(Line::Text(
        String::from_utf8_lossy(&line).into_owned(),
    )))
}

/// Logs a hook process's stderr line by line (each cut to [`MAX_LOG_LINE`]) until
/// it closes.
async fn log_stderr(hook: String, stderr: tokio::process::ChildStderr) {
    let mut reader = tokio::io::BufReader::new(stderr);
    while let Ok(Some(line)) = read_line(&mut reader, MAX_LOG_LINE).await {
        let text = match line {
            Line::Text(text) if text.is_empty() => continue,
            Line::Text(text) => text,
            Line::TooLong(n) => format!("({n}-byte line not shown)"),
        };
        guest_log::line(&hook, "stderr", tracing::Level::INFO, &text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_capped_without_being_held() {
        let input = format!("short\n{}\nlast", "x".repeat(100));
        let mut reader = tokio::io::BufReader::with_capacity(7, input.as_bytes());
        assert_eq!(
            read_line(&mut reader, 10).await.unwrap(),
            Some(Line::Text("short".into()))
        );
        assert_eq!(
            read_line(&mut reader, 10).await.unwrap(),
            Some(Line::TooLong(100))
        );
        assert_eq!(
            read_line(&mut reader, 10).await.unwrap(),
            Some(Line::Text("last".into()))
        );
        assert_eq!(read_line(&mut reader, 10).await.unwrap(), None);
    }

    #[test]
    fn truncation_says_how_much_was_cut() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("abcdef", 3), "abc… (3 bytes more)");
        assert_eq!(truncate("éé", 3), "é… (2 bytes more)");
    }
}
