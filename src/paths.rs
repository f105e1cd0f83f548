//! Where the daemon's files live by default.
//!
//! The socket is `$XDG_RUNTIME_DIR/hookbus/bus.sock`, or `~/.hookbus/bus.sock` when
//! there is no runtime dir; `--socket` or `HOOKBUS_SOCKET` override it. The pid and
//! log files sit beside the socket with the extensions `.pid` and `.log`.

use std::path::{Path, PathBuf};

/// Environment variable that overrides the socket path.
pub const SOCKET_ENV: &str = "HOOKBUS_SOCKET";

/// The default socket path.
pub fn default_socket() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return Path::new(&dir).join("hookbus").join("bus.sock");
    }
    home_dir().join(".hookbus").join("bus.sock")
}

/// The default state directory (the durable store): `$XDG_STATE_HOME/hookbus`,
/// or `~/.local/state/hookbus`.
pub fn state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return Path::new(&dir).join("hookbus");
    }
    home_dir().join(".local").join("state").join("hookbus")
}

fn home_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(home);
    }
    nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map_or_else(|| PathBuf::from("/tmp"), |u| u.dir)
}

/// The daemon's pid file for a socket.
pub fn pid_file(socket: &Path) -> PathBuf {
    socket.with_extension("pid")
}

/// The detached daemon's log file for a socket.
pub fn log_file(socket: &Path) -> PathBuf {
    socket.with_extension("log")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_sit_beside_the_socket() {
        let s = Path::new("/run/user/1/hookbus/bus.sock");
        assert_eq!(pid_file(s), Path::new("/run/user/1/hookbus/bus.pid"));
        assert_eq!(log_file(s), Path::new("/run/user/1/hookbus/bus.log"));
    }
}
