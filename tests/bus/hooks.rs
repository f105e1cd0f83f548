//! The hook engine through a live daemon: real WASM modules built from source
//! (tests/guests/probe, by scripts/build-guests.sh), WAT fixtures, and real
//! subprocesses.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{bin, cache_home, guest, manifest_dir, Raw, TestBus, WAIT};

/// Sends `body` to `to` from a fresh anonymous connection.
pub async fn send(bus: &TestBus, to: &str, id: &str, body: Value) {
    let mut c = bus.raw().await;
    c.send(&json!({"type": "message", "to": to, "id": id, "body": body}))
        .await;
    assert!(c.sync().await.is_empty());
}

/// The next message `rx` gets, skipping nothing.
pub async fn next(rx: &mut Raw) -> Value {
    let m = rx.recv().await;
    assert_eq!(m["type"], "message", "{m}");
    m
}

pub fn hook<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["hooks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == name)
        .unwrap()
}

#[tokio::test]
async fn filters_drop_and_enrich() {
    let bus = TestBus::with_hooks(
        "hooks:\n  - name: tagger\n    wasm: $PROBE\n    limits: { timeout_ms: 2000 }\n    config: { tag: seen }\n",
    )
    .await;
    let mut rx = bus.registered("rx").await;
    send(&bus, "rx", "1", json!({"n": 1})).await;
    let m = next(&mut rx).await;
    assert_eq!(m["tagged_by"], json!(["seen"]));
    assert_eq!(
        (m["id"].clone(), m["body"].clone()),
        (json!("1"), json!({"n": 1}))
    );

    send(&bus, "rx", "2", json!({"probe": "drop"})).await;
    send(&bus, "rx", "3", json!({})).await;
    assert_eq!(
        next(&mut rx).await["id"],
        "3",
        "the dropped message must not arrive"
    );
    let status = bus.hooks_status().await;
    assert_eq!(status["filtered_out"], 1);
    let tagger = hook(&status, "tagger");
    assert_eq!(
        (
            tagger["calls"].clone(),
            tagger["drops"].clone(),
            tagger["replaced"].clone()
        ),
        (json!(3), json!(1), json!(2))
    );
    assert_eq!(tagger["kind"], "wasm component");
    assert!(tagger["p50_us"].as_u64().is_some());
    bus.stop().await;
}

#[tokio::test]
async fn chain_order_and_match_selectors() {
    let bus = TestBus::with_hooks(
        r#"
hooks:
  - name: first
    wasm: $PROBE
    limits: { timeout_ms: 2000 }
    config: { tag: first }
    match: { to: "agent-*" }
  - name: second
    wasm: $PROBE
    limits: { timeout_ms: 2000 }
    config: { tag: second }
  - name: only-from-ci
    wasm: $PROBE
    limits: { timeout_ms: 2000 }
    config: { tag: ci }
    match: { from: ci }
"#,
    )
    .await;
    let mut agent = bus.registered("agent-7").await;
    let mut human = bus.registered("human").await;
    send(&bus, "agent-7", "a", json!({})).await;
    send(&bus, "human", "h", json!({})).await;
    assert_eq!(
        next(&mut agent).await["tagged_by"],
        json!(["first", "second"])
    );
    assert_eq!(next(&mut human).await["tagged_by"], json!(["second"]));
    let mut ci = bus.raw().await;
    ci.send(&json!({"type": "message", "to": "human", "from": "ci", "body": {}}))
        .await;
    assert_eq!(next(&mut human).await["tagged_by"], json!(["second", "ci"]));
    bus.stop().await;
}

#[tokio::test]
async fn notify_hooks_emit_messages_that_reach_endpoints() {
    let bus =
        TestBus::with_hooks("hooks:\n  - name: notifier\n    wasm: $PROBE\n    limits: { timeout_ms: 2000 }\n    phase: notify\n")
            .await;
    let mut rx = bus.registered("rx").await;
    let mut ops = bus.registered("ops").await;
    send(&bus, "rx", "m1", json!({"probe": "emit", "emit_to": "ops"})).await;
    assert_eq!(
        next(&mut rx).await["id"],
        "m1",
        "notify hooks do not hold up delivery"
    );
    let note = next(&mut ops).await;
    assert_eq!(note["body"], json!({"notified": "m1"}));
    assert_eq!(note["from"], "hook:notifier");
    assert!(note["id"].is_string() && note["ts"].is_number());
    assert_eq!(bus.status().await["counters"]["emitted"], 1);
    bus.stop().await;
}

