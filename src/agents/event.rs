//! A coding agent's hook event, as the agent wrote it on stdin, and what the
//! bus sends for it: the subject `agent.<agent>.<event>[.<tool>]` and a body
//! that gives every agent's event the same fields (the shell command a tool
//! runs, the files it writes), with the agent's own payload under `input`.
//! docs/AGENTS.md cites where each agent's fields come from.

use std::path::{Component, Path, PathBuf};

use clap::ValueEnum;
use serde_json::{json, Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Agent {
    /// Claude Code
    Claude,
    /// Hermes Agent (NousResearch)
    Hermes,
    /// OpenAI Codex CLI
    Codex,
    /// Google Gemini CLI
    Gemini,
}

impl Agent {
    pub fn name(self) -> &'static str {
        match self {
            Agent::Claude => "claude",
            Agent::Hermes => "hermes",
            Agent::Codex => "codex",
            Agent::Gemini => "gemini",
        }
    }

    /// The event that runs before a tool and may stop it.
    pub fn gate_event(self) -> &'static str {
        match self {
            Agent::Claude | Agent::Codex => "PreToolUse",
            Agent::Hermes => "pre_tool_call",
            Agent::Gemini => "BeforeTool",
        }
    }

    /// The agent's name for people.
    fn display(self) -> &'static str {
        match self {
            Agent::Claude => "Claude Code",
            Agent::Hermes => "Hermes",
            Agent::Codex => "Codex",
            Agent::Gemini => "Gemini CLI",
        }
    }

    /// Tools that run a shell command (`tool_input.command`).
    fn is_shell(self, tool: &str) -> bool {
        match self {
            Agent::Claude | Agent::Codex => matches!(tool, "Bash" | "shell" | "exec_command"),
            Agent::Hermes => tool == "terminal",
            Agent::Gemini => tool == "run_shell_command",
        }
    }

    /// Tools that write the files they name.
    fn writes(self, tool: &str) -> bool {
        match self {
            Agent::Claude => matches!(tool, "Write" | "Edit" | "MultiEdit" | "NotebookEdit"),
            Agent::Codex => matches!(tool, "apply_patch" | "Write" | "Edit"),
            Agent::Hermes => matches!(tool, "write_file" | "patch"),
            Agent::Gemini => matches!(tool, "write_file" | "replace"),
        }
    }
}

/// One hook event.
#[derive(Debug)]
pub struct Event {
    pub agent: Agent,
    /// `hook_event_name`, or `unknown`.
    pub name: String,
    pub tool: Option<String>,
    pub payload: Value,
}

impl Event {
    pub fn new(agent: Agent, payload: Value) -> Self {
        let text = |key: &str| payload.get(key).and_then(Value::as_str).map(str::to_owned);
        Event {
            agent,
            name: text("hook_event_name").unwrap_or_else(|| "unknown".to_owned()),
            tool: text("tool_name").filter(|t| !t.is_empty()),
            payload,
        }
    }

    /// Whether the agent waits for a decision on this event.
    pub fn is_gate(&self) -> bool {
        self.name == self.agent.gate_event()
    }

    /// `agent.<agent>.<event>[.<tool>]`, each part made a valid subject token.
    pub fn subject(&self) -> String {
        let mut subject = format!("agent.{}.{}", self.agent.name(), token(&self.name));
        if let Some(tool) = &self.tool {
            subject.push('.');
            subject.push_str(&token(tool));
        }
        subject
    }

    /// What the bus carries: the same fields for every agent, then the agent's
    /// own payload under `input`.
    pub fn body(&self) -> Map<String, Value> {
        let p = &self.payload;
        let input = p.get("tool_input").unwrap_or(&Value::Null);
        let cwd = p.get("cwd").and_then(Value::as_str);
        let mut body = Map::new();
        body.insert("agent".into(), self.agent.name().into());
        body.insert("event".into(), self.name.clone().into());
        body.insert("tool".into(), json!(self.tool));
        body.insert(
            "session".into(),
            p.get("session_id").cloned().unwrap_or(Value::Null),
        );
        body.insert("cwd".into(), json!(cwd));
        if let Some(tool) = &self.tool {
            if let Some(command) = input.get("command").and_then(Value::as_str) {
                if self.agent.is_shell(tool) {
                    body.insert("command".into(), command.into());
                    // A patch applied through the shell (Codex: `apply_patch <<EOF`).
                    let patched: Vec<Value> = patch_paths(command)
                        .into_iter()
                        .map(|p| absolute(&p, cwd).into())
                        .collect();
                    if !patched.is_empty() {
                        body.insert("paths".into(), patched.into());
                    }
                }
            }
            // The tool's own directory (Gemini CLI `dir_path`, Codex and Hermes `workdir`).
            let workdir = ["dir_path", "workdir"]
                .iter()
                .find_map(|k| input.get(*k).and_then(Value::as_str));
            if let Some(dir) = workdir {
                body.insert("workdir".into(), absolute(dir, cwd).into());
            }
            if self.agent.writes(tool) {
                let paths: Vec<Value> = written_paths(input)
                    .into_iter()
                    .map(|p| absolute(&p, cwd).into())
                    .collect();
                body.insert("paths".into(), paths.into());
            }
        }
        if let Some((title, text)) = self.summary() {
            body.insert("title".into(), title.into());
            body.insert("text".into(), text.into());
        }
        body.insert("input".into(), p.clone());
        body
    }

