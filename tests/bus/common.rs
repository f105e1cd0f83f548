//! The one helper that starts a server, and a raw frame client.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use hookbus::server::{self, Config};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio_util::sync::CancellationToken;

/// How long a test waits for something that should happen at once.
pub const WAIT: Duration = Duration::from_secs(5);

/// A server on a socket in a fresh temp dir.
pub struct TestBus {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl TestBus {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(configure: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("bus.sock");
        Self::start_at(dir, socket, configure)
    }

    /// A server with a durable store in `state`, which the caller keeps, so a
    /// server started again on it finds what this one stored.
    pub async fn with_store(state: &Path, sync: hookbus::store::SyncPolicy) -> Self {
        let dir = state.to_owned();
        Self::start_with(move |c| c.store = Some(hookbus::store::StoreConfig::new(dir, sync))).await
    }

    pub fn start_at(
        dir: tempfile::TempDir,
        socket: PathBuf,
        configure: impl FnOnce(&mut Config),
    ) -> Self {
        let mut config = Config::new(&socket);
        configure(&mut config);
        let listener = hookbus::daemon::bind(&socket).unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server::run(listener, config, shutdown.clone()));
        Self {
            dir,
            socket,
            shutdown,
            task,
        }
    }

    /// Shuts down gracefully and waits for the server to return.
    pub async fn stop(self) -> tempfile::TempDir {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("server did not stop")
            .unwrap();
        let _ = std::fs::remove_file(&self.socket);
        self.dir
    }

    /// A server running the hooks of `yaml` (written to `hooks.yaml` in the temp
    /// dir; `$PROBE`, `$GUESTS`, `$HOOKS`, `$FIXTURES` and `$DIR` are replaced by
    /// the probe guest, target/guests, hooks/, the fixtures folder and the temp dir).
    pub async fn with_hooks(yaml: &str) -> Self {
        Self::with_hooks_and(yaml, |_| {}).await
    }

    pub async fn with_hooks_and(yaml: &str, configure: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("hooks.yaml");
        std::fs::write(&config_path, expand(yaml, dir.path())).unwrap();
        let source = hookbus::hooks::config::HookSource::File(config_path);
        Self::with_source(dir, source, configure).await
    }

    /// A server running the hooks of `source`, watched for changes, in `dir`.
    pub async fn with_source(
        dir: tempfile::TempDir,
        source: hookbus::hooks::config::HookSource,
        configure: impl FnOnce(&mut Config),
    ) -> Self {
        let runtime = hookbus::hooks::runtime::HookRuntime::new(
            source,
            Some(cache_home().join("hookbus/wasm")),
            hookbus::frame::DEFAULT_MAX_FRAME_LEN,
        )
        .await
        .unwrap();
        hookbus::hooks::reload::watch(&runtime).unwrap();
        let socket = dir.path().join("bus.sock");
        Self::start_at(dir, socket, |c| {
            c.hooks = Some(runtime);
            configure(c);
        })
    }

    /// Rewrites hooks.yaml (as an editor would: write a new file, rename it over).
    pub fn rewrite_hooks(&self, yaml: &str) {
        let tmp = self.dir.path().join(".hooks.yaml.new");
        std::fs::write(&tmp, expand(yaml, self.dir.path())).unwrap();
        std::fs::rename(&tmp, self.dir.path().join("hooks.yaml")).unwrap();
    }

    pub async fn hooks_status(&self) -> Value {
        hookbus::client::query(&self.socket, &json!({"type": "hooks_status"}))
            .await
            .unwrap()
    }

    /// Waits until `check(hooks_status)` holds.
    pub async fn wait_hooks(&self, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        self.wait_for(what, json!({"type": "hooks_status"}), check)
            .await
    }

    pub async fn raw(&self) -> Raw {
        Raw::connect(&self.socket).await
    }

    /// A raw connection registered as `name`.
    pub async fn registered(&self, name: &str) -> Raw {
        let mut raw = self.raw().await;
        raw.send(&json!({"type": "register", "endpoint": name}))
            .await;
        let reply = raw.recv().await;
        assert_eq!(reply["type"], "registered", "{reply}");
        raw
    }

    pub async fn status(&self) -> Value {
        hookbus::daemon::query_status(&self.socket).await.unwrap()
    }

    /// Waits until `check(status)` holds.
    pub async fn wait_status(&self, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        self.wait_for(what, json!({"type": "status"}), check).await
    }

