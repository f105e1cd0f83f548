//! Send one message and report what the bus said, like hermes-bus's `send_message`.
//!
//!     cargo run --example send -- TO '{"text":"hi"}'

use hookbus::client::{send_message, Sent};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(to), Some(body)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: send TO JSON_BODY");
    };
    let socket =
        std::env::var_os("HOOKBUS_SOCKET").map_or_else(hookbus::paths::default_socket, Into::into);
    match send_message(&socket, &to, serde_json::from_str(&body)?, "example").await? {
        Sent::Delivered(n) => println!("delivered to {n} session(s)"),
        Sent::Accepted => println!("accepted"),
        Sent::Dropped { hook, reason } => println!("dropped by hook {hook}: {reason}"),
    }
    Ok(())
}
