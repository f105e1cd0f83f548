//! `hookbus stream ls|info|replay|consume`: the streams the daemon keeps.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::bail;
use clap::Subcommand;
use serde_json::{json, Value};

use hookbus::client::{Bus, ClientError};

#[derive(Debug, Subcommand)]
#[command(
    after_help = "Streams are declared in a YAML file (`hookbus serve --streams FILE`, or\n$XDG_CONFIG_HOME/hookbus/streams.yaml):\n  streams:\n    - name: agents\n      subjects: [\"agent.>\"]\n      max_messages: 1000000\n      max_bytes: 1073741824\n      max_age_s: 604800"
)]
pub enum StreamCommand {
    /// List the streams: messages, bytes, first and last seq
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Show one stream as JSON
    Info { stream: String },
    /// Print a stream's stored messages: `SEQ SUBJECT BODY` lines (or frames with --json)
    Replay {
        stream: String,
        /// Only subjects matching this pattern
        #[arg(long)]
        subject: Option<String>,
        /// Start at this sequence number
        #[arg(long, value_name = "SEQ", conflicts_with_all = ["since_ms", "last"])]
        from_seq: Option<u64>,
        /// Start at the first message at or after this Unix time, in ms
        #[arg(long, value_name = "MS", conflicts_with = "last")]
        since_ms: Option<u64>,
        /// Only the last message
        #[arg(long)]
        last: bool,
        #[arg(long)]
        json: bool,
    },
    /// Print a durable consumer's messages as `replay` does, acknowledging each
    /// once it is written: run again, it goes on where it stopped
    Consume {
        stream: String,
        /// The consumer's name (created on first use)
        durable: String,
        /// Only subjects matching this pattern (fixed when the consumer is created)
        #[arg(long)]
        subject: Option<String>,
        /// A new consumer starts with messages published from now on, not the first kept
        #[arg(long)]
        new: bool,
        /// Stop after this many messages
        #[arg(long, value_name = "N")]
        max: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// Delete a durable consumer
    DeleteConsumer { stream: String, durable: String },
}

pub async fn run(socket: &Path, command: StreamCommand) -> anyhow::Result<ExitCode> {
    let bus = Bus::connect(socket, None, &["streams"]).await?;
    let done: Result<(), ClientError> = match command {
        StreamCommand::Ls { json } => bus.call(json!({"type": "stream_list"})).await.map(|a| {
            for s in a["streams"].as_array().cloned().unwrap_or_default() {
                if json {
                    println!("{s}");
                } else {
                    println!(
                        "{:<20} {:>10} msgs {:>12} B  seq {}..{}  {}",
                        s["name"].as_str().unwrap_or("?"),
                        s["messages"],
                        s["bytes"],
                        s["first_seq"],
                        s["last_seq"],
                        s["subjects"]
                    );
                }
            }
        }),
        StreamCommand::Info { stream } => bus
            .call(json!({"type": "stream_info", "stream": stream}))
            .await
            .map(|a| println!("{a}")),
        StreamCommand::Replay {
            stream,
            subject,
            from_seq,
            since_ms,
            last,
            json,
        } => {
            let from: Value = match (from_seq, since_ms, last) {
                (Some(seq), _, _) => json!({"seq": seq}),
                (_, Some(ms), _) => json!({"time_ms": ms}),
                (_, _, true) => json!("last"),
                _ => json!("first"),
            };
            match bus.replay(&stream, from, subject.as_deref()).await {
                Err(e) => Err(e),
                Ok(mut events) => {
                    let mut out = std::io::stdout().lock();
                    loop {
                        let Some(e) = events.recv().await else {
                            bail!("the bus closed the connection during the replay");
                        };
                        if e["type"] == "replay_end" {
                            break;
                        }
                        print_event(&mut out, &e, json)?;
                    }
                    out.flush()?;
                    Ok(())
                }
            }
        }
        StreamCommand::Consume {
            stream,
            durable,
            subject,
            new,
            max,
            json,
        } => {
            let mut settings = json!({"from": if new { "new" } else { "first" }});
            if let Some(subject) = subject {
                settings["subject"] = subject.into();
            }
            match bus.consume(&stream, &durable, settings).await {
                Err(e) => Err(e),
                Ok(mut events) => {
                    let mut n = 0;
                    while max.is_none_or(|max| n < max) {
                        let Some(e) = events.recv().await else {
                            bail!("the bus closed the connection");
                        };
                        {
                            let mut out = std::io::stdout().lock();
                            print_event(&mut out, &e, json)?;
                            out.flush()?;
                        }
                        let seq = e["seq"].as_u64().unwrap_or_default();
                        bus.stream_ack(&stream, &durable, seq, "ack", None).await?;
                        n += 1;
                    }
                    Ok(())
                }
            }
        }
        StreamCommand::DeleteConsumer { stream, durable } => bus
            .call(json!({"type": "consumer_delete", "stream": stream, "durable": durable}))
            .await
            .map(drop),
    };
    crate::cli::exit_status(done, &[])
}

fn print_event(out: &mut impl Write, e: &Value, json: bool) -> std::io::Result<()> {
    if json {
        writeln!(out, "{e}")
    } else {
        writeln!(
            out,
            "{} {} {}",
            e["seq"],
            e["subject"].as_str().unwrap_or(""),
            e["body"]
        )
    }
}