#[tokio::test]
async fn emit_loops_are_cut_by_the_hop_limit() {
    let bus =
        TestBus::with_hooks("hooks:\n  - name: echo\n    wasm: $PROBE\n    limits: { timeout_ms: 2000 }\n    phase: notify\n").await;
    let mut rx = bus.registered("rx").await;
    send(&bus, "rx", "loop", json!({"probe": "echo"})).await;
    let limit = hookbus::hooks::MAX_HOPS as usize;
    for _ in 0..=limit {
        assert_eq!(next(&mut rx).await["body"]["probe"], "echo");
    }
    bus.wait_hooks("the hop limit to cut the loop", |s| s["hop_limited"] == 1)
        .await;
    assert!(rx.sync().await.is_empty(), "no copies beyond the limit");
    bus.stop().await;
}

#[tokio::test]
async fn an_infinite_loop_is_interrupted_while_other_traffic_flows() {
    let bus = TestBus::with_hooks(
        "hooks:\n  - name: probe\n    wasm: $PROBE\n    limits: { timeout_ms: 100 }\n",
    )
    .await;
    let mut rx = bus.registered("rx").await;
    let started = Instant::now();
    let mut looper = bus.raw().await;
    looper
        .send(&json!({"type": "message", "to": "rx", "id": "spin", "body": {"probe": "loop"}}))
        .await;
    let mut other = bus.raw().await;
    for i in 0..200 {
        other
            .send(&json!({"type": "message", "to": "rx", "id": i.to_string(), "body": {}}))
            .await;
    }
    let mut got = Vec::new();
    while got.len() < 201 {
        got.push(next(&mut rx).await["id"].clone());
    }
    assert!(
        got.contains(&json!("spin")),
        "on_error: pass delivers the interrupted message"
    );
    let others: Vec<_> = got.iter().filter(|id| **id != "spin").cloned().collect();
    assert_eq!(
        others,
        (0..200).map(|i| json!(i.to_string())).collect::<Vec<_>>()
    );
    assert!(started.elapsed() < WAIT);
    let status = bus.hooks_status().await;
    assert_eq!(hook(&status, "probe")["errors"], 1);
    assert_eq!(hook(&status, "probe")["last_error"], "deadline exceeded");
    // The instance was recycled: the hook still works.
    send(&bus, "rx", "after", json!({})).await;
    assert_eq!(next(&mut rx).await["id"], "after");
    bus.stop().await;
}

#[tokio::test]
async fn a_core_module_that_never_returns_is_interrupted() {
    let bus = TestBus::with_hooks(
        "hooks:\n  - name: spin\n    wasm: $FIXTURES/spin.wat\n    on_error: drop\n",
    )
    .await;
    let mut rx = bus.registered("rx").await;
    send(&bus, "rx", "x", json!({})).await;
    assert!(rx.sync().await.is_empty(), "on_error: drop");
    let status = bus
        .wait_hooks("the error to be counted", |s| {
            hook(s, "spin")["errors"] == 1
        })
        .await;
    assert_eq!(hook(&status, "spin")["kind"], "wasm core module");
    bus.stop().await;
}

#[tokio::test]
async fn a_memory_bomb_is_capped() {
    let bus = TestBus::with_hooks(
        "hooks:\n  - name: bomb\n    wasm: $PROBE\n    limits: { memory_mb: 8, timeout_ms: 5000 }\n    on_error: drop\n",
    )
    .await;
    let mut rx = bus.registered("rx").await;
    send(&bus, "rx", "boom", json!({"probe": "bomb"})).await;
    send(&bus, "rx", "fine", json!({})).await;
    assert_eq!(next(&mut rx).await["id"], "fine");
    let status = bus.hooks_status().await;
    assert_eq!(
        hook(&status, "bomb")["last_error"],
        "memory limit exceeded",
        "{status}"
    );
    bus.stop().await;
}

#[tokio::test]
async fn traps_follow_on_error() {
    let bus = TestBus::with_hooks(
        r#"
hooks:
  - name: lenient
    wasm: $PROBE
    limits: { timeout_ms: 2000 }
    match: { to: lenient }
  - name: strict
    wasm: $PROBE
    limits: { timeout_ms: 2000 }
    match: { to: strict }
    on_error: drop
"#,
    )
    .await;
    let mut lenient = bus.registered("lenient").await;
    let mut strict = bus.registered("strict").await;
    send(&bus, "lenient", "l", json!({"probe": "trap"})).await;
    send(&bus, "strict", "s", json!({"probe": "trap"})).await;
    assert_eq!(next(&mut lenient).await["body"], json!({"probe": "trap"}));
    assert!(strict.sync().await.is_empty());
    let status = bus.hooks_status().await;
    for name in ["lenient", "strict"] {
        assert_eq!(hook(&status, name)["errors"], 1);
        assert!(
            hook(&status, name)["last_error"]
                .as_str()
                .unwrap()
                .contains("unreachable"),
            "{status}"
        );
    }
    bus.stop().await;
}

