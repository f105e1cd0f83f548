//! Compatibility with the Python hermes-bus 0.7.0 client from PyPI, installed in a
//! venv by `scripts/setup-test-env.sh` (the README's test command runs it).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use hookbus::client::{Client, ClientOptions};
use serde_json::{json, Value};
use tokio::io::AsyncBufReadExt;

use crate::common::TestBus;

/// The venv's Python: `HOOKBUS_TEST_PYTHON`, or the venv the setup script makes.
pub fn python() -> PathBuf {
    let path = std::env::var_os("HOOKBUS_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/hermes-venv/bin/python")
        });
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup-test-env.sh (scripts/test.sh does) to install hermes-bus 0.7.0",
        path.display()
    );
    path
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/hermes")
        .join(name)
}

#[tokio::test]
async fn hermes_client_to_hermes_client_through_hookbus() {
    let bus = TestBus::start().await;
    let out = tokio::process::Command::new(python())
        .arg(script("pair.py"))
        .arg(&bus.socket)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "pair.py failed: {stderr}");
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    let msg = &seen["a_to_b"];
    assert_eq!(msg["type"], "message");
    assert_eq!(msg["from"], "py-a");
    assert_eq!(msg["to"], "py-b");
    assert_eq!(msg["body"], json!({"k": "a->b", "n": [1, 2, 3]}));
    assert!(msg["id"].is_string() && msg["ts"].is_number());
    assert!(uuid::Uuid::parse_str(seen["a_session"].as_str().unwrap()).is_ok());
    assert_eq!(seen["one_shot"]["from"], "script");
    assert_eq!(seen["one_shot_ok"], true);
    assert_eq!(
        seen["ghost_ok"], false,
        "send_message must see endpoint_not_found"
    );
    bus.stop().await;
}

#[tokio::test]
async fn hermes_client_to_rust_client_and_back() {
    let bus = TestBus::start().await;
    let mut rust = Client::connect(ClientOptions::new(&bus.socket, "rust"))
        .await
        .unwrap();
    let mut py = tokio::process::Command::new(python())
        .arg(script("peer.py"))
        .arg(&bus.socket)
        .arg("py")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let from_python = tokio::time::timeout(Duration::from_secs(10), rust.recv())
        .await
        .expect("no message from the hermes client")
        .unwrap();
    assert_eq!(from_python["from"], "py");
    assert_eq!(from_python["body"], json!({"hello": "from python"}));

    let mut lines = tokio::io::BufReader::new(py.stdout.take().unwrap()).lines();
    let reply = loop {
        rust.send("py", json!({"hello": "from rust"}))
            .await
            .unwrap();
        // Retried: the hermes client re-registers after each idle second.
        match tokio::time::timeout(Duration::from_millis(300), lines.next_line()).await {
            Ok(line) => break line.unwrap().expect("peer.py exited without output"),
            Err(_) => continue,
        }
    };
    let reply: Value = serde_json::from_str(&reply).unwrap();
    assert_eq!(reply["body"], json!({"hello": "from rust"}));
    assert_eq!(reply["to"], "py");
    assert!(py.wait().await.unwrap().success());
    bus.stop().await;
}

/// Starts the hermes script `name` as endpoint `endpoint` and waits for its
/// "ready" line; returns it with the rest of its output.
async fn ready(
    bus: &TestBus,
    name: &str,
    endpoint: &str,
) -> (
    tokio::process::Child,
    tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
) {
    let mut py = tokio::process::Command::new(python())
        .arg(script(name))
        .arg(&bus.socket)
        .arg(endpoint)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(py.stdout.take().unwrap()).lines();
    assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("ready"));
    (py, lines)
}

