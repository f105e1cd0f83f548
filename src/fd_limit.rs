//! File descriptors: the daemon raises its soft `RLIMIT_NOFILE` to the hard limit,
//! and keeps one descriptor in reserve so that, out of descriptors, it can still
//! take a waiting client, answer it `too_many_connections` and close it, instead
//! of leaving it hanging.

use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use nix::sys::resource::{getrlimit, setrlimit, Resource};
use tokio::net::UnixListener;
use tracing::warn;

use crate::protocol::{ErrorCode, ProtocolError};

/// Running out of descriptors is logged at most this often, with a count.
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// Raises the soft limit on open files to the hard limit; returns (old, new) when
/// it changed.
pub fn raise_soft_limit() -> Option<(u64, u64)> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft >= hard {
        return None;
    }
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).ok()?;
    Some((soft, hard))
}

/// Whether `e` means the process (or system) is out of descriptors.
pub fn is_exhausted(e: &std::io::Error) -> bool {
    let code = e.raw_os_error();
    code == Some(nix::errno::Errno::EMFILE as i32) || code == Some(nix::errno::Errno::ENFILE as i32)
}

/// One descriptor held back for turning clients away when the rest are in use.
pub struct Reserve {
    fd: Option<OwnedFd>,
    refused: u64,
    reported: Option<Instant>,
}

impl Reserve {
    pub fn new() -> Self {
        Self {
            fd: open_reserve(),
            refused: 0,
            reported: None,
        }
    }

    /// Out of descriptors: frees the reserve, accepts one waiting client, tells it
    /// `too_many_connections` (without waiting on it) and closes it, then takes the
    /// reserve back. Without a reserve, waits a moment instead of spinning.
    pub async fn turn_away(&mut self, listener: &UnixListener) {
        if self.fd.take().is_none() {
            tokio::time::sleep(Duration::from_millis(50)).await;
            self.fd = open_reserve();
            return;
        }
        let refusal = ProtocolError::new(
            ErrorCode::TooManyConnections,
            "the bus is out of file descriptors; close some connections and retry",
        )
        .to_frame();
        // The waiting client is there: accept returns at once, or this gives up.
        if let Ok(Ok((stream, _))) =
            tokio::time::timeout(Duration::from_millis(10), listener.accept()).await
        {
            let _ = stream.try_write(&refusal);
            self.refused += 1;
        }
        self.fd = open_reserve();
        if self.reported.is_none_or(|at| at.elapsed() >= REPORT_EVERY) {
            warn!(
                refused = self.refused,
                "out of file descriptors: new clients are answered too_many_connections"
            );
            self.refused = 0;
            self.reported = Some(Instant::now());
        }
    }
}

impl Default for Reserve {
    fn default() -> Self {
        Self::new()
    }
}

fn open_reserve() -> Option<OwnedFd> {
    std::fs::File::open("/dev/null").ok().map(OwnedFd::from)
}
