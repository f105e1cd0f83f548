//! `hookbus kv get|put|del|ls|watch`: the durable KV from the shell.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use clap::Subcommand;

use crate::cli::{exit_status, read_body};
use hookbus::client::Bus;

/// Exit statuses (2 is clap's, for a bad command line).
const EXIT_NOT_FOUND: u8 = 3;
const EXIT_REVISION_MISMATCH: u8 = 4;

#[derive(Debug, Subcommand)]
#[command(
    after_help = "Keys are dot-separated tokens, like subjects. Exit status: 0 done, 3 no such key,\n4 `--if-revision` did not hold. The daemon keeps the KV under --state-dir."
)]
pub enum KvCommand {
    /// Print a key's value (JSON)
    Get {
        key: String,
        /// Print the whole `kv_value` frame (value, revision, expiry)
        #[arg(long)]
        json: bool,
    },
    /// Store a value and print its revision
    #[command(
        allow_negative_numbers = true,
        after_help = "Examples:\n  hookbus kv put config.theme '\"dark\"'\n  hookbus kv put lock.deploy '\"me\"' --if-revision 0 --ttl 30   # create only, for 30 s"
    )]
    Put {
        key: String,
        /// Value as JSON; read from stdin when omitted
        value: Option<String>,
        /// Seconds until the key expires
        #[arg(long, value_name = "SECS")]
        ttl: Option<f64>,
        /// Store only if the key is at this revision (0: only if it does not exist)
        #[arg(long, value_name = "N")]
        if_revision: Option<u64>,
    },
    /// Delete a key
    Del {
        key: String,
        /// Delete only if the key is at this revision
        #[arg(long, value_name = "N")]
        if_revision: Option<u64>,
    },
    /// List keys (starting with PREFIX)
    Ls { prefix: Option<String> },
    /// Print current values, then every change, of keys matching a pattern
    #[command(
        after_help = "Lines: `put KEY VALUE`, `delete KEY`, `expire KEY` (whole frames with --json);\na `-- synced` line separates current values from changes."
    )]
    Watch {
        pattern: String,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(socket: &Path, command: KvCommand) -> anyhow::Result<ExitCode> {
    let bus = Bus::connect(socket, None, &["kv"]).await?;
    let done = match command {
        KvCommand::Get { key, json } => bus.kv_get(&key).await.map(|v| {
            if json {
                println!("{v}");
            } else {
                println!("{}", v["value"]);
            }
        }),
        KvCommand::Put {
            key,
            value,
            ttl,
            if_revision,
        } => {
            let ttl = match ttl {
                Some(t) if t.is_finite() && t > 0.0 => Some(Duration::from_secs_f64(t)),
                Some(_) => bail!("--ttl must be a positive number of seconds"),
                None => None,
            };
            let value = read_body(value)?;
            bus.kv_put(&key, value, ttl, if_revision)
                .await
                .map(|rev| println!("revision {rev}"))
        }
        KvCommand::Del { key, if_revision } => bus
            .kv_delete(&key, if_revision)
            .await
            .map(|rev| println!("deleted at revision {rev}")),
        KvCommand::Ls { prefix } => bus
            .kv_keys(prefix.as_deref().unwrap_or(""))
            .await
            .map(|keys| keys.iter().for_each(|k| println!("{k}"))),
        KvCommand::Watch { pattern, json } => {
            let mut changes = bus.kv_watch(&pattern).await?;
            let mut out = std::io::stdout().lock();
            while let Some(c) = changes.recv().await {
                if json {
                    writeln!(out, "{c}")?;
                } else if c["type"] == "kv_synced" {
                    writeln!(out, "-- synced")?;
                } else {
                    let (op, key) = (
                        c["op"].as_str().unwrap_or(""),
                        c["key"].as_str().unwrap_or(""),
                    );
                    match c.get("value") {
                        Some(v) => writeln!(out, "{op} {key} {v}")?,
                        None => writeln!(out, "{op} {key}")?,
                    }
                }
                out.flush()?;
            }
            bail!("the bus closed the connection");
        }
    };
    exit_status(
        done,
        &[
            ("not_found", EXIT_NOT_FOUND),
            ("revision_mismatch", EXIT_REVISION_MISMATCH),
        ],
    )
}