#[tokio::test]
async fn a_hermes_client_sees_nothing_of_heavy_topic_traffic() {
    use crate::topics::{speaker, subscribe};
    let bus = TestBus::start().await;
    let (mut py, mut lines) = ready(&bus, "quiet.py", "quiet").await;
    bus.wait_status("quiet registered", |s| s["endpoints"]["quiet"].is_string())
        .await;

    // Every kind of protocol-2 traffic, around it.
    let mut sub = speaker(&bus, &["topics", "rpc"]).await;
    subscribe(&mut sub, ">", json!({})).await;
    let mut monitor = speaker(&bus, &["monitor"]).await;
    monitor.send(&json!({"type": "monitor"})).await;
    monitor.recv().await;
    let mut publisher = speaker(&bus, &["topics", "rpc"]).await;
    let n = 20_000;
    let reader = tokio::spawn(async move {
        let mut events = 0;
        while events < n {
            if sub.recv().await["type"] == "event" {
                events += 1;
            }
        }
        sub
    });
    for i in 0..n {
        publisher
            .send(&json!({"type": "publish", "subject": format!("load.{}", i % 7), "body": i, "retain": i % 1000 == 0}))
            .await;
    }
    publisher
        .send(&json!({"type": "request", "rid": 1, "subject": "load.x", "timeout_ms": 100}))
        .await;
    publisher
        .send(&json!({"type": "interest", "rid": 2, "subject": ">"}))
        .await;
    publisher.sync().await;
    let _sub = reader.await.unwrap();
    drop(monitor);

    // Then one message for it, resent until it is handed over (the hermes client
    // reconnects after each idle second and misses what comes meanwhile).
    let mut sender = bus.raw().await;
    let mut handed = Vec::new();
    loop {
        sender
            .send(
                &json!({"type": "message", "to": "quiet", "from": "rust", "body": {"last": true}}),
            )
            .await;
        match tokio::time::timeout(Duration::from_millis(300), lines.next_line()).await {
            Ok(Ok(Some(line))) => {
                let msg: Value = serde_json::from_str(&line).unwrap();
                let last = msg["body"] == json!({"last": true});
                handed.push(msg);
                if last {
                    break;
                }
            }
            Ok(other) => panic!("quiet.py ended: {other:?}"),
            Err(_) => continue,
        }
    }
    assert!(
        handed
            .iter()
            .all(|m| m["type"] == "message" && m["from"] == "rust"),
        "the hermes client was handed something new: {handed:?}"
    );
    assert!(py.wait().await.unwrap().success());
    bus.stop().await;
}

