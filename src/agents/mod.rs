//! `hookbus agent-hook`: the program a coding agent's hook configuration runs.
//!
//! The agent writes one event as JSON on stdin ([`event`]); on an event that
//! gates a tool (Claude Code's and Codex's `PreToolUse`, Hermes's
//! `pre_tool_call`, Gemini's `BeforeTool`) this sends it to the bus as a
//! `request` on `agent.<agent>.<event>[.<tool>]`: filter hooks see it (one that
//! drops it denies the tool, with its reason), then a responder subscribed to
//! the subject may decide. The decision is printed the way that agent reads it
//! ([`verdict`]). Every event, decided or not, is then published on the same
//! subject with its decision, for `hookbus tail 'agent.>'`, notify hooks and
//! streams. `install` and `uninstall` edit the agents' own configs ([`install`]).
//!
//! It runs on every tool call, so it is plain blocking I/O on one thread: no
//! async runtime, and a missing daemon costs one failed `connect`.

pub mod event;
pub mod install;
pub mod verdict;

use std::io::{BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Map, Value};

use event::{Agent, Event};
use verdict::{render, Decision, Output};

/// Largest event read from stdin.
const MAX_EVENT: u64 = 8 * 1024 * 1024;

/// Largest frame sent with the agent's own payload (`input`), which repeats
/// the normalized fields: above it `input` is left out, so a frame stays
/// under the bus's limit (10 MiB).
const MAX_REQUEST: usize = 4 * 1024 * 1024;

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AgentHookArgs {
    #[command(subcommand)]
    command: Option<AgentHookCommand>,
    #[command(flatten)]
    hook: HookArgs,
}

#[derive(Debug, Args)]
pub struct HookArgs {
    /// The agent that runs this hook (its event format and decision rules)
    #[arg(long, value_enum)]
    agent: Option<Agent>,
    /// How long to wait for a decision, in ms
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    timeout_ms: u64,
    /// What a gating event gets when no decision comes in time (the daemon is
    /// not running, or nothing answered within --timeout-ms): `allow` leaves
    /// it to the agent's own rules, `deny` stops the tool
    #[arg(long, value_enum, default_value_t = OnTimeout::Allow)]
    on_timeout: OnTimeout,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnTimeout {
    Allow,
    Deny,
}

#[derive(Debug, Subcommand)]
pub enum AgentHookCommand {
    /// Add `hookbus agent-hook` to an agent's own hook config (idempotent)
    Install(install::InstallArgs),
    /// Remove what `install` added, and nothing else
    Uninstall(install::InstallArgs),
}

pub fn run(socket: &Path, args: AgentHookArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        Some(AgentHookCommand::Install(a)) => install::install(&a, socket),
        Some(AgentHookCommand::Uninstall(a)) => install::uninstall(&a),
        None => {
            let Some(agent) = args.hook.agent else {
                anyhow::bail!(
                    "say which agent runs this hook: --agent claude|hermes|codex|gemini (or `hookbus agent-hook install --agent …`)"
                );
            };
            Ok(hook(socket, agent, &args.hook))
        }
    }
}

/// Reads the event, decides, prints the decision, publishes the event.
fn hook(socket: &Path, agent: Agent, args: &HookArgs) -> ExitCode {
    let mut input = Vec::new();
    let read = std::io::stdin().take(MAX_EVENT).read_to_end(&mut input);
    let payload = read
        .map_err(|e| e.to_string())
        .and_then(|_| serde_json::from_slice::<Value>(&input).map_err(|e| e.to_string()))
        .and_then(|v| match v {
            Value::Object(_) => Ok(v),
            _ => Err("not a JSON object".to_owned()),
        });
    let payload = match payload {
        Ok(p) => p,
        Err(e) => {
            let why = format!("hookbus agent-hook: cannot read the hook event on stdin ({e})");
            return emit(match args.on_timeout {
                OnTimeout::Deny => Output::blocked(&why),
                OnTimeout::Allow => {
                    eprintln!("{why}");
                    // No opinion, in the agent's format (Gemini CLI reads `{}`).
                    render(agent, "", false, &Decision::NoOpinion)
                }
            });
        }
    };
    let event = Event::new(agent, payload);
    let gate = event.is_gate();
    let subject = event.subject();
    let mut body = event.body();
    // A gate waits for the bus at most its timeout; other events a second.
    let wait = if gate {
        args.timeout_ms
    } else {
        args.timeout_ms.min(1000)
    };
    let mut conn = Conn::open(socket, Instant::now() + Duration::from_millis(wait));
    let (decision, by) = if gate {
        decide(&mut conn, socket, &subject, &body, args)
    } else {
        (Decision::NoOpinion, String::new())
    };
    let output = render(agent, &event.name, gate, &decision);
    // Printed before the event is published: the agent goes on at once.
    let code = emit(output);
    if let Ok(conn) = &mut conn {
        body.insert("decision".into(), decision.name().into());
        if let Some(reason) = decision.reason() {
            body.insert("reason".into(), reason.into());
        }
        if gate {
            body.insert("decided_by".into(), by.into());
        }
        conn.publish(&subject, body);
    }
    code
}

