//! Section 5 and 6: the daemon and the CLI, through the built binary.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::common::{bin, TestBus};

fn hookbus(socket: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .arg("--socket")
        .arg(socket)
        .env_remove("HOOKBUS_SOCKET")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// A command's stdout and stderr, as text.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn daemon_start_status_stop() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let socket = run_dir.join("bus.sock");

    let out = hookbus(&socket, &["daemon", "start"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("started"), "{}", text(&out));
    let pid: i32 = std::fs::read_to_string(socket.with_extension("pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    // Private socket in a private directory.
    assert_eq!(
        std::fs::metadata(&run_dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(
        std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let out = hookbus(&socket, &["daemon", "start"]);
    assert!(
        out.status.success() && text(&out).contains("already running"),
        "{}",
        text(&out)
    );

    let out = hookbus(&socket, &["daemon", "status", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["pid"], pid);
    assert_eq!(status["socket"], socket.to_str().unwrap());
    assert!(status["uptime_s"].as_f64().unwrap() >= 0.0);
    assert!(status["counters"]["connections_opened"].as_u64().unwrap() >= 1);
    let out = hookbus(&socket, &["daemon", "status"]);
    assert!(
        text(&out).contains(&format!("pid:         {pid}")),
        "{}",
        text(&out)
    );

    let out = hookbus(&socket, &["daemon", "restart"]);
    assert!(out.status.success(), "{}", text(&out));
    let new_pid: i32 = std::fs::read_to_string(socket.with_extension("pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_ne!(new_pid, pid);

    let out = hookbus(&socket, &["daemon", "stop"]);
    assert!(
        out.status.success() && text(&out).contains(&format!("stopped hookbus (pid {new_pid})")),
        "{}",
        text(&out)
    );
    assert!(!socket.exists(), "socket file left behind");
    assert!(
        !socket.with_extension("pid").exists(),
        "pid file left behind"
    );
    let log = std::fs::read_to_string(socket.with_extension("log")).unwrap();
    assert!(
        log.contains("SIGTERM") && log.contains("daemon stopped"),
        "{log}"
    );

    let out = hookbus(&socket, &["daemon", "status"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("not running"), "{}", text(&out));
    let out = hookbus(&socket, &["daemon", "stop"]);
    assert!(
        out.status.success() && text(&out).contains("not running"),
        "{}",
        text(&out)
    );
}

#[test]
fn stale_socket_and_pid_file_are_cleaned() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("bus.sock");
    // A socket file nobody listens on, and the pid of a process that has exited.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let mut gone = Command::new("true").spawn().unwrap();
    let dead_pid = gone.id();
    gone.wait().unwrap();
    std::fs::write(socket.with_extension("pid"), format!("{dead_pid}\n")).unwrap();

    let out = hookbus(&socket, &["daemon", "status"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let out = hookbus(&socket, &["daemon", "start"]);
    assert!(out.status.success(), "{}", text(&out));
    let pid: u32 = std::fs::read_to_string(socket.with_extension("pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_ne!(pid, dead_pid);
    let out = hookbus(&socket, &["daemon", "stop"]);
    assert!(out.status.success(), "{}", text(&out));

    // Stop with only a stale pid file and socket: reports not running, cleans up.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    std::fs::write(socket.with_extension("pid"), format!("{dead_pid}\n")).unwrap();
    let out = hookbus(&socket, &["daemon", "stop"]);
    assert!(
        out.status.success() && text(&out).contains("not running"),
        "{}",
        text(&out)
    );
    assert!(!socket.exists() && !socket.with_extension("pid").exists());
}

#[test]
fn a_daemon_that_cannot_start_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_socket = dir.path().join("file");
    std::fs::write(&not_a_socket, "data").unwrap();
    let out = hookbus(&not_a_socket, &["daemon", "start"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("is not a socket"), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(&not_a_socket).unwrap(), "data");

    let out = hookbus(
        &dir.path().join("bus.sock"),
        &["serve", "--heartbeat-timeout=-1"],
    );
    assert!(
        !out.status.success() && text(&out).contains("--heartbeat-timeout"),
        "{}",
        text(&out)
    );
}

#[test]
fn serve_refuses_to_replace_a_live_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("bus.sock");
    assert!(hookbus(&socket, &["daemon", "start"]).status.success());
    let out = hookbus(&socket, &["serve"]);
    assert!(
        !out.status.success() && text(&out).contains("already running"),
        "{}",
        text(&out)
    );
    assert!(hookbus(&socket, &["daemon", "stop"]).status.success());
}

#[tokio::test]
async fn send_listen_and_endpoints_from_the_command_line() {
    let bus = TestBus::start().await;
    let socket = bus.socket.clone();
    let mut listener = tokio::process::Command::new(bin())
        .args(["listen", "inbox", "--socket"])
        .arg(&socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    bus.wait_status("the listener to register", |s| {
        s["endpoints"].get("inbox").is_some()
    })
    .await;

    let s = socket.clone();
    let out =
        tokio::task::spawn_blocking(move || hookbus(&s, &["send", "inbox", r#"{"text":"hi"}"#]))
            .await
            .unwrap();
    assert!(
        out.status.success() && text(&out).contains("delivered to inbox"),
        "{}",
        text(&out)
    );

    let s = socket.clone();
    let out = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(bin())
            .args(["broadcast", "--from", "me", "--socket"])
            .arg(&s)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(br#"{"n":2}"#)
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success() && text(&out).contains("broadcast to 1"),
        "{}",
        text(&out)
    );

    let s = socket.clone();
    let out = tokio::task::spawn_blocking(move || hookbus(&s, &["send", "nobody", "{}"]))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("no endpoint `nobody`"),
        "{}",
        text(&out)
    );

    let s = socket.clone();
    let out = tokio::task::spawn_blocking(move || hookbus(&s, &["send", "inbox", "{not json"]))
        .await
        .unwrap();
    assert!(
        !out.status.success() && text(&out).contains("not valid JSON"),
        "{}",
        text(&out)
    );

    let s = socket.clone();
    let out = tokio::task::spawn_blocking(move || hookbus(&s, &["endpoints"]))
        .await
        .unwrap();
    assert!(text(&out).starts_with("inbox  "), "{}", text(&out));

    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(listener.stdout.take().unwrap()).lines();
    let first: Value = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
    assert_eq!(
        (first["body"]["text"].clone(), first["from"].clone()),
        (Value::from("hi"), Value::from("cli"))
    );
    let second: Value = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
    assert_eq!(
        (second["body"]["n"].clone(), second["from"].clone()),
        (Value::from(2), Value::from("me"))
    );
    listener.kill().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let out = hookbus(&dir.path().join("none.sock"), &["endpoints"]);
    assert!(
        !out.status.success() && text(&out).contains("start one with `hookbus daemon start`"),
        "{}",
        text(&out)
    );
    bus.stop().await;
}

#[test]
fn help_lists_every_command() {
    let out = Command::new(bin()).arg("--help").output().unwrap();
    let help = text(&out);
    for cmd in [
        "serve",
        "daemon",
        "send",
        "broadcast",
        "listen",
        "endpoints",
        "bench",
    ] {
        assert!(help.contains(cmd), "--help lacks {cmd}: {help}");
    }
    let out = Command::new(bin())
        .args(["daemon", "--help"])
        .output()
        .unwrap();
    for cmd in ["start", "stop", "status", "restart"] {
        assert!(text(&out).contains(cmd));
    }
}

#[tokio::test]
async fn peers_running_as_another_user_are_refused() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("peers_running_as_another_user_are_refused: needs root to run a client as another uid; not run");
        return;
    }
    let bus = TestBus::start().await;
    // Open the directory and socket to everyone so only the uid check stands.
    std::fs::set_permissions(bus.dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::set_permissions(&bus.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    // A copy of the binary the other user can run wherever the checkout lives.
    let exe = bus.dir.path().join("hookbus");
    std::fs::copy(bin(), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = bus.socket.clone();
    let out = tokio::task::spawn_blocking(move || {
        use std::os::unix::process::CommandExt;
        Command::new(&exe)
            .args(["endpoints", "--socket"])
            .arg(&socket)
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("permission_denied"), "{}", text(&out));
    assert_eq!(bus.status().await["counters"]["connections_rejected"], 1);
    bus.stop().await;
}

#[tokio::test]
async fn bench_runs_against_a_live_bus() {
    let bus = TestBus::start().await;
    let s = bus.socket.clone();
    let out = tokio::task::spawn_blocking(move || {
        hookbus(
            &s,
            &[
                "bench",
                "--messages",
                "2000",
                "--latency-samples",
                "50",
                "--sizes",
                "100,2000",
                "--fanout",
                "2",
                "--idle-connections",
                "20",
                "--burst",
                "3000",
            ],
        )
    })
    .await
    .unwrap();
    let report = text(&out);
    assert!(out.status.success(), "{report}");
    for needle in [
        "| 1→1 | 100 B |",
        "| 1→2 broadcast | 2000 B |",
        "| burst of 3000 in one write | 100 B |",
        "| 1→1 beside a stalled receiver | 2000 B |",
        "idle registered connections",
    ] {
        assert!(report.contains(needle), "missing {needle:?} in {report}");
    }
    bus.stop().await;
}
