//! Feature `jobs`: leases, redelivery, dead jobs and crashes, against a live
//! server and, for the crashes, the daemon binary and worker processes.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use hookbus::client::Bus;
use hookbus::store::{StoreConfig, SyncPolicy};
use serde_json::{json, Value};

use crate::common::{bin, bus_when_up, serve_process, Daemon, TestBus, WAIT};

async fn jobs_bus(state: &Path) -> TestBus {
    TestBus::with_store(state, SyncPolicy::Full).await
}

async fn client(bus: &TestBus) -> Bus {
    Bus::connect(&bus.socket, None, &["jobs", "topics"])
        .await
        .unwrap()
}

async fn publish(c: &Bus, goal: &str, payload: Value, extra: Value) -> String {
    let a = c.job_publish(goal, payload, extra).await.unwrap();
    a["job"].as_str().unwrap().to_owned()
}

/// The `job` frame, or `no_job`.
async fn claim(c: &Bus, goal: &str, lease_ms: u64, wait_ms: u64) -> Value {
    let (lease, wait) = (
        Duration::from_millis(lease_ms),
        Duration::from_millis(wait_ms),
    );
    let job = c.job_claim(goal, lease, wait).await.unwrap();
    job.unwrap_or_else(|| json!({"type": "no_job"}))
}

async fn status(c: &Bus, job: &str) -> Value {
    c.call(json!({"type": "job_status", "job": job}))
        .await
        .unwrap()
}

