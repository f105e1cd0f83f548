//! `hookbus hermes`: hookbus standing in for hermes-bus. `busd start|stop|status|
//! restart` answer like hermes-bus 0.7's `hermes-busd` (the same lines, the same
//! socket, pid and log files) for the tools that drive it, such as the Hermes
//! plugin that manages the bus's lifecycle; `install` puts a `hermes-busd` on
//! PATH that runs them, `uninstall` takes it away again.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Subcommand, ValueEnum};

use crate::cli::{Globals, ServeArgs};
use hookbus::daemon::{self, Stopped};

#[derive(Debug, Subcommand)]
pub enum HermesCommand {
    /// hermes-bus's daemon commands, served by hookbus (what the installed
    /// `hermes-busd` runs); the socket is hermes-bus's unless --socket is given
    Busd {
        #[arg(value_enum)]
        command: BusdCommand,
        #[command(flatten)]
        serve: Box<ServeArgs>,
    },
    /// Put a `hermes-busd` on PATH that runs `hookbus hermes busd`, so whatever
    /// starts hermes-bus starts hookbus (a `hermes-busd` already there is kept
    /// aside and put back by `uninstall`)
    Install {
        /// Where to put it [default: ~/.local/bin]
        #[arg(long, value_name = "DIR")]
        bin_dir: Option<PathBuf>,
    },
    /// Remove the `hermes-busd` that `install` put there
    Uninstall {
        /// Where it was put [default: ~/.local/bin]
        #[arg(long, value_name = "DIR")]
        bin_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum BusdCommand {
    Start,
    Stop,
    Status,
    Restart,
}

/// The line that marks a `hermes-busd` as hookbus's.
const MARK: &str = "# hermes-busd from hookbus";

/// Where `install` keeps a `hermes-busd` it replaced.
const KEPT: &str = "hermes-busd.hermes-bus";

pub async fn run(
    socket: &Path,
    command: HermesCommand,
    globals: &Globals,
) -> anyhow::Result<ExitCode> {
    match command {
        HermesCommand::Busd { command, serve } => busd(socket, command, &serve, globals).await,
        HermesCommand::Install { bin_dir } => install(&bin_dir.unwrap_or_else(default_bin_dir)),
        HermesCommand::Uninstall { bin_dir } => uninstall(&bin_dir.unwrap_or_else(default_bin_dir)),
    }
}

async fn busd(
    socket: &Path,
    command: BusdCommand,
    serve: &ServeArgs,
    globals: &Globals,
) -> anyhow::Result<ExitCode> {
    let log = hookbus::paths::log_file(socket);
    let start = || async {
        match crate::cli::start_daemon(socket, serve, globals).await {
            Ok((status, false)) => {
                println!("busd already running (pid={})", status["pid"]);
                ExitCode::SUCCESS
            }
            Ok((status, true)) => {
                println!("busd started (pid={})", status["pid"]);
                println!("  socket: {}", socket.display());
                println!("  log:    {}", log.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                println!("busd start failed: {e:#}");
                ExitCode::FAILURE
            }
        }
    };
    let stop = || async {
        match daemon::stop(socket).await {
            Ok(Stopped::NotRunning) => println!("busd not running (no PID file)"),
            Ok(Stopped::Stopped { pid }) => {
                println!("Stopping busd (pid={pid})...");
                println!("busd stopped");
            }
            Err(e) => println!("  kill failed: {e}"),
        }
    };
    Ok(match command {
        BusdCommand::Start => start().await,
        BusdCommand::Stop => {
            stop().await;
            ExitCode::SUCCESS
        }
        BusdCommand::Restart => {
            stop().await;
            start().await
        }
        BusdCommand::Status => {
            match daemon::query_status(socket).await {
                Ok(status) => {
                    println!("busd running (pid={})", status["pid"]);
                    println!("  socket: {} ✓", socket.display());
                    println!("  log:    {}", log.display());
                    let endpoints = hookbus::client::endpoints(socket).await.unwrap_or_default();
                    if endpoints.is_empty() {
                        println!("  No connected endpoints");
                    } else {
                        println!("  Connected endpoints ({}):", endpoints.len());
                        let mut names: Vec<_> = endpoints.iter().collect();
                        names.sort_by(|a, b| a.0.cmp(b.0));
                        for (name, id) in names {
                            let id = id.as_str().unwrap_or_default();
                            println!("    {name}  (sid={}...)", &id[..id.len().min(8)]);
                        }
                    }
                }
                Err(_) => match std::fs::read_to_string(hookbus::paths::pid_file(socket)) {
                    // What hermes-bus's busd says of a pid file nobody answers for.
                    Ok(pid) => println!("busd not running (pid={} — stale PID file)", pid.trim()),
                    Err(_) => println!("busd not running (no PID file)"),
                },
            }
            ExitCode::SUCCESS
        }
    })
}

fn default_bin_dir() -> PathBuf {
    PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
        .join(".local")
        .join("bin")
}

fn is_ours(path: &Path) -> bool {
    std::fs::read_to_string(path)
        .is_ok_and(|text| text.lines().nth(1).is_some_and(|l| l.starts_with(MARK)))
}

/// `'text'` for sh.
fn sh_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

fn install(dir: &Path) -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe().context("cannot locate the hookbus binary")?;
    let exe = exe
        .to_str()
        .context("the hookbus binary's path is not UTF-8")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let target = dir.join("hermes-busd");
    if target.exists() && !is_ours(&target) {
        let kept = dir.join(KEPT);
        if kept.exists() {
            bail!(
                "{} is not hookbus's, and {} already holds another: move one of them away first",
                target.display(),
                kept.display()
            );
        }
        std::fs::rename(&target, &kept)
            .with_context(|| format!("cannot move {} aside", target.display()))?;
        println!(
            "kept hermes-bus's {} as {} (`hookbus hermes uninstall` puts it back)",
            target.display(),
            kept.display()
        );
    }
    let script = format!(
        "#!/bin/sh\n{MARK} (`hookbus hermes install`; `hookbus hermes uninstall` removes it):\n# hermes-bus's daemon commands (start, stop, status, restart), served by hookbus on\n# hermes-bus's socket, whatever HOOKBUS_SOCKET says.\nunset HOOKBUS_SOCKET\nexec {} --hermes hermes busd \"$@\"\n",
        sh_quote(exe)
    );
    // Written whole, then renamed: a reader never sees half a script.
    let partial = dir.join(".hermes-busd.partial");
    std::fs::write(&partial, script)
        .with_context(|| format!("cannot write {}", partial.display()))?;
    std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o755))?;
    std::fs::rename(&partial, &target)
        .with_context(|| format!("cannot write {}", target.display()))?;
    println!("installed {}", target.display());
    match first_on_path("hermes-busd") {
        Some(first) if first != target => println!(
            "warning: {} comes first on PATH: put {} before its directory",
            first.display(),
            dir.display()
        ),
        None => println!(
            "warning: {} is not on PATH: add it, e.g. export PATH=\"{}:$PATH\"",
            dir.display(),
            dir.display()
        ),
        Some(_) => {}
    }
    Ok(ExitCode::SUCCESS)
}

fn uninstall(dir: &Path) -> anyhow::Result<ExitCode> {
    let target = dir.join("hermes-busd");
    let kept = dir.join(KEPT);
    if target.exists() {
        if !is_ours(&target) {
            bail!(
                "{} is not hookbus's `hermes-busd`: left alone",
                target.display()
            );
        }
        std::fs::remove_file(&target)
            .with_context(|| format!("cannot remove {}", target.display()))?;
        println!("removed {}", target.display());
    } else {
        println!("no hermes-busd in {}", dir.display());
    }
    if kept.exists() {
        std::fs::rename(&kept, &target)
            .with_context(|| format!("cannot put {} back", kept.display()))?;
        println!("put hermes-bus's {} back", target.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn first_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}
