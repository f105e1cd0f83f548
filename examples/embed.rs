//! Embed the bus in your own program: bind a socket, run the server with your own
//! shutdown signal, and talk to it with the client. Runs and exits by itself.
//!
//!     cargo run --example embed

use std::time::Duration;

use hookbus::client::{Client, ClientOptions};
use hookbus::server::{self, Config};
use serde_json::json;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("hookbus-embed-{}", std::process::id()));
    let socket = dir.join("bus.sock");
    let listener = hookbus::daemon::bind(&socket)?;
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(server::run(
        listener,
        Config::new(&socket),
        shutdown.clone(),
    ));

    let mut alice = Client::connect(ClientOptions::new(&socket, "alice")).await?;
    let bob = Client::connect(ClientOptions::new(&socket, "bob")).await?;
    bob.send("alice", json!({"text": "hello from bob"})).await?;
    let msg = tokio::time::timeout(Duration::from_secs(5), alice.recv()).await?;
    println!("alice got: {}", msg.unwrap_or_default());

    shutdown.cancel();
    server.await?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