#[tokio::test]
async fn a_killed_worker_s_job_comes_back_with_attempt_2() {
    let state = tempfile::tempdir().unwrap();
    let bus = jobs_bus(state.path()).await;
    let c = client(&bus).await;
    let job = publish(
        &c,
        "img.resize",
        json!({"w": 64}),
        json!({"backoff_ms": 50}),
    )
    .await;
    // A real worker process holds the lease while its command runs.
    let worker = std::process::Command::new(bin())
        .arg("--socket")
        .arg(&bus.socket)
        .args(["jobs", "work", "img.>", "--", "sleep", "5"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut worker = Daemon(worker);
    let deadline = Instant::now() + WAIT;
    while status(&c, &job).await["state"] != "leased" {
        assert!(
            Instant::now() < deadline,
            "the worker never claimed the job"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.0.kill().unwrap(); // SIGKILL
    worker.0.wait().unwrap();
    let again = claim(&c, "img.>", 10_000, 5_000).await;
    assert_eq!(
        (
            again["job"].as_str(),
            again["attempt"].as_u64(),
            &again["payload"]
        ),
        (Some(job.as_str()), Some(2), &json!({"w": 64})),
        "{again}"
    );
    let info = status(&c, &job).await;
    assert_eq!(info["error"], "the worker's connection closed", "{info}");
    bus.stop().await;
}

#[tokio::test]
async fn a_silent_worker_loses_its_lease_and_its_late_fulfil_is_refused() {
    let state = tempfile::tempdir().unwrap();
    let bus = jobs_bus(state.path()).await;
    let (silent, other) = (client(&bus).await, client(&bus).await);
    let job = publish(&silent, "mail.send", json!("hi"), json!({"backoff_ms": 10})).await;
    let first = claim(&silent, "mail.*", 300, 0).await;
    assert_eq!(
        (first["attempt"].as_u64(), first["job"].as_str()),
        (Some(1), Some(job.as_str()))
    );
    // Nothing to claim while the lease holds; then it comes back by itself.
    let t = Instant::now();
    let second = claim(&other, "mail.*", 10_000, 5_000).await;
    assert_eq!(second["attempt"], 2, "{second}");
    assert!(
        t.elapsed() >= Duration::from_millis(250),
        "redelivered before the lease ended"
    );
    let stale = silent.job_fulfill(&first, json!(1)).await.unwrap_err();
    assert_eq!(stale.code(), Some("lease_lost"), "{stale}");
    let extend = silent
        .job_extend(&first, Duration::from_secs(10))
        .await
        .unwrap_err();
    assert_eq!(extend.code(), Some("lease_lost"));
    other
        .job_fulfill(&second, json!({"sent": true}))
        .await
        .unwrap();
    let info = status(&other, &job).await;
    assert_eq!(
        (&info["state"], &info["result"]),
        (&json!("done"), &json!({"sent": true})),
        "{info}"
    );
    assert_eq!(claim(&other, "mail.*", 1000, 0).await["type"], "no_job");
    bus.stop().await;
}

#[tokio::test]
async fn three_failures_make_a_job_dead_with_an_event_and_retry_revives_it() {
    let state = tempfile::tempdir().unwrap();
    let bus = jobs_bus(state.path()).await;
    let c = client(&bus).await;
    let mut dead_events = c.subscribe("$jobs.>", None).await.unwrap();
    let job = publish(
        &c,
        "build.web",
        json!(1),
        json!({"backoff_ms": 10, "max_attempts": 3}),
    )
    .await;
    for attempt in 1..=3u64 {
        let j = claim(&c, "build.>", 10_000, 5_000).await;
        assert_eq!(j["attempt"], attempt, "{j}");
        let failed = c
            .job_fail(&j, &format!("try {attempt}"), true)
            .await
            .unwrap();
        let expect = if attempt < 3 { "queued" } else { "dead" };
        assert_eq!(failed["state"], expect, "{failed}");
    }
    let event = tokio::time::timeout(WAIT, dead_events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(event["subject"], "$jobs.build.web.dead", "{event}");
    assert_eq!(
        (&event["body"]["job"], &event["body"]["error"]),
        (&json!(job), &json!("try 3"))
    );
    let listed = c
        .call(json!({"type": "job_list", "state": "dead"}))
        .await
        .unwrap();
    assert_eq!(listed["jobs"][0]["job"], job.as_str());
    assert_eq!(claim(&c, "build.>", 1000, 0).await["type"], "no_job");
    c.call(json!({"type": "job_retry", "job": job}))
        .await
        .unwrap();
    let j = claim(&c, "build.>", 1000, 1000).await;
    assert_eq!(
        (j["job"].as_str(), j["attempt"].as_u64()),
        (Some(job.as_str()), Some(1)),
        "{j}"
    );
    // Failing without retry is final at once; a cancelled job is not claimed.
    c.job_fail(&j, "failed", false).await.unwrap();
    assert_eq!(status(&c, &job).await["state"], "dead");
    let other = publish(&c, "build.api", json!(2), json!({})).await;
    c.call(json!({"type": "job_cancel", "job": other}))
        .await
        .unwrap();
    assert_eq!(claim(&c, "build.>", 1000, 0).await["type"], "no_job");
    bus.stop().await;
}

#[tokio::test]
async fn priorities_delays_idempotency_and_a_claim_that_waits() {
    let state = tempfile::tempdir().unwrap();
    let bus = jobs_bus(state.path()).await;
    let c = client(&bus).await;
    let low = publish(&c, "q.a", json!("low"), json!({})).await;
    let high = publish(&c, "q.a", json!("high"), json!({"priority": 5})).await;
    let later = publish(
        &c,
        "q.a",
        json!("later"),
        json!({"delay_ms": 400, "priority": 9}),
    )
    .await;
    let order: Vec<String> = [
        claim(&c, "q.a", 10_000, 0).await,
        claim(&c, "q.a", 10_000, 0).await,
    ]
    .iter()
    .map(|j| j["job"].as_str().unwrap().to_owned())
    .collect();
    assert_eq!(order, [high, low]);
    let t = Instant::now();
    let j = claim(&c, "q.a", 10_000, 3_000).await;
    assert_eq!(j["job"].as_str(), Some(later.as_str()));
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "a delayed job came early"
    );
    let a = c
        .call(json!({"type": "job_publish", "goal": "q.b", "payload": {"x": 1}, "idempotency_key": "k"}))
        .await
        .unwrap();
    let b = c
        .call(json!({"type": "job_publish", "goal": "q.b", "payload": {"x": 1}, "idempotency_key": "k"}))
        .await
        .unwrap();
    assert_eq!(
        (&a["job"], &a["duplicate"], &b["duplicate"]),
        (&b["job"], &json!(false), &json!(true))
    );
    let conflict = c
        .call(json!({"type": "job_publish", "goal": "q.b", "payload": {"x": 2}, "idempotency_key": "k"}))
        .await
        .unwrap_err();
    assert_eq!(conflict.code(), Some("idempotency_conflict"));
    // A key belongs to its goal: the same key on another goal is another job.
    let other = c
        .call(json!({"type": "job_publish", "goal": "q.c", "payload": {"x": 1}, "idempotency_key": "k"}))
        .await
        .unwrap();
    assert_eq!(other["duplicate"], false, "{other}");
    assert_ne!(other["job"], a["job"]);
    // A claim across goals takes the best job of any matching goal.
    publish(&c, "w.low", json!(1), json!({"priority": 1})).await;
    let best = publish(&c, "w.high", json!(2), json!({"priority": 7})).await;
    assert_eq!(claim(&c, "w.*", 10_000, 0).await["job"], best.as_str());
    bus.stop().await;
}

#[tokio::test]
async fn a_list_of_big_jobs_is_cut_short_and_says_so() {
    let state = tempfile::tempdir().unwrap();
    let bus = jobs_bus(state.path()).await;
    let c = client(&bus).await;
    let big = "x".repeat(900 * 1024);
    for _ in 0..10 {
        publish(&c, "big.job", json!(big), json!({})).await;
    }
    let a = c
        .call(json!({"type": "job_list", "limit": 1000}))
        .await
        .unwrap();
    let n = a["jobs"].as_array().unwrap().len();
    assert!((1..10).contains(&n), "{n} jobs of 900 KiB in one answer");
    assert_eq!(a["more"], true);
    let a = c
        .call(json!({"type": "job_list", "limit": 2}))
        .await
        .unwrap();
    assert_eq!(
        (a["jobs"].as_array().unwrap().len(), &a["more"]),
        (2, &json!(true))
    );
    bus.stop().await;
}

#[tokio::test]
async fn a_filter_hook_matching_the_goal_sees_job_publishes() {
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().to_owned();
    let bus = TestBus::with_hooks_and(
        "hooks:\n  - name: guard\n    wasm: $PROBE\n    limits: { timeout_ms: 2000 }\n    match: { subject: \"deploy.>\" }\n",
        move |c| c.store = Some(StoreConfig::new(dir, SyncPolicy::Full)),
    )
    .await;
    let c = client(&bus).await;
    // The probe drops frames whose `body.probe` is "drop": only where it matches.
    let dropped = c
        .call(json!({"type": "job_publish", "goal": "deploy.prod", "payload": 1, "body": {"probe": "drop"}}))
        .await
        .unwrap_err();
    assert_eq!(dropped.code(), Some("dropped"), "{dropped}");
    publish(&c, "build.x", json!(1), json!({"body": {"probe": "drop"}})).await;
    publish(&c, "deploy.dev", json!(2), json!({})).await;
    let all = c.call(json!({"type": "job_list"})).await.unwrap();
    let goals: HashSet<&str> = all["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["goal"].as_str().unwrap())
        .collect();
    assert_eq!(goals, HashSet::from(["build.x", "deploy.dev"]));
    bus.stop().await;
}

fn serve(socket: &Path, state: &Path) -> Daemon {
    serve_process(
        socket,
        [std::ffi::OsStr::new("--state-dir"), state.as_os_str()],
    )
}

async fn up(socket: &Path) -> Bus {
    bus_when_up(socket, &["jobs"]).await
}

async fn list(c: &Bus, state: &str) -> Vec<String> {
    let a = c
        .call(json!({"type": "job_list", "state": state, "limit": 1000}))
        .await
        .unwrap();
    a["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_with_1000_jobs_in_every_state_loses_and_doubles_none() {
    let dir = tempfile::tempdir().unwrap();
    let (socket, state) = (dir.path().join("bus.sock"), dir.path().join("state"));
    let mut daemon = serve(&socket, &state);
    let c = up(&socket).await;
    let mut ids = Vec::new();
    for i in 0..1000 {
        let mut request =
            json!({"type": "job_publish", "goal": "crash.t", "payload": i, "backoff_ms": 60_000});
        if i < 100 {
            request["idempotency_key"] = format!("key-{i}").into();
        }
        ids.push(
            c.call(request).await.unwrap()["job"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    // 200 done, 100 failed back to the queue (backoff 60 s), 100 cancelled,
    // 100 leased for an hour by this client, the rest queued.
    let mut leased = HashSet::new();
    for n in 0..400 {
        let j = claim(&c, "crash.t", 3_600_000, 0).await;
        let (job, lease) = (j["job"].as_str().unwrap().to_owned(), j["lease"].clone());
        match n {
            0..200 => drop(
                c.call(json!({"type": "job_fulfill", "job": job, "lease": lease}))
                    .await
                    .unwrap(),
            ),
            200..300 => drop(
                c.call(json!({"type": "job_fail", "job": job, "lease": lease}))
                    .await
                    .unwrap(),
            ),
            _ => drop(leased.insert(job)),
        }
    }
    // The newest 100 (the oldest queued are the failed ones).
    for job in list(&c, "queued").await.iter().rev().take(100) {
        c.call(json!({"type": "job_cancel", "job": job}))
            .await
            .unwrap();
    }
    daemon.0.kill().unwrap(); // SIGKILL
    daemon.0.wait().unwrap();
    drop(c);
    let _ = std::fs::remove_file(&socket);
    let _daemon = serve(&socket, &state);
    let c = up(&socket).await;
    let counts: Vec<usize> = {
        let mut v = Vec::new();
        for s in ["done", "queued", "leased", "cancelled", "dead"] {
            v.push(list(&c, s).await.len());
        }
        v
    };
    assert_eq!(
        counts,
        [200, 600, 100, 100, 0],
        "done, queued, leased, cancelled, dead"
    );
    let mut seen = HashSet::new();
    for s in ["done", "queued", "leased", "cancelled"] {
        for id in list(&c, s).await {
            assert!(seen.insert(id), "a job is listed twice");
        }
    }
    assert_eq!(
        seen,
        ids.iter().cloned().collect::<HashSet<_>>(),
        "a job was lost"
    );
    // Leases are honoured across the restart; the failed jobs wait their
    // backoff; the 500 others that are ready are each claimed exactly once.
    assert_eq!(
        list(&c, "leased").await.into_iter().collect::<HashSet<_>>(),
        leased
    );
    let mut claimed = HashSet::new();
    loop {
        let j = claim(&c, "crash.t", 3_600_000, 0).await;
        if j["type"] == "no_job" {
            break;
        }
        let id = j["job"].as_str().unwrap().to_owned();
        assert!(!leased.contains(&id), "a leased job was handed out again");
        assert!(claimed.insert(id), "a job was handed out twice");
    }
    assert_eq!(claimed.len(), 500);
    // An idempotent publish retried across the restart returns the same job.
    let again = c
        .call(json!({"type": "job_publish", "goal": "crash.t", "payload": 7, "idempotency_key": "key-7"}))
        .await
        .unwrap();
    assert_eq!(
        (again["job"].as_str(), &again["duplicate"]),
        (Some(ids[7].as_str()), &json!(true))
    );
}