#[tokio::test]
async fn hooks_have_no_capability_unless_granted() {
    let shared = tempfile::tempdir().unwrap();
    std::fs::write(shared.path().join("secret.txt"), "s3cret").unwrap();
    let yaml = format!(
        r#"
hooks:
  - name: denied
    wasm: $PROBE
    limits: {{ timeout_ms: 2000 }}
    match: {{ to: denied }}
  - name: granted
    wasm: $PROBE
    limits: {{ timeout_ms: 2000 }}
    match: {{ to: granted }}
    grants: {{ dirs: [{{ host: {}, guest: /data }}] }}
"#,
        shared.path().display()
    );
    let bus = TestBus::with_hooks(&yaml).await;
    let mut denied = bus.registered("denied").await;
    let mut granted = bus.registered("granted").await;
    let secret = shared.path().join("secret.txt");
    send(
        &bus,
        "denied",
        "d",
        json!({"probe": "read", "path": secret}),
    )
    .await;
    send(
        &bus,
        "denied",
        "d2",
        json!({"probe": "read", "path": "/etc/passwd"}),
    )
    .await;
    send(
        &bus,
        "granted",
        "g",
        json!({"probe": "read", "path": "/data/secret.txt"}),
    )
    .await;
    for _ in 0..2 {
        let read = next(&mut denied).await["body"]["read"].clone();
        assert!(read.as_str().unwrap().starts_with("denied"), "{read}");
    }
    assert_eq!(next(&mut granted).await["body"]["read"], "ok: 6 bytes");
    bus.stop().await;
}

#[tokio::test]
async fn changing_to_needs_the_routing_grant() {
    let bus = TestBus::with_hooks(
        r#"
hooks:
  - name: router
    wasm: $PROBE
    limits: { timeout_ms: 2000 }
    match: { from: granted }
    grants: { routing: true }
  - name: sneaky
    wasm: $PROBE
    limits: { timeout_ms: 2000 }
    match: { from: sneaky }
"#,
    )
    .await;
    let mut a = bus.registered("a").await;
    let mut b = bus.registered("b").await;
    let mut c = bus.raw().await;
    c.send(&json!({"type": "message", "to": "a", "from": "granted", "body": {"probe": "reroute", "reroute": "b"}})).await;
    c.send(&json!({"type": "message", "to": "a", "from": "sneaky", "body": {"probe": "reroute", "reroute": "b"}})).await;
    assert_eq!(next(&mut b).await["from"], "granted");
    assert_eq!(
        next(&mut a).await["from"],
        "sneaky",
        "an ungranted reroute is an error; on_error: pass keeps the original"
    );
    let status = bus.hooks_status().await;
    assert!(hook(&status, "sneaky")["last_error"]
        .as_str()
        .unwrap()
        .contains("routing"));
    bus.stop().await;
}

#[tokio::test]
async fn hot_reload_under_traffic_loses_nothing_and_applies_within_a_second() {
    let bus = TestBus::with_hooks(
        "hooks:\n  - name: tagger\n    wasm: $PROBE\n    limits: { timeout_ms: 2000 }\n    config: { tag: v1 }\n",
    )
    .await;
    let mut rx = bus.registered("rx").await;
    let mut tx = bus.raw().await;
    const N: usize = 3000;
    let sender = async {
        for i in 0..N {
            tx.send(&json!({"type": "message", "to": "rx", "id": i.to_string(), "body": {}}))
                .await;
            if i % 100 == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if i == N / 4 {
                bus.rewrite_hooks(
                    "hooks:\n  - name: tagger\n    wasm: $PROBE\n    limits: { timeout_ms: 2000 }\n    config: { tag: v2 }\n",
                );
            }
        }
    };
    let receiver = async {
        let mut tags = Vec::with_capacity(N);
        let mut rewritten_at = None;
        let mut first_v2 = None;
        for i in 0..N {
            let m = next(&mut rx).await;
            assert_eq!(
                m["id"],
                i.to_string(),
                "messages arrive complete and in order"
            );
            if i == N / 4 {
                rewritten_at = Some(Instant::now());
            }
            let tag = m["tagged_by"][0].as_str().unwrap().to_owned();
            if tag == "v2" && first_v2.is_none() {
                first_v2 = Some(Instant::now());
            }
            tags.push(tag);
        }
        (tags, rewritten_at.unwrap(), first_v2)
    };
    let ((), (tags, rewritten_at, first_v2)) = tokio::join!(sender, receiver);
    let first_v2 = first_v2.expect("the new hook never took effect");
    let switch = tags.iter().position(|t| t == "v2").unwrap();
    assert!(
        tags[..switch].iter().all(|t| t == "v1") && tags[switch..].iter().all(|t| t == "v2"),
        "one clean switch"
    );
    let delay = first_v2.saturating_duration_since(rewritten_at);
    assert!(
        delay < Duration::from_secs(1),
        "new behaviour visible after {delay:?}"
    );
    let status = bus.hooks_status().await;
    assert_eq!(status["last_reload"]["ok"], true);
    assert!(status["generation"].as_u64().unwrap() >= 2);
    bus.stop().await;
}

