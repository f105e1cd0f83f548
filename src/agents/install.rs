//! `hookbus agent-hook install|uninstall`: adds `hookbus agent-hook` to a coding
//! agent's own hook config, and takes it out again, touching nothing else.
//!
//! The configs are people's files: they are edited as text, never rewritten
//! from a parse. JSON configs (Claude Code, Codex, Gemini CLI) get new entries
//! appended where they belong ([`json_edit`]); Hermes's YAML gets lines marked
//! as ours ([`yaml_edit`]). Install is idempotent, and uninstall after install
//! gives back the file byte for byte. Each edit is checked by parsing the
//! result, and written whole through a rename.

mod json_edit;
mod yaml_edit;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Args;

use super::event::Agent;

#[derive(Debug, Args)]
pub struct InstallArgs {
    /// The agent whose config to edit
    #[arg(long, value_enum)]
    agent: Agent,
    /// Events to hook [default: the tool gate and the session and notification events]
    #[arg(long, value_delimiter = ',', value_name = "EVENT,…")]
    events: Vec<String>,
    /// Edit this project's config (e.g. DIR/.claude/settings.json) instead of the user's
    #[arg(long, value_name = "DIR", conflicts_with = "config")]
    project: Option<PathBuf>,
    /// Edit this file instead
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Options for the installed command, checked now: --timeout-ms MS, --on-timeout allow|deny
    #[arg(
        long,
        value_name = "ARGS",
        default_value = "",
        allow_hyphen_values = true
    )]
    hook_args: String,
}

/// What marks a hook command as ours.
pub const MARK: &str = "agent-hook --agent";

impl Agent {
    fn default_events(self) -> &'static [&'static str] {
        match self {
            Agent::Claude => &[
                "PreToolUse",
                "PostToolUse",
                "UserPromptSubmit",
                "Notification",
                "Stop",
                "SessionStart",
                "SessionEnd",
            ],
            Agent::Codex => &[
                "PreToolUse",
                "PostToolUse",
                "UserPromptSubmit",
                "Stop",
                "SessionStart",
            ],
            Agent::Gemini => &[
                "BeforeTool",
                "AfterTool",
                "BeforeAgent",
                "AfterAgent",
                "Notification",
                "SessionStart",
                "SessionEnd",
            ],
            Agent::Hermes => &[
                "pre_tool_call",
                "post_tool_call",
                "on_session_start",
                "on_session_end",
            ],
        }
    }

    /// The user's config file, or a project's.
    fn config_file(self, project: Option<&Path>) -> PathBuf {
        let home = || PathBuf::from(std::env::var_os("HOME").unwrap_or_default());
        match (self, project) {
            (Agent::Claude, Some(dir)) => dir.join(".claude/settings.json"),
            (Agent::Claude, None) => home().join(".claude/settings.json"),
            (Agent::Codex, Some(dir)) => dir.join(".codex/hooks.json"),
            (Agent::Codex, None) => home().join(".codex/hooks.json"),
            (Agent::Gemini, Some(dir)) => dir.join(".gemini/settings.json"),
            (Agent::Gemini, None) => home().join(".gemini/settings.json"),
            (Agent::Hermes, Some(dir)) => dir.join("config.yaml"),
            (Agent::Hermes, None) => std::env::var_os("HERMES_HOME")
                .filter(|h| !h.is_empty())
                .map_or_else(|| home().join(".hermes"), PathBuf::from)
                .join("config.yaml"),
        }
    }

    /// What to tell the user after an install.
    fn after_install(self) -> &'static str {
        match self {
            Agent::Claude => "Claude Code picks it up on its own (or run /hooks to look)",
            Agent::Codex => "Codex runs new hooks only once trusted: review them in Codex's /hooks",
            Agent::Gemini => "Gemini CLI loads it at its next start (/hooks lists hooks)",
            Agent::Hermes => "Hermes asks to approve each new hook command on first use (or set hooks_auto_accept: true, or HERMES_ACCEPT_HOOKS=1)",
        }
    }
}

/// The command line a config runs: this binary, and the socket when it is not
/// the default one (the agent may not have this shell's `HOOKBUS_SOCKET`).
fn command(agent: Agent, hook_args: &str, socket: &Path) -> anyhow::Result<String> {
    let exe = std::env::current_exe().context("cannot locate the hookbus binary")?;
    let exe = exe
        .to_str()
        .context("the hookbus binary's path is not UTF-8")?;
    let plain = |what: &str, path: &str| {
        if path.contains(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == '\\') {
            bail!("{what} {path:?} holds spaces or quotes: agents split hook commands on spaces; choose another");
        }
        Ok(())
    };
    plain("the hookbus binary's path", exe)?;
    let mut line = format!("{exe} {MARK} {}", agent.name());
    if socket != hookbus::paths::default_socket() {
        let socket = socket.to_str().context("the socket's path is not UTF-8")?;
        plain("the socket's path", socket)?;
        line.push_str(&format!(" --socket {socket}"));
    }
    if !hook_args.trim().is_empty() {
        // Checked here: a bad option in the agent's hook would fail every call.
        #[derive(clap::Parser)]
        struct Check {
            #[command(flatten)]
            _hook: super::HookArgs,
        }
        let words = hook_args.split_whitespace();
        <Check as clap::Parser>::try_parse_from(std::iter::once("agent-hook").chain(words))
            .map_err(|e| anyhow::anyhow!("--hook-args {hook_args:?}: {}", e.render()))?;
        line.push(' ');
        line.push_str(hook_args.trim());
    }
    Ok(line)
}

