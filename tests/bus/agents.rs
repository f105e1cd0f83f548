//! Coding agents on the bus: recorded hook events of Claude Code, Hermes Agent,
//! Codex and Gemini CLI (tests/fixtures/agents) through the real `hookbus
//! agent-hook` binary, decided by the tool-guard WASM hook (built from
//! hooks/tool-guard), by a responder, by the timeout policy, with the daemon
//! down; and `agent-hook install|uninstall` on sample configs.

use std::path::Path;
use std::process::Stdio;

use hookbus::client::Bus;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use crate::common::{bin, manifest_dir, TestBus, WAIT};

fn fixture(name: &str) -> Value {
    let path = manifest_dir().join("tests/fixtures/agents").join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// What `hookbus agent-hook` printed and exited with.
#[derive(Debug)]
struct Run {
    stdout: String,
    stderr: String,
    status: i32,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }
}

async fn agent_hook(socket: &Path, agent: &str, event: &Value, extra: &[&str]) -> Run {
    let mut child = tokio::process::Command::new(bin())
        .arg("--socket")
        .arg(socket)
        .args(["agent-hook", "--agent", agent])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(event.to_string().as_bytes()).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(WAIT * 2, child.wait_with_output())
        .await
        .expect("agent-hook did not finish")
        .unwrap();
    Run {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        status: out.status.code().unwrap_or(-1),
    }
}

/// The recorded gate event of `agent` running `command` in /home/u/proj.
fn shell_event(agent: &str, command: &str) -> Value {
    let mut e = fixture(match agent {
        "claude" => "claude-pretooluse-bash.json",
        "hermes" => "hermes-pre-tool-call.json",
        "codex" => "codex-pretooluse-bash.json",
        _ => "gemini-beforetool-shell.json",
    });
    e["cwd"] = "/home/u/proj".into();
    e["tool_input"]["command"] = command.into();
    e
}

/// The denial's reason, read the way `agent` reads it; `None` when it allows.
fn denial(agent: &str, run: &Run) -> Option<String> {
    assert_eq!(run.status, 0, "{run:?}");
    let out = match agent {
        "gemini" => run.json(),
        _ if run.stdout.trim().is_empty() => return None,
        _ => run.json(),
    };
    match agent {
        "claude" | "codex" => {
            let h = &out["hookSpecificOutput"];
            assert_eq!(h["hookEventName"], "PreToolUse", "{out}");
            assert_eq!(h["permissionDecision"], "deny", "{out}");
            h["permissionDecisionReason"].as_str().map(str::to_owned)
        }
        "hermes" => {
            assert_eq!(out["decision"], "block", "{out}");
            out["reason"].as_str().map(str::to_owned)
        }
        _ => match out["decision"].as_str() {
            None => None,
            Some("deny") => out["reason"].as_str().map(str::to_owned),
            Some(other) => panic!("gemini got {other}: {out}"),
        },
    }
}

const GUARD: &str = r#"
hooks:
  - name: tool-guard
    wasm: $GUESTS/tool-guard.wasm
    match: {type: request, subject: "agent.>"}
    on_error: drop
    config:
      home: /home/u
      deny_commands:
        - pattern: '\bgit\s+push\b.*\s--force\b'
          reason: "force pushes are for people"
"#;

