//! `hookbus pub`, `sub`, `req`, `serve-requests` and `tail`: protocol 2 from the
//! shell.

use std::io::Write;
use std::path::Path;
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use anyhow::bail;
use clap::Subcommand;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use crate::cli::read_body;
use hookbus::client::{Bus, ClientError, Target};

/// Exit statuses of `req` (2 is clap's, for a bad command line).
const EXIT_NO_RESPONDERS: u8 = 3;
const EXIT_DROPPED: u8 = 4;
const EXIT_TIMEOUT: u8 = 5;

#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// Publish one event on a subject
    #[command(
        allow_negative_numbers = true,
        after_help = "Examples:\n  hookbus pub build.web.done '{\"ok\":true}'\n  hookbus pub config.theme '\"dark\"' --retain\n  hookbus pub config.theme null --retain     # clears the retained value"
    )]
    Pub {
        /// Subject: dot-separated tokens, no wildcards
        subject: String,
        /// Body as JSON; read from stdin when omitted
        body: Option<String>,
        /// Keep it as the subject's last value, sent to later subscribers first
        #[arg(long)]
        retain: bool,
    },
    /// Subscribe and print each event: `SUBJECT BODY` lines (or whole frames with --json)
    #[command(
        after_help = "Patterns: `*` matches one token, a last `>` one or more.\nExamples:\n  hookbus sub 'build.*.done'\n  hookbus sub 'jobs.>' --queue workers --json"
    )]
    Sub {
        /// Subject pattern
        pattern: String,
        /// Join this queue group: each event goes to one member
        #[arg(long, value_name = "GROUP")]
        queue: Option<String>,
        /// Print each event frame as a JSON line
        #[arg(long)]
        json: bool,
    },
    /// Send a request and print the response body
    #[command(
        allow_negative_numbers = true,
        after_help = "Exit status: 0 answered, 3 no responders, 4 dropped by a hook, 5 timed out or\nthe responder left.\nExamples:\n  hookbus req img.resize '{\"w\":64}'\n  hookbus req --to editor '\"ping\"' --timeout 2"
    )]
    Req {
        /// Subject to ask (omit with --to)
        subject: Option<String>,
        /// Body as JSON; read from stdin when omitted
        body: Option<String>,
        /// Ask this endpoint instead of a subject's responders
        #[arg(long, value_name = "ENDPOINT")]
        to: Option<String>,
        /// Seconds to wait for the response (at most 300)
        #[arg(long, value_name = "SECS", default_value_t = 5.0)]
        timeout: f64,
    },
    /// Answer requests on a pattern by running a command for each
    #[command(
        name = "serve-requests",
        after_help = "The command gets the request body as JSON on stdin; its stdout (JSON, or else\ntext sent as a JSON string) is the reply. A command that fails is answered\n{\"error\":STDERR,\"status\":CODE}. Requests are served one at a time.\nExample:\n  hookbus serve-requests 'math.double' -- jq '. * 2'"
    )]
    ServeRequests {
        /// Subject pattern to serve
        pattern: String,
        /// Join this queue group, so several servers share the requests
        #[arg(long, value_name = "GROUP")]
        queue: Option<String>,
        /// Seconds a command may run before it is killed and the request failed
        #[arg(long, value_name = "SECS", default_value_t = 30.0)]
        command_timeout: f64,
        /// The command and its arguments
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Watch everything the bus routes (the monitor), like dbus-monitor
    #[command(
        after_help = "Lines: TIME(UTC) KIND SUBJECT-or-TO FROM BODY. Bodies are cut to 200 characters\nunless --json prints whole frames; a coding agent's event (`hookbus agent-hook`) shows as\nits decision, command or files, and reason.\nExamples:\n  hookbus tail\n  hookbus tail 'agent.>'\n  hookbus tail 'agent.>' --json"
    )]
    Tail {
        /// Only frames with a subject matching this pattern
        pattern: Option<String>,
        /// Print each monitored frame as a JSON line
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(socket: &Path, command: TopicsCommand) -> anyhow::Result<ExitCode> {
    match command {
        TopicsCommand::Pub {
            subject,
            body,
            retain,
        } => {
            let body = read_body(body)?;
            let bus = Bus::connect(socket, None, &["topics", "acks"]).await?;
            let ack = bus
                .call(
                    json!({"type": "publish", "subject": subject, "body": body, "retain": retain}),
                )
                .await?;
            match ack["dropped_by"].as_str() {
                Some(hook) => {
                    eprintln!(
                        "hookbus: dropped by hook {hook}: {}",
                        ack["reason"].as_str().unwrap_or("")
                    );
                    return Ok(ExitCode::from(EXIT_DROPPED));
                }
                None => println!("published to {} subscription(s)", ack["delivered"]),
            }
        }
        TopicsCommand::Sub {
            pattern,
            queue,
            json,
        } => subscribe(socket, &pattern, queue.as_deref(), json).await?,
        TopicsCommand::Req {
            subject,
            body,
            to,
            timeout,
        } => return request(socket, subject, body, to, timeout).await,
        TopicsCommand::ServeRequests {
            pattern,
            queue,
            command_timeout,
            command,
        } => {
            if !(command_timeout.is_finite() && command_timeout > 0.0) {
                bail!("--command-timeout must be a positive number of seconds");
            }
            let bus = Bus::connect(socket, None, &["topics", "rpc"]).await?;
            let mut requests = bus.serve(&pattern, queue.as_deref()).await?;
            eprintln!(
                "hookbus: serving requests on `{pattern}` with {:?}",
                command.join(" ")
            );
            while let Some(request) = requests.recv().await {
                let Some(reply_to) = request["reply_to"].as_str() else {
                    continue; // a plain event on the pattern, not a request
                };
                let body = run_command(
                    &command,
                    &request["body"],
                    Duration::from_secs_f64(command_timeout),
                )
                .await
                .unwrap_or_else(|failed| failed);
                bus.reply(reply_to, body).await?;
            }
            bail!("the bus closed the connection");
        }
        TopicsCommand::Tail { pattern, json } => {
            let bus = Bus::connect(socket, None, &["monitor"]).await?;
            let mut frames = bus.monitor(pattern.as_deref()).await?;
            let mut out = std::io::stdout().lock();
            while let Some(frame) = frames.recv().await {
                if json {
                    writeln!(out, "{frame}")?;
                } else {
                    writeln!(out, "{}", describe(&frame))?;
                }
                out.flush()?;
            }
            bail!("the bus closed the connection");
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn request(
    socket: &Path,
    subject: Option<String>,
    body: Option<String>,
    to: Option<String>,
    timeout: f64,
) -> anyhow::Result<ExitCode> {
    if !(timeout.is_finite() && timeout > 0.0 && timeout <= 300.0) {
        bail!("--timeout must be more than 0 and at most 300 seconds");
    }
    // With --to, the one positional argument is the body.
    let (subject, body) = match (&to, subject, body) {
        (Some(_), None, body) | (Some(_), body @ Some(_), None) => (None, body),
        (Some(_), Some(_), Some(_)) => bail!("give either a SUBJECT or --to ENDPOINT, not both"),
        (None, Some(subject), body) => (Some(subject), body),
        (None, None, _) => bail!("give a SUBJECT to ask, or --to ENDPOINT"),
    };
    let target = match &subject {
        Some(subject) => Target::Subject(subject),
        None => Target::Endpoint(to.as_deref().unwrap_or_default()),
    };
    let body = read_body(body)?;
    let bus = Bus::connect(socket, None, &["rpc"]).await?;
    match bus
        .request(target, body, Duration::from_secs_f64(timeout))
        .await
    {
        Ok(response) => {
            println!("{}", response["body"]);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            let (code, hint) = match e.code() {
                Some("no_responders") => (
                    EXIT_NO_RESPONDERS,
                    "nobody serves it; see `hookbus tail` or start a responder",
                ),
                Some("timeout") => (
                    EXIT_TIMEOUT,
                    "no response in time; raise --timeout or check the responder",
                ),
                Some("responder_gone") => (EXIT_TIMEOUT, "the responder left without answering"),
                Some("dropped") => (EXIT_DROPPED, "a filter hook dropped the request"),
                _ => return Err(e.into()),
            };
            if let ClientError::Server { detail, .. } = &e {
                eprintln!("hookbus: {detail} ({hint})");
            }
            Ok(ExitCode::from(code))
        }
    }
}

/// Runs `command` with `body` on stdin: its stdout (JSON, or else a string),
/// or `{"error":…,"status":…}` when it fails or runs too long.
pub(crate) async fn run_command(
    command: &[String],
    body: &Value,
    limit: Duration,
) -> Result<Value, Value> {
    let spawned = tokio::process::Command::new(&command[0])
        .args(&command[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            return Err(json!({"error": format!("cannot run {}: {e}", command[0]), "status": null}))
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        let input = body.to_string();
        // A command that does not read its stdin is not an error.
        tokio::spawn(async move {
            let _ = stdin.write_all(input.as_bytes()).await;
        });
    }
    match tokio::time::timeout(limit, child.wait_with_output()).await {
        Err(_) => Err(
            json!({"error": format!("the command ran longer than {} s and was killed", limit.as_secs_f64()), "status": null}),
        ),
        Ok(Err(e)) => Err(json!({"error": format!("the command failed: {e}"), "status": null})),
        Ok(Ok(out)) if !out.status.success() => Err(json!({
            "error": String::from_utf8_lossy(&out.stderr).trim_end(),
            "status": out.status.code(),
        })),
        Ok(Ok(out)) => {
            let text = String::from_utf8_lossy(&out.stdout);
            Ok(serde_json::from_str(text.trim())
                .unwrap_or_else(|_| Value::String(text.trim_end().to_owned())))
        }
    }
}

/// One monitored frame as a line: `TIME KIND WHERE FROM BODY`.
fn describe(m: &Value) -> String {
    let frame = &m["frame"];
    let ts = frame["ts"]
        .as_f64()
        .unwrap_or_else(hookbus::protocol::unix_now);
    let secs = ts.rem_euclid(86_400.0);
    let time = format!(
        "{:02}:{:02}:{:06.3}",
        (secs / 3600.0) as u32,
        (secs / 60.0) as u32 % 60,
        secs % 60.0
    );
    let kind = m["kind"].as_str().unwrap_or("?");
    let place = match (m["subject"].as_str(), frame["to"].as_str()) {
        (Some(s), _) => s.to_owned(),
        (None, Some(to)) if !to.is_empty() => format!("to:{to}"),
        (None, _) if kind == "message" => "(broadcast)".to_owned(),
        _ => frame["reply_to"].as_str().unwrap_or("-").to_owned(),
    };
    let from = m["from"].as_str().unwrap_or("(anonymous)");
    let mut body = if frame.is_null() {
        format!("({} bytes, too large to show)", m["bytes"])
    } else if let Some(event) = crate::agents::describe(&frame["body"]) {
        event
    } else {
        frame["body"].to_string()
    };
    if let Some(hook) = m["hook"].as_str() {
        body = format!("by {hook}: {} {body}", m["reason"].as_str().unwrap_or(""));
    }
    if body.chars().count() > 200 {
        body = body.chars().take(199).chain(['…']).collect();
    }
    format!("{time} {kind:<8} {place} {from} {body}")
}

/// Prints the events of `pattern` until the bus closes.
async fn subscribe(
    socket: &Path,
    pattern: &str,
    queue: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    let bus = Bus::connect(socket, None, &["topics"]).await?;
    let mut events = bus.subscribe(pattern, queue).await?;
    let mut out = std::io::stdout().lock();
    while let Some(event) = events.recv().await {
        if event["type"] == "gap" {
            eprintln!(
                "hookbus: missed {} event(s): this subscriber fell behind",
                event["missed"]
            );
            continue;
        }
        if json {
            writeln!(out, "{event}")?;
        } else {
            let subject = event["subject"].as_str().unwrap_or("");
            writeln!(out, "{subject} {}", event["body"])?;
        }
        out.flush()?;
    }
    bail!("the bus closed the connection");
}