    /// A title and a line for people (a desktop notification, `hookbus tail`)
    /// when the agent waits for its user or is done.
    fn summary(&self) -> Option<(String, String)> {
        let p = &self.payload;
        let text = |key: &str| p.get(key).and_then(Value::as_str).filter(|t| !t.is_empty());
        let agent = self.agent.display();
        let (title, line) = match self.name.as_str() {
            "Notification" => (
                format!("{agent}: {}", text("title").unwrap_or("waiting for you")),
                text("message").unwrap_or("waiting for you").to_owned(),
            ),
            "Stop" | "AfterAgent" => (
                format!("{agent}: done"),
                text("last_assistant_message")
                    .or_else(|| text("prompt_response"))
                    .unwrap_or("finished its turn")
                    .to_owned(),
            ),
            "SessionEnd" | "on_session_end" => (
                format!("{agent}: session ended"),
                match text("reason") {
                    Some(reason) => format!("the session ended ({reason})"),
                    None => "the session ended".to_owned(),
                },
            ),
            _ => return None,
        };
        let line = match line.char_indices().nth(500) {
            Some((cut, _)) => format!("{}…", &line[..cut]),
            None => line,
        };
        Some((title, line))
    }
}

/// A subject token: letters, digits, `_` and `-` kept, anything else `_`.
fn token(text: &str) -> String {
    let t: String = text
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if t.is_empty() {
        "_".to_owned()
    } else {
        t
    }
}

/// The files a writing tool names: `file_path`, `path`, `notebook_path`, and
/// the files of a patch (`*** Add File: p`, `*** Update File: p`, `*** Delete File: p`,
/// `*** Move to: p`).
fn written_paths(input: &Value) -> Vec<String> {
    let mut paths = Vec::new();
    for key in ["file_path", "path", "notebook_path"] {
        if let Some(p) = input.get(key).and_then(Value::as_str) {
            paths.push(p.to_owned());
        }
    }
    let patch = input
        .get("patch")
        .or_else(|| input.get("input"))
        .or_else(|| input.get("command"))
        .and_then(Value::as_str)
        .or_else(|| input.as_str());
    if let Some(patch) = patch {
        paths.extend(patch_paths(patch));
    }
    paths
}

/// The files a patch in `apply_patch`'s format names.
fn patch_paths(patch: &str) -> Vec<String> {
    let mut paths = Vec::new();
    for line in patch.lines() {
        let line = line.trim();
        for marker in [
            "*** Add File: ",
            "*** Update File: ",
            "*** Delete File: ",
            "*** Move to: ",
        ] {
            if let Some(p) = line.strip_prefix(marker) {
                paths.push(p.trim().to_owned());
            }
        }
    }
    paths
}

/// `path` against `cwd`, with `.` and `..` resolved by text (the file may not
/// exist yet); `~` is left for the guard, which knows no home.
fn absolute(path: &str, cwd: Option<&str>) -> String {
    let p = Path::new(path);
    let joined = match cwd {
        Some(cwd) if p.is_relative() && !path.starts_with('~') => Path::new(cwd).join(p),
        _ => p.to_owned(),
    };
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_and_bodies_look_the_same_for_every_agent() {
        let claude = Event::new(
            Agent::Claude,
            json!({"hook_event_name": "PreToolUse", "tool_name": "Bash", "session_id": "s",
                   "cwd": "/p", "tool_input": {"command": "ls"}}),
        );
        assert!(claude.is_gate());
        assert_eq!(claude.subject(), "agent.claude.PreToolUse.Bash");
        assert_eq!(claude.body()["command"], "ls");
        let gemini = Event::new(
            Agent::Gemini,
            json!({"hook_event_name": "BeforeTool", "tool_name": "write_file", "cwd": "/p",
                   "tool_input": {"file_path": "src/../a.txt", "content": "x"}}),
        );
        assert_eq!(gemini.body()["paths"], json!(["/p/a.txt"]));
        let mcp = Event::new(
            Agent::Claude,
            json!({"hook_event_name": "PostToolUse", "tool_name": "mcp__git.hub__push"}),
        );
        assert!(!mcp.is_gate());
        assert_eq!(mcp.subject(), "agent.claude.PostToolUse.mcp__git_hub__push");
        let patch =
            "*** Begin Patch\n*** Update File: src/a.rs\n@@\n*** Add File: /etc/x\n*** End Patch";
        let codex = Event::new(
            Agent::Codex,
            json!({"hook_event_name": "PreToolUse", "tool_name": "apply_patch", "cwd": "/r",
                   "tool_input": {"command": patch}}),
        );
        assert_eq!(codex.body()["paths"], json!(["/r/src/a.rs", "/etc/x"]));
        assert!(
            codex.body().get("command").is_none(),
            "a patch is not a shell command"
        );
        let bare = Event::new(Agent::Hermes, json!({}));
        assert_eq!(bare.subject(), "agent.hermes.unknown");
    }
}