#[tokio::test]
async fn the_wasm_tool_guard_denies_in_each_agent_s_own_format_and_lets_the_rest_through() {
    let bus = TestBus::with_hooks(GUARD).await;
    let watcher = Bus::connect(&bus.socket, None, &["topics"]).await.unwrap();
    let mut log = watcher.subscribe("agent.>", None).await.unwrap();
    for agent in ["claude", "hermes", "codex", "gemini"] {
        for (command, why) in [
            ("rm -rf /", "outside the project /home/u/proj"),
            ("cd .. && rm -r -f ~/other", "outside the project"),
            (
                "git push origin main --force",
                "force pushes are for people",
            ),
            (
                "cat id.pub >> ~/.ssh/authorized_keys",
                "/home/u/.ssh/authorized_keys is protected",
            ),
        ] {
            let run = agent_hook(&bus.socket, agent, &shell_event(agent, command), &[]).await;
            let reason =
                denial(agent, &run).unwrap_or_else(|| panic!("{agent} allowed {command}: {run:?}"));
            assert!(reason.contains(why), "{agent}, {command}: {reason}");
            assert!(reason.contains("tool-guard"), "{reason}");
        }
        for command in ["ls -la", "rm -rf build target", "git push origin main"] {
            let run = agent_hook(&bus.socket, agent, &shell_event(agent, command), &[]).await;
            assert_eq!(denial(agent, &run), None, "{agent} denied {command}");
        }
    }
    // File tools: the files they write, against the project.
    let mut write = fixture("claude-pretooluse-write.json");
    write["cwd"] = "/home/u/proj".into();
    write["tool_input"]["file_path"] = "/home/u/proj/.env".into();
    let run = agent_hook(&bus.socket, "claude", &write, &[]).await;
    assert!(denial("claude", &run).unwrap().contains(".env"), "{run:?}");
    let mut write = fixture("gemini-beforetool-write.json");
    write["cwd"] = "/home/u/proj".into();
    let run = agent_hook(&bus.socket, "gemini", &write, &[]).await;
    assert_eq!(denial("gemini", &run), None, "notes.md in the project");
    write["tool_input"]["file_path"] = "../../../etc/hosts".into();
    let run = agent_hook(&bus.socket, "gemini", &write, &[]).await;
    assert!(
        denial("gemini", &run).unwrap().contains("/etc/hosts"),
        "{run:?}"
    );
    // Events that gate nothing: no decision, published all the same.
    for name in ["claude-notification.json", "claude-stop.json"] {
        let run = agent_hook(&bus.socket, "claude", &fixture(name), &[]).await;
        assert_eq!((run.status, run.stdout.as_str()), (0, ""), "{run:?}");
    }

    // Every event was published on its subject with its decision.
    let mut seen = Vec::new();
    while seen.len() < 4 * 7 + 3 + 2 {
        let e = tokio::time::timeout(WAIT, log.recv())
            .await
            .unwrap()
            .unwrap();
        seen.push(e);
    }
    let first = seen
        .iter()
        .find(|e| e["body"]["agent"] == "claude" && e["body"]["command"] == "rm -rf /")
        .unwrap();
    assert_eq!(first["subject"], "agent.claude.PreToolUse.Bash", "{first}");
    assert_eq!(first["body"]["decision"], "deny");
    assert_eq!(first["body"]["command"], "rm -rf /");
    assert_eq!(first["body"]["decided_by"], "hook");
    assert_eq!(first["body"]["input"]["tool_use_id"], "toolu_01ABC123");
    let subjects: Vec<&str> = seen.iter().filter_map(|e| e["subject"].as_str()).collect();
    for s in [
        "agent.hermes.pre_tool_call.terminal",
        "agent.codex.PreToolUse.Bash",
        "agent.gemini.BeforeTool.run_shell_command",
        "agent.gemini.BeforeTool.write_file",
        "agent.claude.Notification",
        "agent.claude.Stop",
    ] {
        assert!(subjects.contains(&s), "{s} not in {subjects:?}");
    }
    let allowed = seen
        .iter()
        .find(|e| e["body"]["command"] == "ls -la")
        .unwrap();
    assert_eq!(allowed["body"]["decision"], "none");
    assert_eq!(allowed["body"]["decided_by"], "no one");
    bus.stop().await;
}

