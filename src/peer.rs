//! Who is at the other end of a connection, from the kernel (SO_PEERCRED): kept
//! per session for `status`, the monitor and access rules.

use std::path::PathBuf;

use serde::Serialize;
use tokio::net::UnixStream;

/// A connected client's credentials, as the kernel saw them when it connected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    /// Absent when the peer is in another pid namespace.
    pub pid: Option<i32>,
    /// The peer's executable, when it could be read (`/proc/PID/exe`).
    pub exe: Option<PathBuf>,
}

impl Peer {
    /// Reads the credentials of `stream`'s peer.
    pub fn of(stream: &UnixStream) -> std::io::Result<Self> {
        let cred = stream.peer_cred()?;
        let pid = cred.pid().filter(|&p| p > 0);
        Ok(Self {
            uid: cred.uid(),
            gid: cred.gid(),
            pid,
            exe: pid.and_then(|p| std::fs::read_link(format!("/proc/{p}/exe")).ok()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_peer_in_this_process_is_this_process() {
        let (a, _b) = UnixStream::pair().unwrap();
        let peer = Peer::of(&a).unwrap();
        assert_eq!(peer.uid, nix::unistd::geteuid().as_raw());
        assert_eq!(peer.gid, nix::unistd::getegid().as_raw());
        assert_eq!(peer.pid, Some(std::process::id() as i32));
        assert_eq!(peer.exe, std::env::current_exe().ok());
    }
}
