//! `hookbus pub`, `sub`, `req`, `serve-requests` and `tail`, as a user runs them,
//! and three real subscriber processes, one of them killed with SIGKILL.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use crate::common::{bin, TestBus};
use crate::topics::speaker;

fn hookbus(bus: &TestBus) -> Command {
    let mut c = Command::new(bin());
    c.env("HOOKBUS_SOCKET", &bus.socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    c
}

/// Starts a long-running command and returns it with its stdout lines.
fn spawn(bus: &TestBus, args: &[&str]) -> (Child, Lines<BufReader<ChildStdout>>) {
    let mut child = hookbus(bus).args(args).spawn().unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    (child, lines)
}

async fn line(lines: &mut Lines<BufReader<ChildStdout>>) -> String {
    tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("no line within 10 s")
        .unwrap()
        .expect("the command ended")
}

async fn run(bus: &TestBus, args: &[&str]) -> (i32, String, String) {
    let out = hookbus(bus).args(args).output().await.unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn three_subscriber_processes_one_killed_mid_burst() {
    let bus = TestBus::start().await;
    let mut watcher = speaker(&bus, &["topics"]).await;
    watcher
        .send(&json!({"type": "interest", "rid": 1, "subject": "load.>"}))
        .await;
    watcher.recv().await;
    let mut subs: Vec<_> = (0..3)
        .map(|_| spawn(&bus, &["sub", "load.*", "--json"]))
        .collect();
    for _ in 0..3 {
        assert_eq!(watcher.recv().await["is_add"], true);
    }
    let mut publisher = speaker(&bus, &["topics"]).await;
    let n = 3000;
    let (mut victim, _victim_lines) = subs.remove(0);
    let readers: Vec<_> = subs
        .into_iter()
        .map(|(child, mut lines)| {
            tokio::spawn(async move {
                let mut bodies = Vec::new();
                while bodies.len() < n {
                    let event: Value = serde_json::from_str(&line(&mut lines).await).unwrap();
                    bodies.push(event["body"].as_u64().unwrap() as usize);
                }
                (child, bodies)
            })
        })
        .collect();
    for i in 0..n {
        publisher
            .send(&json!({"type": "publish", "subject": "load.x", "body": i}))
            .await;
        if i == n / 3 {
            victim.start_kill().unwrap(); // SIGKILL
        }
    }
    publisher.sync().await;
    victim.wait().await.unwrap();
    let mut alive = Vec::new();
    for reader in readers {
        let (child, bodies) = reader.await.unwrap();
        alive.push(child);
        assert_eq!(bodies, (0..n).collect::<Vec<_>>(), "every event, in order");
    }
    let gone = watcher.recv().await;
    assert_eq!(
        (gone["type"].as_str(), gone["is_add"].as_bool()),
        (Some("interest_change"), Some(false)),
        "{gone}"
    );
    assert!(watcher.sync().await.is_empty(), "exactly one is_add:false");
    bus.stop().await;
}

#[tokio::test]
async fn pub_req_serve_requests_and_tail_from_the_shell() {
    let bus = TestBus::start().await;
    let (_tail, mut tail) = spawn(&bus, &["tail", "--json"]);
    let (_sub, mut sub) = spawn(&bus, &["sub", "build.>"]);
    let (_server, mut server_err) = {
        let mut child = hookbus(&bus)
            .args([
                "serve-requests",
                "math.double",
                "--",
                "python3",
                "-c",
                "import json,sys; n=json.load(sys.stdin); sys.exit(3) if n < 0 else print(n*2)",
            ])
            .spawn()
            .unwrap();
        let err = BufReader::new(child.stderr.take().unwrap()).lines();
        (child, err)
    };
    // Each long-running command has subscribed once it is listed.
    bus.wait_status("tail, sub and serve-requests subscribed", |s| {
        s["topics"]["subscriptions"] == 2 && s["topics"]["monitors"] == 1
    })
    .await;
    let _ = &mut server_err;

    let (code, out, err) = run(&bus, &["pub", "build.web.done", r#"{"ok":true}"#]).await;
    assert_eq!(
        (code, out.trim()),
        (0, "published to 1 subscription(s)"),
        "{err}"
    );
    assert_eq!(line(&mut sub).await, r#"build.web.done {"ok":true}"#);

    let (code, out, err) = run(&bus, &["req", "math.double", "21"]).await;
    assert_eq!((code, out.trim()), (0, "42"), "{err}");
    let (code, out, _) = run(&bus, &["req", "math.double", "-1"]).await;
    assert_eq!(code, 0);
    let failed: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        failed["status"], 3,
        "a failing command is answered with its status: {failed}"
    );

    let (code, _, err) = run(&bus, &["req", "nobody.home", "1"]).await;
    assert_eq!(code, 3, "no responders: {err}");
    assert!(err.contains("no subscriber"), "{err}");
    let (code, _, err) = run(&bus, &["req", "--to", "ghost", "1"]).await;
    assert_eq!(code, 3, "{err}");
    let (code, _, err) = run(&bus, &["pub", "a.*", "1"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("wildcards"), "{err}");

    // The monitor saw the publish, the requests and their replies, in order.
    let mut kinds = Vec::new();
    while kinds.len() < 6 {
        let m: Value = serde_json::from_str(&line(&mut tail).await).unwrap();
        kinds.push(m["kind"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        kinds,
        ["publish", "request", "reply", "request", "reply", "request"]
    );
    bus.stop().await;
}
