//! An endpoint that answers every message by sending its body back to the sender,
//! using the self-healing [`Client`] (heartbeat, reconnect, autostart).
//!
//!     cargo run --example echo            # registers `echo`
//!     hookbus listen me &                 # in another shell
//!     hookbus send echo '{"ping":1}' --from me

use hookbus::client::{Client, ClientOptions};
use serde_json::json;
use tokio_stream::StreamExt;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let socket =
        std::env::var_os("HOOKBUS_SOCKET").map_or_else(hookbus::paths::default_socket, Into::into);
    let mut options = ClientOptions::new(socket, "echo");
    options.autostart = true; // runs `hookbus daemon start` (hookbus must be on PATH)
    let mut client = Client::connect(options).await?;
    println!("registered as echo (session {})", client.session_id());
    while let Some(msg) = client.next().await {
        let Some(from) = msg["from"].as_str().filter(|f| !f.is_empty()) else {
            continue;
        };
        client.send(from, json!({"echo": msg["body"]})).await?;
    }
    Ok(())
}