#[tokio::test]
async fn a_responder_decides_and_no_decision_follows_the_timeout_policy() {
    let bus = TestBus::start().await;
    let ui = Bus::connect(&bus.socket, None, &["topics", "rpc"])
        .await
        .unwrap();
    let mut asks = ui.serve("agent.*.PreToolUse.>", None).await.unwrap();
    let answering = tokio::spawn(async move {
        while let Some(request) = asks.recv().await {
            let Some(reply_to) = request["reply_to"].as_str() else {
                continue; // the event published after the decision
            };
            let command = request["body"]["command"].as_str().unwrap_or("");
            let decision = if command.starts_with("deploy") {
                json!({"decision": "ask", "reason": "deploys need a look"})
            } else {
                json!({"decision": "allow", "reason": "fine by the UI"})
            };
            ui.reply(reply_to, decision).await.unwrap();
        }
    });
    let run = agent_hook(
        &bus.socket,
        "claude",
        &shell_event("claude", "deploy prod"),
        &[],
    )
    .await;
    let h = &run.json()["hookSpecificOutput"];
    assert_eq!(
        (&h["permissionDecision"], &h["permissionDecisionReason"]),
        (&json!("ask"), &json!("deploys need a look"))
    );
    let run = agent_hook(&bus.socket, "claude", &shell_event("claude", "make"), &[]).await;
    assert_eq!(
        run.json()["hookSpecificOutput"]["permissionDecision"],
        "allow"
    );
    // Codex can neither take a bare allow nor ask: no opinion, and a denial.
    let run = agent_hook(&bus.socket, "codex", &shell_event("codex", "make"), &[]).await;
    assert_eq!(run.stdout, "", "{run:?}");
    let run = agent_hook(
        &bus.socket,
        "codex",
        &shell_event("codex", "deploy prod"),
        &[],
    )
    .await;
    assert!(denial("codex", &run)
        .unwrap()
        .contains("deploys need a look"));
    answering.abort();

    // A responder that never answers: the policy decides.
    let silent = Bus::connect(&bus.socket, None, &["topics", "rpc"])
        .await
        .unwrap();
    let _held = silent.serve("agent.gemini.>", None).await.unwrap();
    let event = shell_event("gemini", "make");
    let run = agent_hook(&bus.socket, "gemini", &event, &["--timeout-ms", "300"]).await;
    assert_eq!(run.json(), json!({}), "allow by default: {run:?}");
    let run = agent_hook(
        &bus.socket,
        "gemini",
        &event,
        &["--timeout-ms", "300", "--on-timeout", "deny"],
    )
    .await;
    assert!(denial("gemini", &run)
        .unwrap()
        .contains("no decision within 300 ms"));

    // No daemon at all.
    let gone = bus.socket.with_file_name("nobody.sock");
    let run = agent_hook(&gone, "claude", &shell_event("claude", "make"), &[]).await;
    assert_eq!((run.status, run.stdout.as_str()), (0, ""), "{run:?}");
    let run = agent_hook(
        &gone,
        "hermes",
        &shell_event("hermes", "make"),
        &["--on-timeout", "deny"],
    )
    .await;
    assert!(
        denial("hermes", &run).unwrap().contains("no bus at"),
        "{run:?}"
    );
    // A daemon that takes the connection and never reads: the timeout still holds.
    let wedged = bus.socket.with_file_name("wedged.sock");
    let listener = std::os::unix::net::UnixListener::bind(&wedged).unwrap();
    let holder = std::thread::spawn(move || {
        let held: Vec<_> = listener.incoming().take(1).collect();
        std::thread::sleep(std::time::Duration::from_secs(3));
        drop(held);
    });
    let mut big = shell_event("claude", "make");
    big["tool_input"]["description"] = "x".repeat(2 << 20).into();
    let run = agent_hook(
        &wedged,
        "claude",
        &big,
        &["--timeout-ms", "300", "--on-timeout", "deny"],
    )
    .await;
    assert!(denial("claude", &run).is_some(), "{run:?}");
    holder.join().unwrap();
    // An event it cannot read: exit 2 with the reason (every agent's "block") under deny.
    let run = agent_hook(
        &gone,
        "claude",
        &json!("not an object"),
        &["--on-timeout", "deny"],
    )
    .await;
    assert_eq!(run.status, 2, "{run:?}");
    assert!(run.stderr.contains("cannot read the hook event"), "{run:?}");
    bus.stop().await;
}

