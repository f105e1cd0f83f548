//! Where the daemon's files live by default.
//!
//! The socket is `$XDG_RUNTIME_DIR/hookbus/bus.sock`, or `~/.hookbus/bus.sock` when
//! there is no runtime dir; `--socket` or `HOOKBUS_SOCKET` override it. The pid and
//! log files sit beside the socket with the extensions `.pid` and `.log`.
//!
//! As a drop-in for hermes-bus (`--hermes`), the socket is hermes-bus's
//! (`$HERMES_BUS_ROOT/hermes-bus.sock`, `~/.hermes` by default) and the pid and log
//! files are its `busd`'s (`run/busd.pid`, `run/busd.log` beside it), so hermes's own
//! tools see the daemon.

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

/// The socket's file name where hermes-bus clients look for it.
pub const HERMES_SOCKET_NAME: &str = "hermes-bus.sock";

/// hermes-bus's root: `$HERMES_BUS_ROOT`, or `~/.hermes`.
pub fn hermes_root() -> PathBuf {
    std::env::var_os("HERMES_BUS_ROOT")
        .filter(|d| !d.is_empty())
        .map_or_else(|| home_dir().join(".hermes"), PathBuf::from)
}

/// The socket hermes-bus clients connect to.
pub fn hermes_socket() -> PathBuf {
    hermes_root().join(HERMES_SOCKET_NAME)
}

/// hermes-bus's hooks file: `$HERMES_HOME/hermes-bus/hooks.yaml` (`~/.hermes`
/// when `HERMES_HOME` is unset).
pub fn hermes_hooks_file() -> PathBuf {
    std::env::var_os("HERMES_HOME")
        .filter(|d| !d.is_empty())
        .map_or_else(|| home_dir().join(".hermes"), PathBuf::from)
        .join("hermes-bus")
        .join("hooks.yaml")
}

fn is_hermes(socket: &Path) -> bool {
    socket.file_name() == Some(HERMES_SOCKET_NAME.as_ref())
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
    if is_hermes(socket) {
        return socket.with_file_name("run").join("busd.pid");
    }
    socket.with_extension("pid")
}

/// The detached daemon's log file for a socket.
pub fn log_file(socket: &Path) -> PathBuf {
    if is_hermes(socket) {
        return socket.with_file_name("run").join("busd.log");
    }
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
        // Where hermes-bus's busd keeps them.
        let h = Path::new("/home/u/.hermes/hermes-bus.sock");
        assert_eq!(pid_file(h), Path::new("/home/u/.hermes/run/busd.pid"));
        assert_eq!(log_file(h), Path::new("/home/u/.hermes/run/busd.log"));
    }
}
