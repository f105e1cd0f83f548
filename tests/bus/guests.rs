//! The hooks shipped in hooks/, each through a live daemon, checking its real effect.
//! The WASM hooks are built from source by scripts/build-guests.sh.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{bin, cache_home, manifest_dir, Raw, TestBus, WAIT};

/// Sends `message` from a fresh anonymous connection.
async fn send(bus: &TestBus, message: Value) {
    let mut c = bus.raw().await;
    c.send(&message).await;
    assert!(c.sync().await.is_empty());
}

/// Whatever `rx` receives before a sync round trip completes.
async fn drain(rx: &mut Raw) -> Vec<Value> {
    rx.sync().await
}

/// Waits until `path` exists and `check` holds for its text.
async fn wait_file(path: &Path, check: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if check(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {}: {text:?}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn redact_masks_secrets_and_leaves_clean_messages_alone() {
    let bus = TestBus::with_hooks(
        r#"hooks:
  - name: redact
    wasm: $GUESTS/redact.wasm
    limits: { timeout_ms: 1000 }
    config:
      patterns: ['(?i)db_password=(?P<secret>[^&\s]+)']
      mask: "[REDACTED:{kind}]"
"#,
    )
    .await;
    let mut rx = bus.registered("rx").await;
    let pem = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----";
    send(
        &bus,
        json!({"type": "message", "to": "rx", "from": "agent", "id": "s1", "body": {
            "text": "deploy with sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123",
            "curl": "curl -H 'Authorization: Bearer abcdefgh.ijklmnop' 'https://db?db_password=hunter2&x=1'",
            "env": {"AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE", "password": "correct horse"},
            "key": pem,
        }}),
    )
    .await;
    send(
        &bus,
        json!({"type": "message", "to": "rx", "id": "c1", "body": {"text": "nothing secret here", "n": 3}}),
    )
    .await;
    let got = drain(&mut rx).await;
    assert_eq!(got.len(), 2, "{got:?}");
    let body = &got[0]["body"];
    assert_eq!(body["text"], "deploy with [REDACTED:api_key]");
    assert_eq!(
        body["curl"],
        "curl -H 'Authorization: Bearer [REDACTED:bearer]' 'https://db?db_password=[REDACTED:pattern]&x=1'"
    );
    assert_eq!(body["env"]["AWS_ACCESS_KEY_ID"], "[REDACTED:api_key]");
    assert_eq!(body["env"]["password"], "[REDACTED:key]");
    assert_eq!(body["key"], "[REDACTED:private_key]");
    assert_eq!(
        (&got[0]["from"], &got[0]["id"]),
        (&json!("agent"), &json!("s1"))
    );
    let text = got[0].to_string();
    for secret in ["sk-ant", "AKIA", "hunter2", "horse", "b3Blbn", "ijklmnop"] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
    assert_eq!(
        got[1]["body"],
        json!({"text": "nothing secret here", "n": 3})
    );
}

#[tokio::test]
async fn enrich_adds_host_time_and_a_trace_id_when_absent() {
    let bus = TestBus::with_hooks(
        "hooks:\n  - name: enrich\n    wasm: $GUESTS/enrich.wasm\n    limits: { timeout_ms: 1000 }\n",
    )
    .await;
    let mut rx = bus.registered("rx").await;
    let before = now_ms();
    send(
        &bus,
        json!({"type": "message", "to": "rx", "body": {"n": 1}}),
    )
    .await;
    send(
        &bus,
        json!({"type": "message", "to": "rx", "body": {"n": 2}}),
    )
    .await;
    send(
        &bus,
        json!({"type": "message", "to": "rx", "trace_id": "caller-trace", "body": {"n": 3}}),
    )
    .await;
    let got = drain(&mut rx).await;
    let after = now_ms();
    assert_eq!(got.len(), 3, "{got:?}");

    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    for m in &got {
        assert_eq!(m["bus_host"], host.as_str(), "{m}");
        let at = m["received_at"].as_str().unwrap();
        let ms = iso8601_ms(at);
        assert!(before <= ms && ms <= after, "{at} not within the send");
    }
    let trace = |m: &Value| m["trace_id"].as_str().unwrap().to_string();
    for m in &got[..2] {
        let t = trace(m);
        assert!(
            t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit()),
            "{t}"
        );
    }
    assert_ne!(trace(&got[0]), trace(&got[1]), "trace ids must differ");
    assert_eq!(
        trace(&got[2]),
        "caller-trace",
        "a sender's trace id is kept"
    );
    assert_eq!(got[2]["body"], json!({"n": 3}));
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Milliseconds since the epoch of `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn iso8601_ms(text: &str) -> u64 {
    let n = |range: std::ops::Range<usize>| text[range].parse::<i64>().unwrap();
    assert_eq!((text.len(), &text[23..]), (24, "Z"), "{text}");
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    // Days from civil (Howard Hinnant), the inverse of what the hook does.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    let secs = days * 86400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19);
    (secs * 1000 + n(20..23)) as u64
}

#[tokio::test]
async fn desktop_notify_notifies_or_falls_back_to_a_log_line() {
    let python = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 runs");
    let python = String::from_utf8(python.stdout).unwrap();
    let bus = TestBus::with_hooks(&format!(
        r#"hooks:
  - name: desktop-notify
    command: [{python}, $HOOKS/desktop-notify/desktop-notify.py]
    phase: notify
    match: {{ to: user }}
    env: {{ PATH: $DIR/bin, NOTIFY_LOG: $DIR/notifications.log }}
"#,
        python = python.trim()
    ))
    .await;
    let dir = bus.dir.path().to_path_buf();
    let _user = bus.registered("user").await;
    let _other = bus.registered("someone-else").await;

    // No notifier on PATH: a log line.
    send(
        &bus,
        json!({"type": "message", "to": "user", "from": "ci", "body": {"text": "build green"}}),
    )
    .await;
    send(
        &bus,
        json!({"type": "message", "to": "someone-else", "body": {"text": "not for the desktop"}}),
    )
    .await;
    let log = wait_file(&dir.join("notifications.log"), |t| t.contains('\n')).await;
    assert!(
        log.trim_end().ends_with("hookbus: ci → user: build green"),
        "{log}"
    );

    // A notifier: it is called instead (a stand-in notify-send records its arguments).
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    let fake = dir.join("bin/notify-send");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > {}/notified\n",
            dir.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    send(
        &bus,
        json!({"type": "message", "to": "user", "from": "agent", "body": {"title": "Review", "text": "PR 12 is ready"}}),
    )
    .await;
    let args = wait_file(&dir.join("notified"), |t| t.contains("PR 12")).await;
    let args: Vec<&str> = args.lines().collect();
    assert_eq!(
        args,
        [
            "--app-name=hookbus",
            "--urgency=normal",
            "Review",
            "PR 12 is ready"
        ]
    );
    let log = std::fs::read_to_string(dir.join("notifications.log")).unwrap();
    assert_eq!(
        log.lines().count(),
        1,
        "only the first went to the log: {log}"
    );
}

/// Every hooks/*/hooks.yaml snippet loads: `hookbus hooks check` compiles and inits it.
#[test]
fn every_shipped_hooks_yaml_checks() {
    let mut checked = 0;
    for entry in std::fs::read_dir(manifest_dir().join("hooks")).unwrap() {
        let yaml = entry.unwrap().path().join("hooks.yaml");
        if !yaml.exists() {
            continue;
        }
        let out = std::process::Command::new(bin())
            .args(["hooks", "check"])
            .arg(&yaml)
            .env("XDG_CACHE_HOME", cache_home())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}{}",
            yaml.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        checked += 1;
    }
    assert!(checked >= 6, "only {checked} hooks.yaml files found");
}

#[tokio::test]
async fn guard_enforces_size_fields_type_and_depth() {
    let bus = TestBus::with_hooks(
        r#"hooks:
  - name: guard
    wasm: $GUESTS/guard.wasm
    limits: { timeout_ms: 1000 }
    config: { max_bytes: 2048, require: [from, body], types: [message], body_max_depth: 8 }
"#,
    )
    .await;
    let mut rx = bus.registered("rx").await;
    let deep = (0..10).fold(json!("x"), |inner, _| json!([inner]));
    let cases = [
        (
            json!({"type": "message", "to": "rx", "from": "a", "id": "ok", "body": {"n": 1}}),
            true,
        ),
        (
            json!({"type": "message", "to": "rx", "from": "a", "id": "big", "body": "x".repeat(4000)}),
            false,
        ),
        (
            json!({"type": "message", "to": "rx", "id": "anon", "body": {"from": "nested does not count"}}),
            false,
        ),
        (
            json!({"type": "message", "to": "rx", "from": "a", "id": "nobody"}),
            false,
        ),
        (
            json!({"type": "message", "to": "rx", "from": "a", "id": "deep", "body": deep}),
            false,
        ),
        (
            json!({"type": "message", "to": "rx", "from": "a", "id": "ok2", "body": "fine"}),
            true,
        ),
    ];
    for (message, _) in &cases {
        send(&bus, message.clone()).await;
    }
    let got: Vec<Value> = drain(&mut rx)
        .await
        .into_iter()
        .map(|m| m["id"].clone())
        .collect();
    assert_eq!(got, [json!("ok"), json!("ok2")]);
    let status = bus.hooks_status().await;
    assert_eq!(status["filtered_out"], 4, "{status}");
}

#[tokio::test]
async fn notify_rules_delivers_a_formatted_notification_to_its_endpoint() {
    let bus = TestBus::with_hooks(
        r#"hooks:
  - name: notify-rules
    wasm: $GUESTS/notify-rules.wasm
    phase: notify
    limits: { timeout_ms: 2000 }
    config:
      notify_to: desk
      rules:
        - name: build-failed
          match: { body.event: build, body.status: [failed, error] }
          to: ops
          format: "{from}: build of {body.project} failed ({body.error?no details})"
        - name: mentions
          match: { body.text: "*@lead*" }
          format: "{from} mentioned the lead"
"#,
    )
    .await;
    let mut ops = bus.registered("ops").await;
    let mut desk = bus.registered("desk").await;
    let mut ci = bus.registered("ci-log").await;
    let message = |from: &str, body: Value| json!({"type": "message", "to": "ci-log", "from": from, "body": body});
    send(
        &bus,
        message(
            "builder",
            json!({"event": "build", "status": "ok", "project": "web"}),
        ),
    )
    .await;
    send(
        &bus,
        message(
            "builder",
            json!({"event": "build", "status": "failed", "project": "web"}),
        ),
    )
    .await;
    send(
        &bus,
        message("agent-3", json!({"text": "ping @lead about the release"})),
    )
    .await;

    // The originals are delivered untouched (a notify hook never filters).
    let mut originals = Vec::new();
    while originals.len() < 3 {
        originals.push(ci.recv().await);
    }
    assert_eq!(originals[1]["body"]["status"], "failed");

    let note = ops.recv().await;
    assert_eq!(note["from"], "hook:notify-rules", "{note}");
    assert_eq!(
        note["body"]["text"],
        "builder: build of web failed (no details)"
    );
    assert_eq!(note["body"]["rule"], "build-failed");
    let note = desk.recv().await;
    assert_eq!(note["body"]["text"], "agent-3 mentioned the lead", "{note}");

    // Nothing else: the passing build notified no one.
    assert!(drain(&mut ops).await.is_empty());
    assert!(drain(&mut desk).await.is_empty());
}

#[tokio::test]
async fn dedupe_drops_repeats_within_the_window() {
    let bus = TestBus::with_hooks(
        r#"hooks:
  - name: dedupe
    wasm: $GUESTS/dedupe.wasm
    limits: { timeout_ms: 1000 }
    config: { key: [from, body], window_ms: 400 }
"#,
    )
    .await;
    let mut rx = bus.registered("rx").await;
    let message = |id: &str, from: &str, body: Value| json!({"type": "message", "to": "rx", "id": id, "from": from, "body": body});
    send(&bus, message("1", "a", json!({"x": 1, "y": [1, 2]}))).await;
    send(&bus, message("2", "a", json!({"y": [1, 2], "x": 1}))).await; // same key, fields reordered
    send(&bus, message("3", "b", json!({"x": 1, "y": [1, 2]}))).await; // another sender
    send(&bus, message("4", "a", json!({"x": 2}))).await;
    let ids = |got: Vec<Value>| got.into_iter().map(|m| m["id"].clone()).collect::<Vec<_>>();
    assert_eq!(
        ids(drain(&mut rx).await),
        [json!("1"), json!("3"), json!("4")]
    );

    tokio::time::sleep(Duration::from_millis(600)).await;
    send(&bus, message("5", "a", json!({"x": 1, "y": [1, 2]}))).await;
    assert_eq!(
        ids(drain(&mut rx).await),
        [json!("5")],
        "after the window it passes again"
    );
    assert_eq!(bus.hooks_status().await["filtered_out"], 1);
}

/// `hookbus hooks new` for `lang`, then the project's own build.sh, then
/// `hookbus hooks test` on one message it drops and one it passes.
fn scaffold_builds_and_passes_hooks_test(lang: &str) {
    let tools = manifest_dir().join("target/guest-tools");
    assert!(
        tools.join("py/bin/wasm-tools").exists()
            && tools.join("node/node_modules/.bin/jco").exists(),
        "guest toolchains missing: run scripts/build-guests.sh (scripts/test.sh does)"
    );
    let path = format!(
        "{}:{}:{}",
        tools.join("py/bin").display(),
        tools.join("node/node_modules/.bin").display(),
        std::env::var("PATH").unwrap()
    );
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("proj");
    let name = format!("new-{lang}");
    let run = |cmd: &mut std::process::Command| {
        let out = cmd.env("PATH", &path).output().unwrap();
        assert!(
            out.status.success(),
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let created = run(std::process::Command::new(bin())
        .args(["hooks", "new", &name, "--lang", lang, "--dir"])
        .arg(&project));
    assert!(created.contains("./build.sh"), "{created}");
    // Rust scaffolds share the guests' cargo target dir, so dependencies build once.
    run(std::process::Command::new(project.join("build.sh")).env(
        "CARGO_TARGET_DIR",
        manifest_dir().join("target/guest-build"),
    ));
    assert!(project.join(format!("{name}.wasm")).exists());

    let mut child = std::process::Command::new(bin())
        .args(["hooks", "test", &name, "--config"])
        .arg(project.join("hooks.yaml"))
        .env("XDG_CACHE_HOME", cache_home())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        child.stdin.as_mut().unwrap(),
        concat!(
            r#"{"type":"message","to":"a","body":{"text":"this is forbidden"}}"#,
            "\n",
            r#"{"type":"message","to":"a","body":{"text":"this is fine"}}"#,
            "\n"
        )
        .as_bytes(),
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let verdicts: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        verdicts,
        [
            json!({"verdict": "drop", "reason": "contains \"forbidden\""}),
            json!({"verdict": "pass"})
        ],
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn scaffold_rust() {
    scaffold_builds_and_passes_hooks_test("rust");
}

#[test]
fn scaffold_c() {
    scaffold_builds_and_passes_hooks_test("c");
}

#[test]
fn scaffold_python() {
    scaffold_builds_and_passes_hooks_test("python");
}

#[test]
fn scaffold_js() {
    scaffold_builds_and_passes_hooks_test("js");
}

#[test]
fn scaffold_assemblyscript() {
    scaffold_builds_and_passes_hooks_test("assemblyscript");
}