#[tokio::test]
async fn a_broken_config_or_module_keeps_the_last_good_set() {
    let bus = TestBus::with_hooks(
        "hooks:\n  - name: tagger\n    wasm: $PROBE\n    limits: { timeout_ms: 2000 }\n    config: { tag: good }\n",
    )
    .await;
    let mut rx = bus.registered("rx").await;
    let generation = bus.hooks_status().await["generation"].clone();

    bus.rewrite_hooks("hooks:\n  - name: tagger\n    wasm: $PROBE\n    limits: { timeout_ms: 2000 }\n    confg: {}\n");
    let status = bus
        .wait_hooks("the bad yaml to be reported", |s| {
            s["last_reload"]["ok"] == false
        })
        .await;
    let error = status["last_reload"]["error"].as_str().unwrap();
    assert!(
        error.contains("hooks.yaml:5") && error.contains("confg"),
        "{error}"
    );
    assert_eq!(status["generation"], generation);
    send(&bus, "rx", "1", json!({})).await;
    assert_eq!(next(&mut rx).await["tagged_by"], json!(["good"]));

    let junk = bus.dir.path().join("junk.wasm");
    std::fs::write(&junk, b"\0asm\x01\0\0\0garbage").unwrap();
    bus.rewrite_hooks(&format!(
        "hooks:\n  - name: tagger\n    wasm: {}\n",
        junk.display()
    ));
    let status = bus
        .wait_hooks("the bad module to be reported", |s| {
            s["last_reload"]["error"]
                .as_str()
                .is_some_and(|e| e.contains("junk.wasm") || e.contains("compil"))
        })
        .await;
    assert_eq!(status["generation"], generation);
    send(&bus, "rx", "2", json!({})).await;
    assert_eq!(next(&mut rx).await["tagged_by"], json!(["good"]));

    // A config whose init fails is refused too.
    bus.rewrite_hooks(
        "hooks:\n  - name: tagger\n    wasm: $PROBE\n    limits: { timeout_ms: 2000 }\n    config: { fail_init: true }\n",
    );
    bus.wait_hooks("the failing init to be reported", |s| {
        s["last_reload"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("configured to fail"))
    })
    .await;
    send(&bus, "rx", "3", json!({})).await;
    assert_eq!(next(&mut rx).await["tagged_by"], json!(["good"]));
    bus.stop().await;
}

#[tokio::test]
async fn core_module_abi_filters() {
    let bus =
        TestBus::with_hooks("hooks:\n  - name: guard\n    wasm: $FIXTURES/size_guard.wat\n").await;
    let mut rx = bus.registered("rx").await;
    send(&bus, "rx", "big", json!({"pad": "x".repeat(300)})).await;
    send(&bus, "rx", "small", json!({})).await;
    assert_eq!(next(&mut rx).await["id"], "small");
    assert_eq!(hook(&bus.hooks_status().await, "guard")["drops"], 1);
    bus.stop().await;
}

