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
        let deadline = Instant::now() + WAIT;
        loop {
            let status = self.status().await;
            if check(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; status: {status}"
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

    /// Reads until the server closes the connection; returns what came before.
    pub async fn until_eof(&mut self) -> Vec<Value> {
        let mut rest = Vec::new();
        while let Some(v) = self.try_recv().await {
            rest.push(v);
        }
        rest
    }
}

/// The `hookbus` binary built for these tests.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hookbus"))
}
