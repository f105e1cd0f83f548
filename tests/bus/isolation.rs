//! A slow, broken or hostile hook cannot hurt the bus: each test reproduces one way
//! a hook (or a config) once did, against a live daemon: in process, or the
//! `hookbus` binary where signals, the reaper or the exit status are the point.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{bin, cache_home, expand, TestBus, WAIT};
use crate::daemon::text;
use crate::hooks::{dead, frames, hook, next, send};

/// Pids written one per line to `file`, once there are `n` of them.
async fn wait_pids(file: &Path, n: usize) -> Vec<i32> {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let pids: Vec<i32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        if pids.len() >= n {
            return pids;
        }
        assert!(
            Instant::now() < deadline,
            "{} holds {pids:?}, wanted {n} pids",
            file.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until every pid of `pids` is gone.
async fn wait_dead(pids: &[i32], what: &str) {
    let deadline = Instant::now() + WAIT;
    while !pids.iter().all(|&p| dead(p)) {
        assert!(Instant::now() < deadline, "{what}: {pids:?} still alive");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn hostile(mode: &str, extra: &str) -> String {
    format!(
        "hooks:\n  - name: w\n    command: [python3, $FIXTURES/hostile_worker.py]\n    mode: worker\n    config: {{ mode: {mode}, pids: $DIR/pids{extra} }}\n"
    )
}

/// `hookbus serve` as a child of the test, with `yaml` as its hooks.yaml.
struct Daemon {
    child: Child,
    dir: tempfile::TempDir,
    socket: PathBuf,
}

impl Daemon {
    fn command(dir: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .arg("--socket")
            .arg(dir.join("bus.sock"))
            .env_remove("HOOKBUS_HOOKS")
            .env_remove("HERMES_BUS_HOOKS")
            .env_remove("HOOKBUS_SOCKET")
            .env("XDG_CONFIG_HOME", dir.join("config"))
            .env("XDG_CACHE_HOME", cache_home())
            .stdin(Stdio::null());
        cmd
    }

    async fn start(yaml: &str, args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("hooks.yaml");
        std::fs::write(&config, expand(yaml, dir.path())).unwrap();
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let mut all = vec!["serve", "--hooks", config.to_str().unwrap()];
        all.extend_from_slice(args);
        let child = Self::command(dir.path(), &all)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let socket = dir.path().join("bus.sock");
        let deadline = Instant::now() + WAIT * 4;
        while hookbus::daemon::query_status(&socket).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "the daemon did not start: {}",
                std::fs::read_to_string(dir.path().join("log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self { child, dir, socket }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    /// Waits for the daemon to exit; how long it took.
    async fn exited_within(&mut self, limit: Duration) -> Duration {
        let started = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                started.elapsed() < limit,
                "the daemon did not exit within {limit:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        started.elapsed()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_wasi_sleep_counts_against_the_deadline() {
    let bus = TestBus::with_hooks(
        "hooks:\n  - name: sleeper\n    wasm: $FIXTURES/sleep.wat\n    limits: { timeout_ms: 5 }\n",
    )
    .await;
    let _rx = bus.registered("rx").await;
    let mut tx = bus.raw().await;
    let started = Instant::now();
    tx.send_bytes(&frames(&[
        json!({"type": "message", "to": "rx", "body": {}}),
        json!({"type": "ping"}),
    ]))
    .await;
    assert_eq!(tx.recv().await["type"], "pong");
    // The guest asked for 3 s; the deadline is 5 ms (+10 ms slack).
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(1500),
        "the sender waited {took:?}"
    );
    let status = bus
        .wait_hooks("the timeout to be counted", |s| {
            hook(s, "sleeper")["errors"] == 1
        })
        .await;
    assert_eq!(hook(&status, "sleeper")["last_error"], "deadline exceeded");
    bus.stop().await;
}

#[tokio::test]
async fn a_worker_that_stops_reading_is_killed_at_its_deadline_and_restarted() {
    let bus = TestBus::with_hooks(&format!(
        "{}    limits: {{ timeout_ms: 1500 }}\n",
        hostile("stall", "")
    ))
    .await;
    let pids = wait_pids(&bus.dir.path().join("pids"), 1).await;
    let _rx = bus.registered("rx").await;
    let mut tx = bus.raw().await;
    let big = "x".repeat(200_000);
    tx.send(&json!({"type": "message", "to": "rx", "body": {"pad": big}}))
        .await;
    assert!(tx.sync().await.is_empty());
    let status = bus
        .wait_hooks("the deadline to be counted", |s| {
            hook(s, "w")["errors"] == 1
        })
        .await;
    assert_eq!(hook(&status, "w")["last_error"], "deadline exceeded");
    wait_dead(&pids, "the stalled worker").await;
    // The next message (after the backoff) starts a fresh worker.
    tokio::time::sleep(Duration::from_millis(300)).await;
    send(&bus, "rx", "after", json!({})).await;
    bus.wait_hooks("a restart", |s| hook(s, "w")["starts"] == 2)
        .await;
    bus.stop().await;
}

#[tokio::test]
async fn sigterm_stops_the_daemon_in_bounded_time_with_a_hung_worker() {
    let mut daemon = Daemon::start(
        &format!(
            "{}    limits: {{ timeout_ms: 60000 }}\n",
            hostile("stall", "")
        ),
        &["--shutdown-timeout", "2"],
    )
    .await;
    let pids = wait_pids(&daemon.dir.path().join("pids"), 1).await;
    // A sender stuck behind the stalled worker, as the issue found it.
    let mut tx = crate::common::Raw::connect(&daemon.socket).await;
    tx.send(&json!({"type": "message", "to": "", "body": {"pad": "x".repeat(200_000)}}))
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    // Expected about 2 s (the shutdown timeout); before the fix it never exited.
    daemon.exited_within(Duration::from_secs(15)).await;
    wait_dead(&pids, "the worker after the daemon stopped").await;
}

#[tokio::test]
async fn a_worker_whose_init_never_answers_stops_the_start_and_dies_with_its_child() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hooks.yaml");
    std::fs::write(&config, expand(&hostile("silent_init", ""), dir.path())).unwrap();
    let out = Daemon::command(
        dir.path(),
        &["daemon", "start", "--hooks", config.to_str().unwrap()],
    )
    .output()
    .unwrap();
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("init did not answer"), "{said}");
    // The worker and the child it forked are both gone.
    let pids = wait_pids(&dir.path().join("pids"), 2).await;
    wait_dead(&pids, "the worker and its child").await;
}

#[tokio::test]
async fn a_spawn_hook_may_write_much_to_stderr() {
    let bus = TestBus::with_hooks(
        "hooks:\n  - name: noisy\n    command: [sh, -c, 'head -c 200000 /dev/zero | tr \"\\\\0\" x >&2; cat > /dev/null']\n    limits: { timeout_ms: 3000 }\n",
    )
    .await;
    let _rx = bus.registered("rx").await;
    send(&bus, "rx", "1", json!({})).await;
    let status = bus
        .wait_hooks("the run to end", |s| hook(s, "noisy")["calls"] == 1)
        .await;
    assert_eq!(hook(&status, "noisy")["errors"], 0, "{status}");
    bus.stop().await;
}

#[tokio::test]
async fn a_hermes_style_script_sees_every_message_of_a_burst() {
    const BURST: usize = 2000;
    // HOOKBUS_HOOKS=script, as a hermes-bus user sets it.
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("record");
    let seen = dir.path().join("seen");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nline=$(cat)\nprintf '%s\\n' \"$line\" >> {}\n",
            seen.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let source = hookbus::hooks::config::HookSource::Env {
        var: hookbus::hooks::config::HOOKS_ENV,
        value: script.display().to_string(),
    };
    let bus = TestBus::with_source(dir, source, |_| {}).await;
    let _rx = bus.registered("rx").await;
    let mut tx = bus.raw().await;
    let burst: Vec<Value> = (0..BURST)
        .map(|i| json!({"type": "message", "to": "rx", "id": i.to_string(), "body": {}}))
        .collect();
    tx.send_bytes(&frames(&burst)).await;
    assert!(tx.sync().await.is_empty());
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let n = std::fs::read_to_string(&seen)
            .unwrap_or_default()
            .lines()
            .count();
        if n == BURST {
            break;
        }
        assert!(Instant::now() < deadline, "the script saw {n} of {BURST}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = bus
        .wait_hooks("every run to be reaped", |s| {
            hook(s, "record")["calls"] == BURST as u64
        })
        .await;
    assert_eq!(hook(&status, "record")["skipped"], 0, "{status}");
    bus.stop().await;
}

#[tokio::test]
async fn a_full_backlog_skips_and_counts_or_blocks_only_its_sender() {
    let bus = TestBus::with_hooks(
        "hooks:\n  - name: slow\n    command: [sh, -c, 'cat > /dev/null; sleep 0.2']\n    limits: { concurrency: 1, backlog: 2 }\n    match: { to: skip }\n  - name: blocking\n    command: [sh, -c, 'cat >> $DIR/blocked']\n    limits: { concurrency: 1, backlog: 2, overflow: block }\n    match: { to: block }\n",
    )
    .await;
    let _skip = bus.registered("skip").await;
    let _block = bus.registered("block").await;
    let mut tx = bus.raw().await;
    let burst = |to: &str| -> Vec<Value> {
        (0..20)
            .map(|i| json!({"type": "message", "to": to, "body": {"i": i}}))
            .collect()
    };
    tx.send_bytes(&frames(&burst("skip"))).await;
    assert!(tx.sync().await.is_empty());
    let status = bus
        .wait_hooks("skips to be counted", |s| {
            hook(s, "slow")["skipped"].as_u64().unwrap() > 0
        })
        .await;
    let slow = hook(&status, "slow");
    assert!(slow["skipped"].as_u64().unwrap() >= 15, "{slow}");
    // With `block`, every run happens: the sender waited instead.
    let mut tx = bus.raw().await;
    tx.send_bytes(&frames(&burst("block"))).await;
    assert!(tx.sync().await.is_empty());
    let blocked = bus.dir.path().join("blocked");
    let deadline = Instant::now() + WAIT * 4;
    while std::fs::read_to_string(&blocked)
        .unwrap_or_default()
        .matches("\"i\"")
        .count()
        < 20
    {
        assert!(Instant::now() < deadline, "not every blocked run happened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(hook(&bus.hooks_status().await, "blocking")["skipped"], 0);
    bus.stop().await;
}

#[tokio::test]
async fn the_default_config_is_loaded_when_it_appears_and_unloaded_when_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let config_dir = dir.path().join("config/hookbus");
    let config = config_dir.join("hooks.yaml");
    let source = hookbus::hooks::config::HookSource::Default(config.clone());
    let bus = TestBus::with_source(dir, source, |_| {}).await;
    let status = bus.hooks_status().await;
    assert_eq!(status["hooks"], json!([]), "{status}");
    assert!(
        status["source"].as_str().unwrap().contains("not there yet"),
        "{status}"
    );

    // The directory first, then the file, renamed into place as editors do.
    std::fs::create_dir_all(&config_dir).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let yaml = expand(
        "hooks:\n  - name: tagger\n    wasm: $PROBE\n    limits: { timeout_ms: 2000 }\n    config: { tag: later }\n",
        bus.dir.path(),
    );
    let tmp = config_dir.join(".hooks.yaml.tmp");
    std::fs::write(&tmp, yaml).unwrap();
    let written = Instant::now();
    std::fs::rename(&tmp, &config).unwrap();
    bus.wait_hooks("the new config to load", |s| {
        s["hooks"].as_array().is_some_and(|h| h.len() == 1)
    })
    .await;
    let took = written.elapsed();
    let mut rx = bus.registered("rx").await;
    send(&bus, "rx", "1", json!({})).await;
    assert_eq!(next(&mut rx).await["tagged_by"], json!(["later"]));
    eprintln!("the default config was picked up {took:?} after it appeared");

    std::fs::remove_file(&config).unwrap();
    bus.wait_hooks("the hooks to unload", |s| s["hooks"] == json!([]))
        .await;
    send(&bus, "rx", "2", json!({})).await;
    assert_eq!(next(&mut rx).await["tagged_by"], Value::Null);
    bus.stop().await;
}

#[tokio::test]
async fn a_dropped_message_is_acked_with_the_hook_and_its_reason() {
    let bus = TestBus::with_hooks(
        "hooks:\n  - name: tagger\n    wasm: $PROBE\n    limits: { timeout_ms: 2000 }\n",
    )
    .await;
    let mut rx = bus.registered("rx").await;
    let mut tx = bus.raw().await;
    tx.hello_acks().await;
    tx.send(&json!({"type": "message", "to": "rx", "id": "d", "body": {"probe": "drop"}}))
        .await;
    let ack = tx.recv().await;
    assert_eq!(
        ack,
        json!({"type": "ack", "id": "d", "delivered": 0, "dropped_by": "tagger", "reason": "probe said drop"})
    );
    tx.send(&json!({"type": "message", "to": "rx", "id": "k", "body": {}}))
        .await;
    assert_eq!(tx.recv().await["delivered"], 1);
    assert_eq!(next(&mut rx).await["id"], "k");

    // `hookbus send` says so and exits with its own status, without waiting.
    let socket = bus.socket.clone();
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(bin())
            .args(["send", "rx", r#"{"probe":"drop"}"#, "--socket"])
            .arg(&socket)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("dropped by hook tagger: probe said drop"),
        "{stderr}"
    );
    eprintln!(
        "`hookbus send` of a dropped message took {:?}",
        started.elapsed()
    );
    assert_eq!(bus.status().await["counters"]["filtered_out"], 2);
    bus.stop().await;
}

#[tokio::test]
async fn acks_count_the_recipients_a_message_was_queued_for() {
    let bus = TestBus::start_with(|c| {
        c.outbox_max_bytes = 100_000;
        c.slow_consumer_timeout = std::time::Duration::from_millis(300);
    })
    .await;
    let mut rx = bus.registered("rx").await; // never reads
    let pad = "x".repeat(60_000);
    // Forty senders at once, far past the receiver's outbox bounds: each message
    // is queued (parked behind the full outbox, in order) and acked as delivered.
    for i in 0..40 {
        let mut tx = bus.raw().await;
        tx.hello_acks().await;
        tx.send(&json!({"type": "message", "to": "rx", "id": i, "body": {"pad": pad}}))
            .await;
        let reply = tx.recv().await;
        assert_eq!(reply["type"], "ack", "{reply}");
        assert_eq!(reply["delivered"], 1, "{reply}");
    }
    // A receiver that reads none of it is cut after the stall timeout, told why,
    // and later messages find no endpoint.
    bus.wait_status("the stalled receiver cut", |s| {
        s["counters"]["slow_consumer_disconnects"] == 1
    })
    .await;
    let mut tx = bus.raw().await;
    tx.hello_acks().await;
    tx.send(&json!({"type": "message", "to": "rx", "body": {}}))
        .await;
    assert_eq!(tx.recv().await["code"], "endpoint_not_found");
    let rest = rx.until_eof().await;
    assert!(rest.len() < 40);
    bus.stop().await;
}

#[tokio::test]
async fn an_empty_or_half_saved_config_keeps_the_last_good_set() {
    let good =
        "hooks:\n  - name: tagger\n    wasm: $PROBE\n    limits: { timeout_ms: 2000 }\n    config: { tag: good }\n";
    let bus = TestBus::with_hooks(good).await;
    let mut rx = bus.registered("rx").await;
    let config = bus.dir.path().join("hooks.yaml");

    // An editor truncating the file, then writing it 300 ms later.
    std::fs::write(&config, "").unwrap();
    let status = bus
        .wait_hooks("the empty file to be refused", |s| {
            s["last_reload"]["ok"] == false
        })
        .await;
    assert!(
        status["last_reload"]["error"]
            .as_str()
            .unwrap()
            .contains("empty"),
        "{status}"
    );
    send(&bus, "rx", "during", json!({"probe": "drop"})).await;
    send(&bus, "rx", "mark", json!({})).await;
    let m = next(&mut rx).await;
    assert_eq!(
        (m["id"].clone(), m["tagged_by"].clone()),
        (json!("mark"), json!(["good"])),
        "the filter stayed in force while the file was empty"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::write(&config, expand(good, bus.dir.path())).unwrap();
    bus.wait_hooks("the saved file to load", |s| s["last_reload"]["ok"] == true)
        .await;

    // A storm of 200 rewrites (truncate, write) ends with the last version in force.
    for i in 0..200 {
        std::fs::write(&config, "").unwrap();
        let yaml = good.replace("tag: good", &format!("tag: v{i}"));
        std::fs::write(&config, expand(&yaml, bus.dir.path())).unwrap();
    }
    let deadline = Instant::now() + WAIT;
    loop {
        send(&bus, "rx", "x", json!({})).await;
        let m = next(&mut rx).await;
        if m["tagged_by"] == json!(["v199"]) {
            break;
        }
        assert!(Instant::now() < deadline, "last version not in force: {m}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        bus.hooks_status().await["hooks"].as_array().unwrap().len(),
        1
    );
    bus.stop().await;
}

#[tokio::test]
async fn a_worker_line_over_the_frame_limit_kills_the_worker() {
    let bus = TestBus::with_hooks(&hostile("big_line", ", bytes: 11000000")).await;
    let pids = wait_pids(&bus.dir.path().join("pids"), 1).await;
    let mut rx = bus.registered("rx").await;
    send(&bus, "rx", "1", json!({})).await;
    assert_eq!(
        next(&mut rx).await["id"],
        "1",
        "on_error: pass lets it through"
    );
    let status = bus.hooks_status().await;
    let w = hook(&status, "w");
    assert!(
        w["last_error"]
            .as_str()
            .unwrap()
            .contains("over the frame limit"),
        "{w}"
    );
    wait_dead(&pids, "the worker").await;
    bus.stop().await;
}

#[tokio::test]
async fn a_huge_module_file_is_refused_before_it_is_read() {
    let good = "hooks:\n  - name: p\n    wasm: $PROBE\n";
    let bus = TestBus::with_hooks(good).await;
    let huge = bus.dir.path().join("huge.wasm");
    let file = std::fs::File::create(&huge).unwrap();
    file.set_len(1 << 30).unwrap(); // sparse: 1 GiB that takes no disk
    let started = Instant::now();
    bus.rewrite_hooks(&format!(
        "hooks:\n  - name: p\n    wasm: {}\n",
        huge.display()
    ));
    let status = bus
        .wait_hooks("the module to be refused", |s| {
            s["last_reload"]["ok"] == false
        })
        .await;
    let error = status["last_reload"]["error"].as_str().unwrap();
    assert!(error.contains("at most"), "{error}");
    assert!(status.to_string().len() < 16 * 1024, "a small reply");
    eprintln!("refused in {:?}", started.elapsed());
    bus.stop().await;
}

#[tokio::test]
async fn a_config_symlinked_elsewhere_reloads_when_its_target_changes() {
    let elsewhere = tempfile::tempdir().unwrap();
    let target = elsewhere.path().join("real.yaml");
    let yaml = |tag: &str| {
        expand(
            &format!("hooks:\n  - name: t\n    wasm: $PROBE\n    limits: {{ timeout_ms: 2000 }}\n    config: {{ tag: {tag} }}\n"),
            elsewhere.path(),
        )
    };
    std::fs::write(&target, yaml("one")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("hooks.yaml");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let source = hookbus::hooks::config::HookSource::File(link);
    let bus = TestBus::with_source(dir, source, |_| {}).await;
    let mut rx = bus.registered("rx").await;
    std::fs::write(&target, yaml("two")).unwrap();
    bus.wait_hooks("the edit of the target to reload", |s| s["generation"] == 2)
        .await;
    send(&bus, "rx", "1", json!({})).await;
    assert_eq!(next(&mut rx).await["tagged_by"], json!(["two"]));
    bus.stop().await;
}

#[tokio::test]
async fn a_hook_matching_its_own_emits_makes_a_chain_not_a_storm() {
    let bus = TestBus::with_hooks(&format!(
        "{}    phase: notify\n",
        hostile("emit_many", ", count: 50")
    ))
    .await;
    let mut rx = bus.registered("rx").await;
    send(&bus, "", "seed", json!({})).await;
    // 16 emits of the client's message, then one per emitted message down to the
    // hop limit: 16 × 4 broadcasts, plus the seed.
    let mut got = 0;
    loop {
        let m = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await;
        match m {
            Ok(m) if m["type"] == "message" => got += 1,
            Ok(other) => panic!("{other}"),
            Err(_) => break,
        }
    }
    assert_eq!(got, 1 + 16 * 4, "{got} broadcasts");
    bus.stop().await;
}

#[tokio::test]
async fn one_read_of_many_frames_is_cut_into_bounded_batches() {
    let bus = TestBus::with_hooks(&format!(
        "hooks:\n  - name: b\n    wasm: {}\n    limits: {{ timeout_ms: 2000 }}\n",
        crate::common::guest("batcher").display()
    ))
    .await;
    let mut rx = bus.registered("rx").await;
    let mut tx = bus.raw().await;
    let many: Vec<Value> = (0..3000)
        .map(|i| json!({"type": "message", "to": "rx", "id": i.to_string(), "body": {}}))
        .collect();
    tx.send_bytes(&frames(&many)).await;
    assert!(tx.sync().await.is_empty());
    let mut largest = 0;
    for i in 0..3000 {
        let m = next(&mut rx).await;
        assert_eq!(m["id"], i.to_string(), "order kept");
        largest = largest.max(m["batch_size"].as_u64().unwrap());
    }
    assert!(
        largest <= hookbus::connection::MAX_READ_BATCH as u64,
        "a batch of {largest}"
    );
    bus.stop().await;
}

#[tokio::test]
async fn escaped_grandchildren_and_workers_do_not_outlive_the_daemon() {
    let mut daemon = Daemon::start(
        "hooks:\n  - name: escape\n    command: [sh, -c, 'setsid sleep 300 & echo $! >> $DIR/escaped; cat > /dev/null']\n  - name: w\n    command: [python3, $FIXTURES/hostile_worker.py]\n    mode: worker\n    config: { mode: ok, pids: $DIR/pids }\n",
        &[],
    )
    .await;
    let worker = wait_pids(&daemon.dir.path().join("pids"), 1).await;
    let mut tx = crate::common::Raw::connect(&daemon.socket).await;
    tx.send(&json!({"type": "message", "to": "", "body": {}}))
        .await;
    assert!(tx.sync().await.is_empty());
    // The run ends at once; the grandchild that left its group is the reaper's.
    let escaped = wait_pids(&daemon.dir.path().join("escaped"), 1).await;
    wait_dead(&escaped, "the setsid grandchild").await;
    assert!(daemon.log().contains("escaped"), "{}", daemon.log());
    // SIGKILL gives the daemon no chance to clean up: the worker's parent-death
    // signal takes it along.
    daemon.signal(nix::sys::signal::Signal::SIGKILL);
    daemon.exited_within(WAIT).await;
    wait_dead(&worker, "the worker after SIGKILL").await;
}

#[tokio::test]
async fn a_hooks_file_that_cannot_load_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("bus.sock");
    let start = |file: &Path| {
        Daemon::command(
            dir.path(),
            &["daemon", "start", "--hooks", file.to_str().unwrap()],
        )
        .output()
        .unwrap()
    };
    let missing = dir.path().join("missing.yaml");
    let out = start(&missing);
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("missing.yaml") && said.contains("does not start"),
        "{said}"
    );
    assert!(!said.contains("started"), "{said}");

    let broken = dir.path().join("broken.yaml");
    std::fs::write(&broken, "hooks:\n  - name: x\n    wasm: nowhere.wasm\n").unwrap();
    let out = start(&broken);
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    // The module is named by its full path.
    let full = dir.path().join("nowhere.wasm");
    assert!(said.contains(full.to_str().unwrap()), "{said}");
    assert!(
        hookbus::daemon::query_status(&socket).await.is_err(),
        "no daemon left running"
    );

    // `hooks check` names it by its full path too, from a relative config path.
    let out = Command::new(bin())
        .current_dir(dir.path())
        .args(["hooks", "check", "broken.yaml"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains(full.to_str().unwrap()), "{said}");
}

#[tokio::test]
async fn a_reload_keeps_unchanged_hooks_and_health_is_polled() {
    let worker = "  - name: w\n    command: [python3, $FIXTURES/hostile_worker.py]\n    mode: worker\n    config: { mode: ok, pids: $DIR/pids }\n";
    let tagger = |tag: &str| {
        format!("  - name: t\n    wasm: $PROBE\n    limits: {{ timeout_ms: 2000 }}\n    config: {{ tag: {tag} }}\n")
    };
    let bus = TestBus::with_hooks(&format!("hooks:\n{worker}{}", tagger("one"))).await;
    let first = wait_pids(&bus.dir.path().join("pids"), 1).await;
    let mut rx = bus.registered("rx").await;
    bus.rewrite_hooks(&format!("hooks:\n{worker}{}", tagger("two")));
    bus.wait_hooks("the edit to load", |s| s["generation"] == 2)
        .await;
    send(&bus, "rx", "1", json!({})).await;
    assert_eq!(next(&mut rx).await["tagged_by"], json!(["two"]));
    let status = bus.hooks_status().await;
    assert_eq!(
        hook(&status, "w")["starts"],
        1,
        "the worker was kept: {status}"
    );
    assert_eq!(
        std::fs::read_to_string(bus.dir.path().join("pids"))
            .unwrap()
            .lines()
            .count(),
        1,
        "no second worker process"
    );
    assert!(!dead(first[0]));
    // Health is asked for every HEALTH_EVERY.
    let deadline = Instant::now() + hookbus::hooks::runtime::HEALTH_EVERY * 3;
    loop {
        let status = bus.hooks_status().await;
        if hook(&status, "w")["health"] == "ok" {
            break;
        }
        assert!(Instant::now() < deadline, "no health shown: {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bus.stop().await;
}

#[test]
fn hooks_test_shows_what_a_failing_hook_wrote_to_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hooks.yaml");
    std::fs::write(
        &config,
        "hooks:\n  - name: s\n    command: [sh, -c, 'echo the-reason-it-failed >&2; exit 1']\n",
    )
    .unwrap();
    let mut child = Command::new(bin())
        .args(["hooks", "test", "s", "--config"])
        .arg(&config)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"type\":\"message\",\"to\":\"a\"}\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("the-reason-it-failed"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("exited with"));
}

#[tokio::test]
async fn live_instances_are_capped_per_hook() {
    let bus = TestBus::with_hooks(
        "hooks:\n  - name: spin\n    wasm: $PROBE\n    limits: { timeout_ms: 400, instances: 2 }\n",
    )
    .await;
    let _rx = bus.registered("rx").await;
    // Ten senders at once, each call spinning until its deadline.
    let mut senders = Vec::new();
    for i in 0..10 {
        let mut tx = bus.raw().await;
        senders.push(tokio::spawn(async move {
            tx.send(&json!({"type": "message", "to": "rx", "id": i.to_string(), "body": {"probe": "loop"}}))
                .await;
            tx.sync().await; // the pong comes once the filter is done with the message
        }));
    }
    let mut most = 0;
    let deadline = Instant::now() + WAIT * 2;
    while !senders.iter().all(|s| s.is_finished()) {
        let status = bus.hooks_status().await;
        let spin = hook(&status, "spin");
        most = most.max(spin["instances"].as_u64().unwrap());
        assert!(Instant::now() < deadline, "{spin}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        most, 2,
        "at most `limits.instances` alive, and the cap was reached"
    );
    bus.stop().await;
}

#[tokio::test]
async fn a_chatty_hook_cannot_fill_the_log() {
    let daemon = Daemon::start(
        "hooks:\n  - name: chatty\n    command: [sh, -c, 'cat > /dev/null; yes chatty-line | head -n 20000 >&2']\n",
        &[],
    )
    .await;
    let mut tx = crate::common::Raw::connect(&daemon.socket).await;
    for _ in 0..2 {
        tx.send(&json!({"type": "message", "to": "", "body": {}}))
            .await;
        assert!(tx.sync().await.is_empty());
        tokio::time::sleep(Duration::from_millis(1200)).await;
    }
    let log = daemon.log();
    let lines = log.matches("chatty-line").count();
    let limit = hookbus::hooks::guest_log::MAX_LINES_PER_SECOND as usize;
    assert!(
        lines > 0 && lines <= 2 * limit,
        "{lines} lines of hook output logged"
    );
    assert!(log.contains("lines not logged"), "{log}");
}