#[tokio::test]
async fn worker_subprocess_filters_emits_and_is_restarted() {
    let bus = TestBus::with_hooks(
        "hooks:\n  - name: worker\n    command: [python3, $FIXTURES/worker.py]\n    mode: worker\n    config: { tag: py }\n    limits: { timeout_ms: 500 }\n",
    )
    .await;
    let mut rx = bus.registered("rx").await;
    let mut ops = bus.registered("ops").await;
    send(&bus, "rx", "1", json!({})).await;
    assert_eq!(next(&mut rx).await["worker"], "py");
    send(&bus, "rx", "2", json!({"worker": "drop"})).await;
    send(&bus, "rx", "3", json!({"worker": "emit", "emit_to": "ops"})).await;
    assert_eq!(next(&mut rx).await["id"], "3");
    assert_eq!(next(&mut ops).await["body"], json!({"from_worker": "3"}));
    // A hang times out (on_error: pass) and the worker is restarted.
    send(&bus, "rx", "4", json!({"worker": "hang"})).await;
    assert_eq!(next(&mut rx).await["id"], "4");
    let deadline = Instant::now() + WAIT;
    loop {
        send(&bus, "rx", "5", json!({})).await;
        let m = next(&mut rx).await;
        if m["worker"] == "py" {
            break;
        }
        assert!(Instant::now() < deadline, "worker never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = bus.hooks_status().await;
    assert!(
        hook(&status, "worker")["starts"].as_u64().unwrap() >= 2,
        "{status}"
    );
    bus.stop().await;
}

#[tokio::test]
async fn spawn_hooks_get_each_message_on_stdin() {
    let bus = TestBus::with_hooks(
        "hooks:\n  - name: record\n    command: [$FIXTURES/record.sh]\n    env: { RECORD_TO: $DIR/spawned.jsonl }\n",
    )
    .await;
    let mut rx = bus.registered("rx").await;
    for i in 0..20 {
        send(&bus, "rx", &i.to_string(), json!({"i": i})).await;
        next(&mut rx).await;
    }
    let file = bus.dir.path().join("spawned.jsonl");
    let lines = wait_lines(&file, 20).await;
    let mut ids: Vec<u64> = lines
        .iter()
        .map(|l| l["body"]["i"].as_u64().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..20).collect::<Vec<_>>());
    bus.stop().await;
}

#[tokio::test]
async fn a_hermes_style_hook_list_runs_python_scripts_with_json_on_stdin() {
    let bus = TestBus::with_hooks("# hermes-bus hooks.yaml\n- $FIXTURES/record.py\n").await;
    let _rx = bus.registered("rx").await;
    let file = bus.dir.path().join("hermes.jsonl");
    send(&bus, "rx", "h1", json!({"record_to": file, "text": "hi"})).await;
    let lines = wait_lines(&file, 1).await;
    assert_eq!(lines[0]["id"], "h1");
    assert_eq!(lines[0]["body"]["text"], "hi");
    let status = bus.hooks_status().await;
    assert_eq!(
        (
            hook(&status, "record")["kind"].clone(),
            hook(&status, "record")["phase"].clone()
        ),
        (json!("spawn"), json!("notify"))
    );
    bus.stop().await;
}

pub async fn wait_lines(file: &std::path::Path, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "{} has {} of {n} lines",
            file.display(),
            lines.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Zombie children of this process, from /proc.
/// Waits until no child of this test process is a zombie. Other tests run at the
/// same time, and a process that just exited is a zombie until tokio reaps it, so
/// only one that stays unreaped fails.
pub async fn no_zombies_left() {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = zombies();
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "children left unreaped: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// This test process's children that exited and were not reaped: "pid name" each.
pub fn zombies() -> Vec<String> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("status")).ok())
        .filter(|s| {
            s.lines()
                .any(|l| l.starts_with("State:") && l.contains('Z'))
                && s.lines()
                    .any(|l| l.strip_prefix("PPid:").is_some_and(|p| p.trim() == me))
        })
        .map(|s| {
            let field = |k: &str| {
                s.lines()
                    .find_map(|l| l.strip_prefix(k))
                    .unwrap_or_default()
                    .trim()
                    .to_owned()
            };
            format!("{} {}", field("Pid:"), field("Name:"))
        })
        .collect()
}