#[tokio::test]
async fn a_hermes_client_serves_a_request_through_reply_to() {
    use crate::topics::speaker;
    let bus = TestBus::start().await;
    let (_py, _lines) = ready(&bus, "serve.py", "legacy").await;
    let mut asker = speaker(&bus, &["rpc"]).await;
    // Retried: the hermes client re-registers after each idle second, and a
    // request that finds it away is answered `no_responders`.
    let mut rid = 0;
    let response = loop {
        rid += 1;
        assert!(rid < 50, "the hermes client never answered");
        asker
            .send(&json!({"type": "request", "rid": rid, "to": "legacy", "body": {"n": rid}, "timeout_ms": 2000}))
            .await;
        let answer = asker.recv().await;
        if answer["type"] == "response" {
            break answer;
        }
        assert!(
            matches!(
                answer["code"].as_str(),
                Some("no_responders" | "responder_gone" | "timeout")
            ),
            "{answer}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(response["rid"], rid);
    assert_eq!(response["from"], "legacy");
    assert_eq!(response["body"], json!({"echo": {"n": rid}}));
    bus.stop().await;
}

/// `hookbus hermes install` puts a `hermes-busd` first on PATH; through it the
/// busd commands start and stop hookbus where hermes-bus's clients and its own
/// `hermes-busd status` look, and hookbus runs hermes's hooks file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hookbus_stands_in_for_hermes_bus_through_its_busd_and_hooks_file() {
    let dir = tempfile::tempdir().unwrap();
    let (root, home, bin) = (
        dir.path().join("root"),
        dir.path().join("home"),
        dir.path().join("bin"),
    );
    std::fs::create_dir_all(home.join("hermes-bus")).unwrap();
    std::fs::create_dir_all(&bin).unwrap();
    // hermes's hooks file, in its bare-list form: a script run per message.
    let seen = dir.path().join("seen.jsonl");
    let record = dir.path().join("record.sh");
    std::fs::write(
        &record,
        format!(
            "#!/bin/sh\ncat >> '{}'\necho >> '{}'\n",
            seen.display(),
            seen.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&record, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(
        home.join("hermes-bus/hooks.yaml"),
        format!("# hermes-bus hooks\n- {}\n", record.display()),
    )
    .unwrap();
    // The hermes-bus `hermes-busd` that was there: kept aside, then put back.
    let theirs = "#!/bin/sh\necho hermes-bus busd\n";
    std::fs::write(bin.join("hermes-busd"), theirs).unwrap();
    let venv_bin = python().parent().unwrap().to_owned();
    let path = std::env::join_paths(
        [bin.clone(), venv_bin.clone()]
            .into_iter()
            .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
    )
    .unwrap();
    let run = |program: &std::path::Path, args: &[&str]| {
        let out = std::process::Command::new(program)
            .args(args)
            .env("PATH", &path)
            .env("HERMES_BUS_ROOT", &root)
            .env("HERMES_HOME", &home)
            .env("XDG_STATE_HOME", dir.path().join("state"))
            .env("XDG_CACHE_HOME", crate::common::cache_home())
            .env_remove("HOOKBUS_SOCKET")
            .env_remove("HOOKBUS_HOOKS")
            .env_remove("HERMES_BUS_HOOKS")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{program:?} {args:?}: {text}");
        text
    };
    let hookbus = crate::common::bin();
    let bin_dir = bin.to_str().unwrap();
    let installed = run(&hookbus, &["hermes", "install", "--bin-dir", bin_dir]);
    assert!(installed.contains("kept hermes-bus's"), "{installed}");
    assert!(!installed.contains("warning"), "{installed}");
    let shim = bin.join("hermes-busd");
    let started = run(&shim, &["start"]);
    assert!(started.contains("busd started (pid="), "{started}");
    assert!(root.join("hermes-bus.sock").exists());
    // hermes-bus's own busd sees it running (its pid file, its socket).
    let status = run(&venv_bin.join("hermes-busd"), &["status"]);
    assert!(status.contains("busd running"), "{status}");
    assert!(run(&shim, &["start"]).contains("busd already running"));

    let out = run(&python(), &[script("dropin.py").to_str().unwrap()]);
    let seen_by_clients: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(seen_by_clients["a_to_b"]["from"], "dropin-a", "{out}");
    assert_eq!(seen_by_clients["one_shot"]["from"], "script", "{out}");
    // The hook of hermes's hooks file saw the messages.
    let deadline = std::time::Instant::now() + crate::common::WAIT;
    loop {
        let text = std::fs::read_to_string(&seen).unwrap_or_default();
        if text.contains("one-shot") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the hook saw {text:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let stopped = run(&shim, &["stop"]);
    assert!(stopped.contains("busd stopped"), "{stopped}");
    assert!(!root.join("hermes-bus.sock").exists());
    assert!(run(&shim, &["status"]).contains("busd not running (no PID file)"));
    std::fs::write(root.join("run/busd.pid"), "999999\n").unwrap();
    let stale = run(&shim, &["status"]);
    assert!(
        stale.contains("busd not running (pid=999999 — stale PID file)"),
        "{stale}"
    );
    std::fs::remove_file(root.join("run/busd.pid")).unwrap();
    run(&hookbus, &["hermes", "uninstall", "--bin-dir", bin_dir]);
    assert_eq!(std::fs::read_to_string(&shim).unwrap(), theirs);
    assert!(!bin.join("hermes-busd.hermes-bus").exists());
}