    /// Polls the daemon with `request` until `check(answer)` holds.
    async fn wait_for(&self, what: &str, request: Value, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let answer = hookbus::client::query(&self.socket, &request)
                .await
                .unwrap();
            if check(&answer) {
                return answer;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; {answer}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A connection that speaks raw frames.
pub struct Raw {
    pub stream: UnixStream,
    buf: BytesMut,
}

impl Raw {
    pub async fn connect(socket: &Path) -> Self {
        Self {
            stream: UnixStream::connect(socket).await.unwrap(),
            buf: BytesMut::new(),
        }
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Sends `payload` with a correct length prefix.
    pub async fn send_payload(&mut self, payload: &[u8]) {
        self.send_bytes(&hookbus::frame::encode(payload)).await;
    }

    pub async fn send(&mut self, value: &Value) {
        self.send_payload(value.to_string().as_bytes()).await;
    }

    /// The next frame, or `None` at EOF.
    pub async fn try_recv(&mut self) -> Option<Value> {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(frame) = hookbus::frame::decode(&mut self.buf, usize::MAX).unwrap() {
                    return Some(serde_json::from_slice(hookbus::frame::payload(&frame)).unwrap());
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("no frame within the wait limit")
    }

    pub async fn recv(&mut self) -> Value {
        self.try_recv().await.expect("connection closed")
    }

    /// Asks for acks (`hello`) and waits for the `welcome`.
    pub async fn hello_acks(&mut self) {
        self.send(&json!({"type": "hello", "protocol": 1, "features": ["acks"]}))
            .await;
        assert_eq!(self.recv().await["type"], "welcome");
    }

    /// Sends a ping and returns everything received before the pong.
    pub async fn sync(&mut self) -> Vec<Value> {
        self.send(&json!({"type": "ping"})).await;
        let mut before = Vec::new();
        loop {
            let v = self.recv().await;
            if v["type"] == "pong" {
                return before;
            }
            before.push(v);
        }
    }

    /// What arrives until the server has been quiet for a moment: [`Self::sync`]
    /// twice, 50 ms apart, so frames the server queues a tick after the pong
    /// (`gap` frames) are in too.
    pub async fn drain(&mut self) -> Vec<Value> {
        let mut all = self.sync().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        all.extend(self.sync().await);
        all
    }

    /// Reads until the server closes the connection; returns what came before.
    pub async fn until_eof(&mut self) -> Vec<Value> {
        let mut rest = Vec::new();
        while let Some(v) = self.try_recv().await {
            rest.push(v);
        }
        rest
    }
}

/// $XDG_CACHE_HOME for the hookbus processes the tests start; in-process daemons use
/// the same compiled-module cache below it, so each module compiles once per run.
pub fn cache_home() -> PathBuf {
    manifest_dir().join("target/test-cache")
}

pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A guest module built by scripts/build-guests.sh.
pub fn guest(name: &str) -> PathBuf {
    let path = manifest_dir()
        .join("target/guests")
        .join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run scripts/build-guests.sh (scripts/test.sh does)",
        path.display()
    );
    path
}

pub fn expand(yaml: &str, dir: &Path) -> String {
    yaml.replace("$PROBE", guest("probe").to_str().unwrap())
        .replace(
            "$GUESTS",
            manifest_dir().join("target/guests").to_str().unwrap(),
        )
        .replace("$HOOKS", manifest_dir().join("hooks").to_str().unwrap())
        .replace(
            "$FIXTURES",
            manifest_dir().join("tests/fixtures").to_str().unwrap(),
        )
        .replace("$DIR", dir.to_str().unwrap())
}

/// The `hookbus` binary built for these tests.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hookbus"))
}

/// A daemon process the test started: killed and reaped when the test ends,
/// whether it passed or panicked.
pub struct Daemon(pub std::process::Child);

/// `hookbus --socket SOCKET serve ARGS…` without hooks, as a process (for the
/// tests that kill it).
pub fn serve_process<I, S>(socket: &Path, args: I) -> Daemon
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let child = std::process::Command::new(bin())
        .arg("--socket")
        .arg(socket)
        .arg("serve")
        .args(args)
        .env("HOOKBUS_HOOKS", "none")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    Daemon(child)
}

/// A protocol-2 `Bus` with `features`, once the daemon at `socket` answers.
pub async fn bus_when_up(socket: &Path, features: &[&str]) -> hookbus::client::Bus {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(bus) = hookbus::client::Bus::connect(socket, None, features).await {
            return bus;
        }
        assert!(Instant::now() < deadline, "the daemon did not come up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Daemon {
    pub fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