#[tokio::test]
async fn ten_thousand_spawn_runs_leave_no_zombies() {
    const RUNS: u64 = 10_000;
    let bus = TestBus::with_hooks(
        "hooks:\n  - name: t\n    command: [\"true\"]\n    limits: { concurrency: 16 }\n",
    )
    .await;
    let rx = bus.registered("rx").await;
    // A receiver that reads, or flow control would hold the sender back.
    let drain = tokio::spawn(async move {
        let mut stream = rx.stream;
        let _ = tokio::io::copy(&mut stream, &mut tokio::io::sink()).await;
    });
    let mut tx = bus.raw().await;
    let mut sent = 0;
    while sent < RUNS {
        for _ in 0..500 {
            tx.send(&json!({"type": "message", "to": "rx", "body": {}}))
                .await;
        }
        sent += 500;
        // Keep within the spawn backlog: wait for most runs to finish.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let done = hook(&bus.hooks_status().await, "t")["calls"]
                .as_u64()
                .unwrap();
            if done + 200 >= sent {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "spawn runs stalled at {done} of {sent}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let status = bus
        .wait_hooks("every run to finish", |s| hook(s, "t")["calls"] == RUNS)
        .await;
    let t = hook(&status, "t");
    assert_eq!(
        (t["errors"].clone(), t["skipped"].clone()),
        (json!(0), json!(0)),
        "{t}"
    );
    no_zombies_left().await;
    bus.stop().await;
    drain.abort();
}

#[tokio::test]
async fn a_hook_that_keeps_failing_is_suspended_and_the_bus_keeps_running() {
    let bus = TestBus::with_hooks(
        "hooks:\n  - name: flaky\n    wasm: $PROBE\n    limits: { timeout_ms: 2000 }\n",
    )
    .await;
    let mut rx = bus.registered("rx").await;
    for i in 0..hookbus::hooks::stats::FAILURES_BEFORE_SUSPEND {
        send(&bus, "rx", &i.to_string(), json!({"probe": "trap"})).await;
        next(&mut rx).await;
    }
    let status = bus.hooks_status().await;
    assert_eq!(hook(&status, "flaky")["suspensions"], 1);
    assert_eq!(hook(&status, "flaky")["suspended"], true);
    // While suspended the hook is skipped (on_error: pass) and routing continues.
    send(&bus, "rx", "during", json!({})).await;
    assert_eq!(next(&mut rx).await["id"], "during");
    bus.stop().await;
}

fn hookbus_with_env(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = std::process::Command::new(bin());
    cmd.args(args)
        .env_remove("HOOKBUS_HOOKS")
        .env_remove("HERMES_BUS_HOOKS");
    let xdg = tempfile::tempdir().unwrap();
    cmd.env("XDG_CONFIG_HOME", xdg.path())
        .env("XDG_CACHE_HOME", cache_home());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn every_env_var_form() {
    let probe = guest("probe");
    let probe = probe.to_str().unwrap();
    let record = manifest_dir().join("tests/fixtures/record.py");
    let record = record.to_str().unwrap();
    let text = |o: &std::process::Output| String::from_utf8_lossy(&o.stdout).into_owned();

    let out = hookbus_with_env(
        &["hooks", "check"],
        &[("HOOKBUS_HOOKS", &format!("{probe}, {record}"))],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("2 hook(s)")
            && text(&out).contains("probe (wasm filter)")
            && text(&out).contains("record (spawn notify)"),
        "{}",
        text(&out)
    );

    let out = hookbus_with_env(
        &["hooks", "check"],
        &[("HOOKBUS_HOOKS", &format!(r#"["{probe}"]"#))],
    );
    assert!(
        out.status.success() && text(&out).contains("1 hook(s)"),
        "{}",
        text(&out)
    );

    for off in ["none", "", "NONE"] {
        let out = hookbus_with_env(
            &["hooks", "check"],
            &[("HOOKBUS_HOOKS", off), ("HERMES_BUS_HOOKS", record)],
        );
        assert!(
            out.status.success() && text(&out).contains("0 hook(s)"),
            "{off:?}: {}",
            text(&out)
        );
    }

    let out = hookbus_with_env(&["hooks", "check"], &[("HERMES_BUS_HOOKS", record)]);
    assert!(
        text(&out).contains("$HERMES_BUS_HOOKS: 1 hook(s)"),
        "{}",
        text(&out)
    );

    let out = hookbus_with_env(&["hooks", "check"], &[("HOOKBUS_HOOKS", "[broken")]);
    assert!(
        !out.status.success() && text(&out).contains("JSON array"),
        "{}",
        text(&out)
    );

    // With no env var, the XDG config file.
    let xdg = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(xdg.path().join("hookbus")).unwrap();
    std::fs::write(
        xdg.path().join("hookbus/hooks.yaml"),
        format!("hooks:\n  - name: x\n    wasm: {probe}\n"),
    )
    .unwrap();
    let out = hookbus_with_env(
        &["hooks", "check"],
        &[("XDG_CONFIG_HOME", xdg.path().to_str().unwrap())],
    );
    assert!(
        out.status.success() && text(&out).contains("x (wasm filter)"),
        "{}",
        text(&out)
    );
}

#[test]
fn hooks_test_runs_one_hook_offline() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hooks.yaml");
    std::fs::write(
        &config,
        format!(
            "hooks:\n  - name: p\n    wasm: {}\n    config: {{ tag: t }}\n",
            guest("probe").display()
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(bin())
        .args(["hooks", "test", "p", "--config"])
        .arg(&config)
        .env("XDG_CACHE_HOME", cache_home())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"type\":\"message\",\"id\":\"1\",\"body\":{}}\n{\"type\":\"message\",\"body\":{\"probe\":\"drop\"}}\n{\"type\":\"message\",\"id\":\"e\",\"body\":{\"probe\":\"emit\",\"emit_to\":\"ops\"}}\nnot json\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["verdict"], "replace");
    assert_eq!(lines[0]["message"]["tagged_by"], json!(["t"]));
    assert_eq!(
        lines[1],
        json!({"verdict": "drop", "reason": "probe said drop"})
    );
    assert_eq!(lines[2]["emit"]["to"], "ops");
    assert_eq!(lines[3], json!({"verdict": "pass"}));
    assert!(lines[4]["error"].as_str().unwrap().contains("not JSON"));

    let out = std::process::Command::new(bin())
        .args(["hooks", "test", "nope", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("no hook named `nope`")
    );
}

#[test]
fn the_example_config_checks() {
    let out = std::process::Command::new(bin())
        .args(["hooks", "check"])
        .arg(manifest_dir().join("hooks/hooks.example.yaml"))
        .env("XDG_CACHE_HOME", cache_home())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert_eq!(text.matches('✓').count(), 7, "{text}");
}

/// Whether `pid` is gone (or a zombie awaiting its reaper).
pub fn dead(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/status")) {
        Err(_) => true,
        Ok(s) => s
            .lines()
            .any(|l| l.starts_with("State:") && l.contains('Z')),
    }
}

#[tokio::test]
async fn a_spawn_timeout_kills_the_whole_process_group() {
    let bus = TestBus::with_hooks(
        "hooks:\n  - name: slow\n    command: [sh, -c, 'sleep 30 & echo $! > $DIR/pids; echo $$ >> $DIR/pids; wait']\n    limits: { timeout_ms: 300 }\n",
    )
    .await;
    let _rx = bus.registered("rx").await;
    send(&bus, "rx", "x", json!({})).await;
    let pids_file = bus.dir.path().join("pids");
    let deadline = Instant::now() + WAIT;
    let pids: Vec<i32> = loop {
        let text = std::fs::read_to_string(&pids_file).unwrap_or_default();
        let pids: Vec<i32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        if pids.len() == 2 {
            break pids;
        }
        assert!(Instant::now() < deadline, "the hook did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let status = bus
        .wait_hooks("the timeout to be counted", |s| {
            hook(s, "slow")["errors"] == 1
        })
        .await;
    assert_eq!(hook(&status, "slow")["last_error"], "deadline exceeded");
    let deadline = Instant::now() + WAIT;
    while !pids.iter().all(|&p| dead(p)) {
        assert!(
            Instant::now() < deadline,
            "processes {pids:?} outlived the timeout"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    no_zombies_left().await;
    bus.stop().await;
}

#[tokio::test]
async fn reloading_does_not_trigger_itself() {
    let bus = TestBus::with_hooks("hooks:\n  - name: p\n    wasm: $PROBE\n").await;
    // Loading reads hooks.yaml and the module; those reads must not count as changes.
    tokio::time::sleep(hookbus::hooks::reload::RELOAD_DEBOUNCE * 5).await;
    let status = bus.hooks_status().await;
    assert_eq!(
        (
            status["generation"].clone(),
            status["last_reload"]["generation"].clone()
        ),
        (json!(1), json!(1)),
        "{status}"
    );
    bus.rewrite_hooks("hooks:\n  - name: p\n    wasm: $PROBE\n    config: { tag: x }\n");
    bus.wait_hooks("the edit to reload", |s| s["generation"] == 2)
        .await;
    tokio::time::sleep(hookbus::hooks::reload::RELOAD_DEBOUNCE * 5).await;
    assert_eq!(bus.hooks_status().await["generation"], 2);
    bus.stop().await;
}

#[tokio::test]
async fn a_worker_takes_a_whole_read_in_one_exchange_and_keeps_order() {
    let bus = TestBus::with_hooks(
        "hooks:\n  - name: worker\n    command: [python3, $FIXTURES/worker.py]\n    mode: worker\n    config: { tag: batch }\n    limits: { timeout_ms: 2000 }\n",
    )
    .await;
    let mut rx = bus.registered("rx").await;
    let mut ops = bus.registered("ops").await;
    // Many frames in one write, so the daemon reads them as one batch.
    let mut burst = Vec::new();
    for i in 0..200 {
        let body = match i {
            50 => json!({"worker": "drop"}),
            100 => json!({"worker": "emit", "emit_to": "ops"}),
            _ => json!({"i": i}),
        };
        let msg = json!({"type": "message", "to": "rx", "id": i.to_string(), "body": body});
        burst.extend_from_slice(&hookbus::frame::encode(msg.to_string().as_bytes()));
    }
    let mut tx = bus.raw().await;
    tx.send_bytes(&burst).await;
    for i in (0..200).filter(|&i| i != 50) {
        let m = next(&mut rx).await;
        assert_eq!(m["id"], i.to_string());
        if i != 100 {
            assert_eq!(m["worker"], "batch");
        }
    }
    assert_eq!(next(&mut ops).await["body"], json!({"from_worker": "100"}));
    let status = bus.hooks_status().await;
    assert_eq!(
        (
            hook(&status, "worker")["calls"].clone(),
            hook(&status, "worker")["drops"].clone()
        ),
        (json!(200), json!(1))
    );
    bus.stop().await;
}

#[tokio::test]
async fn env_is_granted_only_when_asked_and_clocks_are_real_unless_refused() {
    let bus = TestBus::with_hooks(
        r#"
hooks:
  - name: bare
    wasm: $PROBE
    limits: { timeout_ms: 2000 }
    match: { to: bare }
    grants: { clock: false }
  - name: granted
    wasm: $PROBE
    limits: { timeout_ms: 2000 }
    match: { to: granted }
    grants: { env: [PATH] }
"#,
    )
    .await;
    let mut bare = bus.registered("bare").await;
    let mut granted = bus.registered("granted").await;
    for to in ["bare", "granted"] {
        send(&bus, to, "e", json!({"probe": "env", "var": "PATH"})).await;
        send(&bus, to, "c", json!({"probe": "clock"})).await;
    }
    assert_eq!(
        next(&mut bare).await["body"]["value"],
        Value::Null,
        "no env without a grant"
    );
    assert_eq!(
        next(&mut bare).await["body"]["now"],
        0,
        "clocks read zero with `clock: false`"
    );
    assert_eq!(
        next(&mut granted).await["body"]["value"],
        std::env::var("PATH").unwrap()
    );
    let now = next(&mut granted).await["body"]["now"].as_u64().unwrap();
    let real = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        now.abs_diff(real) < 60,
        "granted clock reads {now}, real time is {real}"
    );
    bus.stop().await;
}

/// Frames for `messages`, back to back, so one write (and one read) carries them all.
pub fn frames(messages: &[Value]) -> Vec<u8> {
    messages
        .iter()
        .flat_map(|m| hookbus::frame::encode(m.to_string().as_bytes()).to_vec())
        .collect()
}

#[tokio::test]
async fn a_batch_guest_gets_a_whole_read_in_one_call_and_order_is_kept() {
    let bus = TestBus::with_hooks(&format!(
        "hooks:\n  - name: batcher\n    wasm: {}\n    limits: {{ timeout_ms: 1000 }}\n",
        guest("batcher").display()
    ))
    .await;
    let mut rx = bus.registered("rx").await;
    let batch: Vec<Value> = (0..5)
        .map(|i| {
            let body = if i == 2 {
                json!({"batch": "drop"})
            } else {
                json!({"n": i})
            };
            json!({"type": "message", "to": "rx", "id": format!("m{i}"), "body": body})
        })
        .collect();
    let mut tx = bus.raw().await;
    tx.send_bytes(&frames(&batch)).await;
    assert!(tx.sync().await.is_empty());
    let got = rx.sync().await;
    let ids: Vec<&Value> = got.iter().map(|m| &m["id"]).collect();
    assert_eq!(
        ids,
        [&json!("m0"), &json!("m1"), &json!("m3"), &json!("m4")]
    );
    for m in &got {
        assert_eq!(m["batch_size"], 5, "one call for the whole read: {m}");
    }
    let status = bus.hooks_status().await;
    assert_eq!(hook(&status, "batcher")["calls"], 5, "{status}");
}

#[tokio::test]
async fn a_batch_with_the_wrong_number_of_verdicts_fails_as_a_whole() {
    let bus = TestBus::with_hooks(&format!(
        "hooks:\n  - name: batcher\n    wasm: {}\n    limits: {{ timeout_ms: 1000 }}\n    on_error: drop\n",
        guest("batcher").display()
    ))
    .await;
    let mut rx = bus.registered("rx").await;
    let bad: Vec<Value> = ["x", "short", "y"]
        .iter()
        .map(|b| json!({"type": "message", "to": "rx", "body": {"batch": b}}))
        .collect();
    let mut tx = bus.raw().await;
    tx.send_bytes(&frames(&bad)).await;
    assert!(tx.sync().await.is_empty());
    send(&bus, "rx", "after", json!({})).await;
    let got = rx.sync().await;
    assert_eq!(
        got.len(),
        1,
        "the failed batch is dropped (on_error: drop): {got:?}"
    );
    assert_eq!(
        (&got[0]["id"], &got[0]["batch_size"]),
        (&json!("after"), &json!(1))
    );
    let status = bus.hooks_status().await;
    let batcher = hook(&status, "batcher");
    assert_eq!(batcher["errors"], 1, "{status}");
    assert!(
        batcher["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("2 verdicts for 3 messages"),
        "{status}"
    );
}