fn target(args: &InstallArgs) -> PathBuf {
    args.config
        .clone()
        .unwrap_or_else(|| args.agent.config_file(args.project.as_deref()))
}

fn events(args: &InstallArgs) -> Vec<String> {
    if args.events.is_empty() {
        args.agent
            .default_events()
            .iter()
            .map(|e| e.to_string())
            .collect()
    } else {
        args.events.clone()
    }
}

/// An exclusive lock on the config's directory for a read-modify-write, so
/// two installs at once do not lose each other's entries.
fn lock_dir(file: &Path) -> anyhow::Result<Option<nix::fcntl::Flock<std::fs::File>>> {
    let dir = match file.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(d) => d.to_owned(),
        None => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let Ok(handle) = std::fs::File::open(&dir) else {
        return Ok(None);
    };
    nix::fcntl::Flock::lock(handle, nix::fcntl::FlockArg::LockExclusive)
        .map(Some)
        .map_err(|(_, e)| anyhow::anyhow!("cannot lock {}: {e}", dir.display()))
}

pub fn install(args: &InstallArgs, socket: &Path) -> anyhow::Result<ExitCode> {
    let file = target(args);
    let _lock = lock_dir(&file)?;
    let command = command(args.agent, &args.hook_args, socket)?;
    let old = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", file.display())),
    };
    let events = events(args);
    let (new, added) = match args.agent {
        Agent::Hermes => yaml_edit::install(&old, &events, &command),
        agent => json_edit::install(&old, &events, &handler(agent, &command)),
    }
    .with_context(|| format!("cannot add the hooks to {}", file.display()))?;
    if added.is_empty() {
        println!(
            "{}: already installed, as is, for {}",
            file.display(),
            events.join(", ")
        );
        return Ok(ExitCode::SUCCESS);
    }
    write(&file, &new)?;
    println!(
        "{}: `{command}` added (or brought up to date) for {}",
        file.display(),
        added.join(", ")
    );
    println!("{}", args.agent.after_install());
    Ok(ExitCode::SUCCESS)
}

pub fn uninstall(args: &InstallArgs) -> anyhow::Result<ExitCode> {
    let file = target(args);
    let _lock = lock_dir(&file)?;
    let old = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("{}: no such file, nothing to remove", file.display());
            return Ok(ExitCode::SUCCESS);
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", file.display())),
    };
    let (new, removed) = match args.agent {
        Agent::Hermes => yaml_edit::uninstall(&old),
        _ => json_edit::uninstall(&old),
    }
    .with_context(|| format!("cannot take the hooks out of {}", file.display()))?;
    if removed == 0 {
        println!("{}: no `hookbus agent-hook` in it", file.display());
        return Ok(ExitCode::SUCCESS);
    }
    write(&file, &new)?;
    println!(
        "{}: removed {removed} `hookbus agent-hook` entries",
        file.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The handler a JSON config gets.
fn handler(agent: Agent, command: &str) -> json_edit::Handler<'_> {
    let gemini = agent == Agent::Gemini;
    json_edit::Handler {
        // Gemini's hooks have names, and its timeouts are in ms.
        name: gemini.then_some("hookbus"),
        kind: "command",
        command,
        timeout: if gemini { 10_000 } else { 10 },
    }
}

/// Writes `text` to `file` whole: a temporary file beside it, then a rename.
/// A symbolic link (a config kept in a dotfiles repository) is followed: its
/// target is written, the link stays.
fn write(file: &Path, text: &str) -> anyhow::Result<()> {
    let resolved;
    let file = match std::fs::canonicalize(file) {
        Ok(real) if real != file => {
            resolved = real;
            resolved.as_path()
        }
        _ => file,
    };
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut partial = file.as_os_str().to_owned();
    partial.push(format!(".hookbus-partial-{}", std::process::id()));
    let partial = PathBuf::from(partial);
    std::fs::write(&partial, text)
        .with_context(|| format!("cannot write {}", partial.display()))?;
    if let Ok(meta) = std::fs::metadata(file) {
        let _ = std::fs::set_permissions(&partial, meta.permissions());
    }
    std::fs::rename(&partial, file).with_context(|| format!("cannot write {}", file.display()))
}