#[test]
fn install_and_uninstall_touch_nothing_but_their_own_entries() {
    let dir = tempfile::tempdir().unwrap();
    for (agent, sample, gate) in [
        ("claude", "claude-settings.json", "PreToolUse"),
        ("gemini", "gemini-settings.json", "BeforeTool"),
        ("codex", "codex-hooks.json", "PreToolUse"),
        ("hermes", "hermes-config.yaml", "pre_tool_call"),
    ] {
        let original = std::fs::read(
            manifest_dir()
                .join("tests/fixtures/agents/configs")
                .join(sample),
        )
        .unwrap();
        let file = dir.path().join(sample);
        std::fs::write(&file, &original).unwrap();
        let hookbus = |verb: &str| {
            let out = std::process::Command::new(bin())
                .args(["agent-hook", verb, "--agent", agent, "--config"])
                .arg(&file)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(out.status.success(), "{agent} {verb}: {out:?}");
            text
        };
        let said = hookbus("install");
        assert!(said.contains("added (or brought up to date) for"), "{said}");
        let installed = std::fs::read_to_string(&file).unwrap();
        let ours = format!("{} agent-hook --agent {agent}", bin().display());
        let parsed: Value = if sample.ends_with(".yaml") {
            serde_yaml_ng::from_str(&installed).unwrap()
        } else {
            serde_json::from_str(&installed).unwrap()
        };
        // The gate event keeps the user's hook first and gets ours after it.
        let groups = parsed["hooks"][gate].as_array().unwrap();
        let commands: Vec<String> = groups
            .iter()
            .flat_map(|g| match g.get("hooks") {
                Some(hs) => hs.as_array().unwrap().clone(),
                None => vec![g.clone()],
            })
            .filter_map(|h| h["command"].as_str().map(str::to_owned))
            .collect();
        assert_eq!(commands.last(), Some(&ours), "{agent}: {installed}");
        if agent != "codex" {
            assert!(
                commands.len() >= 2,
                "{agent}: the user's own hook is kept: {installed}"
            );
        }
        // Unrelated keys are still there, as written.
        let unrelated = match agent {
            "claude" => "\"env\": { \"FOO\": \"bär\" }",
            "gemini" => "\"hooksConfig\": { \"enabled\": true }",
            "codex" => "\"command\":\"python3 ~/.codex/hooks/on_stop.py\"",
            _ => "  default: \"hermes-4-405b\"   # the big one\n",
        };
        assert!(installed.contains(unrelated), "{agent}: {installed}");
        assert!(hookbus("install").contains("already installed"));
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            installed,
            "idempotent"
        );
        assert!(hookbus("uninstall").contains("removed"));
        assert_eq!(
            std::fs::read(&file).unwrap(),
            original,
            "{agent}: byte for byte"
        );
    }
}

/// hooks/agent-notify (the shipped file, with this machine's python and a log
/// instead of a desktop): a notification when an agent waits or is done, none
/// for tool calls.
#[tokio::test]
async fn agent_notify_tells_the_user_when_an_agent_waits_or_is_done() {
    let python = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 runs");
    let python = String::from_utf8(python.stdout).unwrap();
    let shipped =
        std::fs::read_to_string(manifest_dir().join("hooks/agent-notify/hooks.yaml")).unwrap();
    let yaml = shipped
        .replace(
            "[python3, ../desktop-notify/desktop-notify.py]",
            &format!("[{}, $HOOKS/desktop-notify/desktop-notify.py]", python.trim()),
        )
        .replace(
            "limits: { timeout_ms: 5000, concurrency: 2 }",
            "limits: { timeout_ms: 5000, concurrency: 2 }\n    env: { PATH: $DIR/none, NOTIFY_LOG: $DIR/notifications.log }",
        )
        .replace("    env: { NOTIFY_URGENCY: critical }\n", "");
    assert_eq!(yaml.matches("NOTIFY_LOG").count(), 5, "{yaml}");
    let bus = TestBus::with_hooks(&yaml).await;
    let log = bus.dir.path().join("notifications.log");
    agent_hook(&bus.socket, "claude", &shell_event("claude", "ls"), &[]).await;
    agent_hook(
        &bus.socket,
        "claude",
        &fixture("claude-notification.json"),
        &[],
    )
    .await;
    let mut end = fixture("claude-stop.json");
    end["hook_event_name"] = "SessionEnd".into();
    end["reason"] = "logout".into();
    agent_hook(&bus.socket, "claude", &end, &[]).await;
    let deadline = std::time::Instant::now() + WAIT;
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.lines().count() >= 2 {
            break text;
        }
        assert!(std::time::Instant::now() < deadline, "notified {text:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let text = std::fs::read_to_string(&log).unwrap_or(text);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "no notification for a tool call: {text}");
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with("Claude Code: Permission needed: Claude needs your permission")),
        "{text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with("Claude Code: session ended: the session ended (logout)")),
        "{text}"
    );
    bus.stop().await;
}

