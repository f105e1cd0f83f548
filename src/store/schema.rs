//! The store's schema, versioned with SQLite's `user_version`: migration `n`
//! takes a database from version `n` to `n + 1`, in one transaction.

use rusqlite::Connection;

/// Every migration, oldest first. Append only: a released one never changes.
const MIGRATIONS: &[&str] = &[
    // 1: KV with one revision sequence.
    "CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
     INSERT INTO meta (name, value) VALUES ('kv_revision', 0);
     CREATE TABLE kv (
         key TEXT PRIMARY KEY,
         value BLOB NOT NULL,
         revision INTEGER NOT NULL,
         expires_at_ms INTEGER
     ) WITHOUT ROWID;",
    // 2: jobs. `state` is queued, leased, done, dead or cancelled.
    "CREATE TABLE jobs (
         id TEXT PRIMARY KEY,
         goal TEXT NOT NULL,
         payload BLOB NOT NULL,
         state TEXT NOT NULL,
         priority INTEGER NOT NULL,
         attempt INTEGER NOT NULL,
         max_attempts INTEGER NOT NULL,
         backoff_ms INTEGER NOT NULL,
         ready_at_ms INTEGER NOT NULL,
         lease TEXT,
         lease_until_ms INTEGER,
         idem_key TEXT,
         idem_expires_ms INTEGER,
         result BLOB,
         error TEXT,
         created_ms INTEGER NOT NULL,
         finished_ms INTEGER
     );
     CREATE INDEX jobs_by_state ON jobs (state, goal);
     CREATE INDEX jobs_by_idem ON jobs (idem_key) WHERE idem_key IS NOT NULL;",
    // 3: streams. `last_seq` outlives trimmed messages, so sequences never repeat.
    "CREATE TABLE streams (name TEXT PRIMARY KEY, last_seq INTEGER NOT NULL) WITHOUT ROWID;
     CREATE TABLE stream_messages (
         stream TEXT NOT NULL,
         seq INTEGER NOT NULL,
         id TEXT NOT NULL,
         ts_ms INTEGER NOT NULL,
         subject TEXT NOT NULL,
         sender TEXT,
         uid INTEGER,
         body BLOB NOT NULL,
         size INTEGER NOT NULL,
         PRIMARY KEY (stream, seq)
     ) WITHOUT ROWID;",
    // 4: jobs listed in creation order, with or without a state, from an index.
    "DROP INDEX jobs_by_state;
     CREATE INDEX jobs_by_created ON jobs (created_ms, id);
     CREATE INDEX jobs_by_state_created ON jobs (state, created_ms, id);",
    // 5: retained values, as the router keeps them (an event's tail).
    "CREATE TABLE retained (subject TEXT PRIMARY KEY, tail BLOB NOT NULL) WITHOUT ROWID;",
    // 6: durable consumers of streams: settings and cursor, and the messages
    // delivered and not acknowledged, with how many times each was delivered.
    "CREATE TABLE stream_consumers (
         stream TEXT NOT NULL,
         name TEXT NOT NULL,
         filter TEXT,
         ack_wait_ms INTEGER NOT NULL,
         max_deliver INTEGER NOT NULL,
         max_ack_pending INTEGER NOT NULL,
         next_seq INTEGER NOT NULL,
         created_ms INTEGER NOT NULL,
         PRIMARY KEY (stream, name)
     ) WITHOUT ROWID;
     CREATE TABLE consumer_pending (
         stream TEXT NOT NULL,
         name TEXT NOT NULL,
         seq INTEGER NOT NULL,
         deliveries INTEGER NOT NULL,
         PRIMARY KEY (stream, name, seq)
     ) WITHOUT ROWID;",
];

/// The schema version this build writes.
pub const VERSION: u32 = MIGRATIONS.len() as u32;

/// Brings `conn` to [`VERSION`]; refuses a database written by a newer build.
pub fn migrate(conn: &mut Connection) -> rusqlite::Result<Result<(), String>> {
    let current: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current > VERSION {
        return Ok(Err(format!(
            "the state database has schema version {current}, newer than this hookbus ({VERSION}): run the newer hookbus, or move the state directory aside"
        )));
    }
    for (n, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", n as u32 + 1)?;
        tx.commit()?;
    }
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrating_twice_is_a_no_op_and_a_newer_schema_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap().unwrap();
        migrate(&mut conn).unwrap().unwrap();
        let v: u32 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, VERSION);
        conn.pragma_update(None, "user_version", VERSION + 1)
            .unwrap();
        assert!(migrate(&mut conn).unwrap().unwrap_err().contains("newer"));
    }
}
