//! Retained values kept across restarts: the `retained` table holds each
//! subject's event tail as the router keeps it.

use bytes::Bytes;
use rusqlite::{params, Transaction};

/// A retained value set (`Some`) or cleared (`None`).
pub type Change = (Box<str>, Option<Bytes>);

pub fn load(conn: &rusqlite::Connection) -> rusqlite::Result<Vec<(String, Bytes)>> {
    let mut stmt = conn.prepare("SELECT subject, tail FROM retained")?;
    let rows = stmt.query_map([], |r| {
        Ok((r.get::<_, String>(0)?, Bytes::from(r.get::<_, Vec<u8>>(1)?)))
    })?;
    rows.collect()
}

pub fn apply(tx: &Transaction, changes: Vec<Change>) -> rusqlite::Result<()> {
    for (subject, tail) in changes {
        match tail {
            Some(tail) => tx
                .prepare_cached("INSERT OR REPLACE INTO retained (subject, tail) VALUES (?1, ?2)")?
                .execute(params![&*subject, &tail[..]])?,
            None => tx
                .prepare_cached("DELETE FROM retained WHERE subject = ?1")?
                .execute([&*subject])?,
        };
    }
    Ok(())
}