#[test]
fn install_follows_a_symlinked_config_and_names_a_socket_that_is_not_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("dotfiles/settings.json");
    std::fs::create_dir_all(real.parent().unwrap()).unwrap();
    std::fs::write(&real, "{\"model\": \"opus\"}\n").unwrap();
    let link = dir.path().join("settings.json");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let socket = dir.path().join("my.sock");
    let install = |hook_args: &str| {
        std::process::Command::new(bin())
            .arg("--socket")
            .arg(&socket)
            .args([
                "agent-hook",
                "install",
                "--agent",
                "claude",
                "--events",
                "PreToolUse",
            ])
            .arg("--hook-args")
            .arg(hook_args)
            .arg("--config")
            .arg(&link)
            .output()
            .unwrap()
    };
    let out = install("");
    assert!(out.status.success(), "{out:?}");
    assert!(
        link.symlink_metadata().unwrap().file_type().is_symlink(),
        "still a link"
    );
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&real).unwrap()).unwrap();
    let command = v["hooks"]["PreToolUse"][0]["hooks"][0]["command"]
        .as_str()
        .unwrap();
    assert_eq!(
        command,
        format!(
            "{} agent-hook --agent claude --socket {}",
            bin().display(),
            socket.display()
        )
    );
    // Options are checked before anything is written, and an install with
    // others brings the entry up to date instead of adding one.
    let before = std::fs::read_to_string(&real).unwrap();
    let bad = install("--on-timeout deni");
    assert!(!bad.status.success(), "{bad:?}");
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("deni"),
        "{bad:?}"
    );
    assert_eq!(std::fs::read_to_string(&real).unwrap(), before);
    let good = install("--on-timeout deny --timeout-ms 800");
    assert!(good.status.success(), "{good:?}");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&real).unwrap()).unwrap();
    let groups = v["hooks"]["PreToolUse"].as_array().unwrap();
    assert_eq!(groups.len(), 1, "updated, not added: {v}");
    assert!(groups[0]["hooks"][0]["command"]
        .as_str()
        .unwrap()
        .ends_with("--on-timeout deny --timeout-ms 800"));
}

/// A stream on `agent.>` keeps every agent event with its decision.
#[tokio::test]
async fn a_stream_on_agent_subjects_logs_every_event_with_its_decision() {
    let state = tempfile::tempdir().unwrap();
    let mut agents = crate::streams::stream("agents", &["agent.>"]);
    agents.max_age_s = Some(7.0 * 86400.0);
    let bus = crate::streams::store_bus(state.path(), vec![agents], |_| {}).await;
    agent_hook(
        &bus.socket,
        "codex",
        &shell_event("codex", "make test"),
        &[],
    )
    .await;
    agent_hook(&bus.socket, "claude", &fixture("claude-stop.json"), &[]).await;
    let c = Bus::connect(&bus.socket, None, &["streams"]).await.unwrap();
    crate::streams::wait_for_stream(&c, "agents", 2).await;
    let mut events = c.replay("agents", json!("first"), None).await.unwrap();
    let first = events.recv().await.unwrap();
    assert_eq!(first["subject"], "agent.codex.PreToolUse.Bash", "{first}");
    assert_eq!(
        (&first["body"]["command"], &first["body"]["decision"]),
        (&json!("make test"), &json!("none"))
    );
    let second = events.recv().await.unwrap();
    assert_eq!(second["subject"], "agent.claude.Stop", "{second}");
    assert_eq!(second["body"]["title"], "Claude Code: done");
    bus.stop().await;
}