/// Asks the bus: filter hooks, then a responder. Returns the decision and who
/// made it.
fn decide(
    conn: &mut std::io::Result<Conn>,
    socket: &Path,
    subject: &str,
    body: &Map<String, Value>,
    args: &HookArgs,
) -> (Decision, String) {
    let no_decision = |why: String| {
        let (decision, then) = match args.on_timeout {
            OnTimeout::Allow => (Decision::NoOpinion, "left to the agent"),
            OnTimeout::Deny => (
                Decision::Deny(format!("hookbus: {why}; denied by --on-timeout deny")),
                "denied",
            ),
        };
        eprintln!("hookbus agent-hook: {why}: {then} (--on-timeout)");
        (decision, format!("--on-timeout: {why}"))
    };
    let conn = match conn {
        Ok(conn) => conn,
        Err(e) => return no_decision(format!("no bus at {}: {e}", socket.display())),
    };
    let mut request = json!({"type": "request", "rid": 1, "subject": subject, "body": body,
        "timeout_ms": args.timeout_ms});
    if request.to_string().len() > MAX_REQUEST {
        // The agent's own payload repeats the command: left out, the rest fits.
        request["body"]["input"] = Value::Null;
        request["body"]["input_omitted"] = true.into();
    }
    let deadline = Instant::now() + Duration::from_millis(args.timeout_ms + 500);
    let answer = conn
        .send(&request, deadline)
        .and_then(|()| conn.answer(deadline));
    let answer = match answer {
        Ok(a) => a,
        Err(e) => return no_decision(format!("no answer from the bus ({e})")),
    };
    match (answer["type"].as_str(), answer["code"].as_str()) {
        (Some("response"), _) => match Decision::from_response(&answer["body"]) {
            Ok(d) => (d, format!("responder {}", answer["from"])),
            Err(e) => no_decision(e),
        },
        (_, Some("no_responders")) => (Decision::NoOpinion, "no one".into()),
        (_, Some("dropped")) => {
            let detail = answer["detail"].as_str().unwrap_or("dropped by a hook");
            (Decision::Deny(format!("hookbus: {detail}")), "hook".into())
        }
        (_, Some("timeout")) => no_decision(format!("no decision within {} ms", args.timeout_ms)),
        _ => no_decision(format!("the bus answered {answer}")),
    }
}

/// A coding agent's event as `hookbus agent-hook` sends it, in a few words:
/// `decision: command-or-files (reason)`; `None` for another body.
pub fn describe(body: &Value) -> Option<String> {
    body.get("agent")?.as_str()?;
    body.get("event")?.as_str()?;
    let mut line = body["decision"].as_str().unwrap_or("asked").to_owned();
    if let Some(command) = body["command"].as_str() {
        line.push_str(&format!(": {command}"));
    } else if let Some(paths) = body["paths"].as_array() {
        let paths: Vec<&str> = paths.iter().filter_map(Value::as_str).collect();
        line.push_str(&format!(": {}", paths.join(" ")));
    }
    if let Some(reason) = body["reason"].as_str() {
        line.push_str(&format!(" ({reason})"));
    }
    Some(line)
}

fn emit(output: Output) -> ExitCode {
    if let Some(text) = output.stdout {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    }
    if let Some(text) = output.stderr {
        eprintln!("{text}");
    }
    ExitCode::from(output.status)
}

/// A blocking protocol-2 connection: `hello` is sent with the first frame and
/// its `welcome` skipped when answers are read.
struct Conn {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Conn {
    fn open(socket: &Path, deadline: Instant) -> std::io::Result<Conn> {
        // `connect` blocks while the listen queue is full: on a thread, waited
        // for until the deadline (then abandoned with the process).
        let (tx, rx) = std::sync::mpsc::channel();
        let path = socket.to_owned();
        std::thread::spawn(move || {
            let _ = tx.send(UnixStream::connect(path));
        });
        let left = deadline.saturating_duration_since(Instant::now());
        let stream = rx.recv_timeout(left).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
        })??;
        let reader = BufReader::new(stream.try_clone()?);
        let mut conn = Conn { stream, reader };
        let hello = json!({"type": "hello", "protocol": 2, "features": ["topics", "rpc"]});
        conn.send(&hello, deadline)?;
        Ok(conn)
    }

    fn send(&mut self, frame: &Value, deadline: Instant) -> std::io::Result<()> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        self.stream.set_write_timeout(Some(left))?;
        self.stream
            .write_all(&hookbus::frame::encode(frame.to_string().as_bytes()))
    }

    /// The first frame answering `rid` 1.
    fn answer(&mut self, deadline: Instant) -> std::io::Result<Value> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(std::io::ErrorKind::TimedOut.into());
            }
            self.stream.set_read_timeout(Some(left))?;
            let mut len = [0u8; 4];
            self.reader.read_exact(&mut len)?;
            let len = u32::from_be_bytes(len) as usize;
            if len > hookbus::frame::DEFAULT_MAX_FRAME_LEN {
                return Err(std::io::Error::other("frame over the limit"));
            }
            let mut payload = vec![0; len];
            self.reader.read_exact(&mut payload)?;
            let frame: Value = serde_json::from_slice(&payload).map_err(std::io::Error::other)?;
            if frame["rid"] == 1 {
                return Ok(frame);
            }
        }
    }

    /// Publishes, best effort (a fifth of a second at most): the decision is
    /// out already.
    fn publish(&mut self, subject: &str, body: Map<String, Value>) {
        let mut frame = json!({"type": "publish", "subject": subject, "body": body});
        if frame.to_string().len() > MAX_REQUEST {
            frame["body"]["input"] = Value::Null;
            frame["body"]["input_omitted"] = true.into();
        }
        let _ = self.send(&frame, Instant::now() + Duration::from_millis(200));
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
    }
}
