//! The KV as the store keeps it: the `kv` table, and in memory what a write
//! must be checked against (each key's revision, expiry and size, not its
//! value: the router holds the values it serves).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use rusqlite::{params, Transaction};

/// Most keys the KV holds.
pub const MAX_KEYS: usize = 1_000_000;

/// Most bytes of keys and values the KV holds (the router keeps them in memory).
pub const MAX_BYTES: usize = 256 * 1024 * 1024;

/// A key and its value, as loaded or as changed.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: Arc<str>,
    /// JSON text.
    pub value: Bytes,
    pub revision: u64,
    /// Unix time in ms after which the key is gone.
    pub expires_at_ms: Option<u64>,
}

/// A write to the KV.
#[derive(Debug, Clone)]
pub enum Write {
    Put {
        key: Arc<str>,
        value: Bytes,
        ttl_ms: Option<u64>,
        /// `Some(0)`: create only; `Some(n)`: only over revision `n`.
        if_revision: Option<u64>,
    },
    Delete {
        key: Arc<str>,
        if_revision: Option<u64>,
    },
}

/// What became of a write.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Stored {
        key: Arc<str>,
        revision: u64,
    },
    Deleted {
        key: Arc<str>,
        revision: u64,
    },
    /// `if_revision` did not hold; `current` is 0 when the key is absent.
    RevisionMismatch {
        current: u64,
    },
    NotFound {
        key: Arc<str>,
    },
    Full {
        detail: String,
    },
}

/// How a key changed, in revision order.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Put(Entry),
    Delete { key: Arc<str>, revision: u64 },
    Expire { key: Arc<str>, revision: u64 },
}

#[derive(Debug, Clone, Copy)]
struct Meta {
    revision: u64,
    expires_at_ms: Option<u64>,
    size: usize,
}

/// The store's view of the KV.
#[derive(Debug, Default)]
pub struct Kv {
    keys: HashMap<Arc<str>, Meta>,
    /// Keys with a TTL, by expiry.
    expiry: BTreeSet<(u64, Arc<str>)>,
    revision: u64,
    bytes: usize,
    /// What the writes of the open transaction replaced, to undo them when it
    /// fails to commit.
    undo: Vec<(Arc<str>, Option<Meta>)>,
    undo_revision: u64,
}

impl Kv {
    /// Reads the table; returns the entries for the router.
    pub fn load(conn: &rusqlite::Connection) -> rusqlite::Result<(Self, Vec<Entry>)> {
        let revision = conn.query_row(
            "SELECT value FROM meta WHERE name = 'kv_revision'",
            [],
            |r| r.get::<_, i64>(0),
        )? as u64;
        let mut kv = Kv {
            revision,
            undo_revision: revision,
            ..Kv::default()
        };
        let mut stmt = conn.prepare("SELECT key, value, revision, expires_at_ms FROM kv")?;
        let entries = stmt
            .query_map([], |r| {
                Ok(Entry {
                    key: Arc::from(r.get::<_, String>(0)?),
                    value: Bytes::from(r.get::<_, Vec<u8>>(1)?),
                    revision: r.get::<_, i64>(2)? as u64,
                    expires_at_ms: r.get::<_, Option<i64>>(3)?.map(|t| t as u64),
                })
            })?
            .collect::<rusqlite::Result<Vec<Entry>>>()?;
        for e in &entries {
            kv.set(e.key.clone(), Some(meta_of(e)));
        }
        Ok((kv, entries))
    }

    /// The earliest expiry, if any key has a TTL.
    pub fn next_expiry(&self) -> Option<u64> {
        self.expiry.first().map(|(at, _)| *at)
    }

    /// Applies `write` inside `tx`.
    pub fn apply(
        &mut self,
        tx: &Transaction,
        write: Write,
        now_ms: u64,
    ) -> rusqlite::Result<(Outcome, Option<Change>)> {
        match write {
            Write::Put {
                key,
                value,
                ttl_ms,
                if_revision,
            } => {
                let current = self.live(&key, now_ms);
                if let Some(want) = if_revision {
                    let have = current.map_or(0, |m| m.revision);
                    if have != want {
                        return Ok((Outcome::RevisionMismatch { current: have }, None));
                    }
                }
                let size = key.len() + value.len();
                let old = self.keys.get(&key).map_or(0, |m| m.size);
                let keys = self.keys.len() + usize::from(!self.keys.contains_key(&key));
                if keys > MAX_KEYS || self.bytes - old + size > MAX_BYTES {
                    let detail = format!(
                        "the KV holds at most {MAX_KEYS} keys and {} MiB of keys and values; delete some first",
                        MAX_BYTES >> 20
                    );
                    return Ok((Outcome::Full { detail }, None));
                }
                let revision = self.revision + 1;
                let expires_at_ms = ttl_ms.map(|t| now_ms.saturating_add(t));
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO kv (key, value, revision, expires_at_ms) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![
                    &*key,
                    &value[..],
                    revision as i64,
                    expires_at_ms.map(|t| t as i64)
                ])?;
                self.revision = revision;
                let entry = Entry {
                    key,
                    value,
                    revision,
                    expires_at_ms,
                };
                let key = entry.key.clone();
                self.record(key.clone(), Some(meta_of(&entry)));
                Ok((Outcome::Stored { key, revision }, Some(Change::Put(entry))))
            }
            Write::Delete { key, if_revision } => {
                let Some(current) = self.live(&key, now_ms) else {
                    return Ok((Outcome::NotFound { key }, None));
                };
                if if_revision.is_some_and(|want| want != current.revision) {
                    let current = current.revision;
                    return Ok((Outcome::RevisionMismatch { current }, None));
                }
                let revision = self.remove(tx, &key)?;
                let change = Change::Delete {
                    key: key.clone(),
                    revision,
                };
                Ok((Outcome::Deleted { key, revision }, Some(change)))
            }
        }
    }

    /// Removes keys whose time has come, inside `tx`.
    pub fn expire(
        &mut self,
        tx: &Transaction,
        now_ms: u64,
        changes: &mut Vec<Change>,
    ) -> rusqlite::Result<()> {
        while let Some((at, key)) = self.expiry.first().cloned() {
            if at > now_ms {
                break;
            }
            let revision = self.remove(tx, &key)?;
            changes.push(Change::Expire { key, revision });
        }
        Ok(())
    }

    /// Writes the revision sequence; ends the transaction's bookkeeping.
    pub fn finish(&mut self, tx: &Transaction) -> rusqlite::Result<()> {
        if self.revision != self.undo_revision {
            tx.prepare_cached("UPDATE meta SET value = ?1 WHERE name = 'kv_revision'")?
                .execute([self.revision as i64])?;
        }
        Ok(())
    }

    /// The transaction committed: its writes stay.
    pub fn committed(&mut self) {
        self.undo.clear();
        self.undo_revision = self.revision;
    }

    /// The transaction failed: its writes are undone, newest first.
    pub fn rolled_back(&mut self) {
        while let Some((key, meta)) = self.undo.pop() {
            self.set(key, meta);
        }
        self.revision = self.undo_revision;
    }

    fn live(&self, key: &str, now_ms: u64) -> Option<Meta> {
        self.keys
            .get(key)
            .copied()
            .filter(|m| m.expires_at_ms.is_none_or(|at| at > now_ms))
    }

    fn remove(&mut self, tx: &Transaction, key: &Arc<str>) -> rusqlite::Result<u64> {
        tx.prepare_cached("DELETE FROM kv WHERE key = ?1")?
            .execute([&**key])?;
        self.revision += 1;
        self.record(key.clone(), None);
        Ok(self.revision)
    }

    fn record(&mut self, key: Arc<str>, meta: Option<Meta>) {
        let old = self.set(key.clone(), meta);
        self.undo.push((key, old));
    }

    /// Sets what is known of `key`, keeping the expiry index and byte count.
    fn set(&mut self, key: Arc<str>, meta: Option<Meta>) -> Option<Meta> {
        let old = match meta {
            Some(m) => {
                if let Some(at) = m.expires_at_ms {
                    self.expiry.insert((at, key.clone()));
                }
                self.bytes += m.size;
                self.keys.insert(key.clone(), m)
            }
            None => self.keys.remove(&key),
        };
        if let Some(old) = old {
            if let Some(at) = old.expires_at_ms {
                if meta.and_then(|m| m.expires_at_ms) != Some(at) {
                    self.expiry.remove(&(at, key));
                }
            }
            self.bytes -= old.size;
        }
        old
    }
}

fn meta_of(e: &Entry) -> Meta {
    Meta {
        revision: e.revision,
        expires_at_ms: e.expires_at_ms,
        size: e.key.len() + e.value.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> rusqlite::Connection {
        let mut conn = rusqlite::Connection::open_in_memory().unwrap();
        super::super::schema::migrate(&mut conn).unwrap().unwrap();
        conn
    }

    fn put(key: &str, value: &str, if_revision: Option<u64>, ttl_ms: Option<u64>) -> Write {
        Write::Put {
            key: key.into(),
            value: Bytes::copy_from_slice(value.as_bytes()),
            ttl_ms,
            if_revision,
        }
    }

    #[test]
    fn compare_and_set_and_create_only() {
        let mut conn = db();
        let (mut kv, _) = Kv::load(&conn).unwrap();
        let tx = conn.transaction().unwrap();
        assert_eq!(
            kv.apply(&tx, put("a", "1", Some(0), None), 0).unwrap().0,
            Outcome::Stored {
                key: "a".into(),
                revision: 1
            }
        );
        assert_eq!(
            kv.apply(&tx, put("a", "2", Some(0), None), 0).unwrap().0,
            Outcome::RevisionMismatch { current: 1 }
        );
        assert_eq!(
            kv.apply(&tx, put("a", "2", Some(1), None), 0).unwrap().0,
            Outcome::Stored {
                key: "a".into(),
                revision: 2
            }
        );
        assert_eq!(
            kv.apply(
                &tx,
                Write::Delete {
                    key: "a".into(),
                    if_revision: Some(1)
                },
                0
            )
            .unwrap()
            .0,
            Outcome::RevisionMismatch { current: 2 }
        );
        assert_eq!(
            kv.apply(
                &tx,
                Write::Delete {
                    key: "a".into(),
                    if_revision: None
                },
                0
            )
            .unwrap()
            .0,
            Outcome::Deleted {
                key: "a".into(),
                revision: 3
            }
        );
        assert_eq!(
            kv.apply(
                &tx,
                Write::Delete {
                    key: "a".into(),
                    if_revision: None
                },
                0
            )
            .unwrap()
            .0,
            Outcome::NotFound { key: "a".into() }
        );
        kv.finish(&tx).unwrap();
        tx.commit().unwrap();
        kv.committed();
        let (again, entries) = Kv::load(&conn).unwrap();
        assert_eq!((again.revision, entries.len()), (3, 0));
    }

    #[test]
    fn a_failed_transaction_is_undone_in_memory_too() {
        let mut conn = db();
        let (mut kv, _) = Kv::load(&conn).unwrap();
        let tx = conn.transaction().unwrap();
        kv.apply(&tx, put("a", "1", None, Some(10)), 0).unwrap();
        kv.finish(&tx).unwrap();
        tx.commit().unwrap();
        kv.committed();
        let tx = conn.transaction().unwrap();
        kv.apply(&tx, put("a", "22", None, None), 0).unwrap();
        kv.apply(&tx, put("b", "3", None, Some(5)), 0).unwrap();
        drop(tx);
        kv.rolled_back();
        assert_eq!(kv.revision, 1);
        assert_eq!(kv.bytes, 2);
        assert_eq!(kv.next_expiry(), Some(10));
        assert!(kv.live("b", 0).is_none());
    }

    #[test]
    fn expiry_removes_keys_in_order_and_a_rewrite_moves_it() {
        let mut conn = db();
        let (mut kv, _) = Kv::load(&conn).unwrap();
        let tx = conn.transaction().unwrap();
        kv.apply(&tx, put("a", "1", None, Some(10)), 0).unwrap();
        kv.apply(&tx, put("b", "1", None, Some(20)), 0).unwrap();
        kv.apply(&tx, put("a", "2", None, Some(30)), 0).unwrap();
        let mut changes = Vec::new();
        kv.expire(&tx, 25, &mut changes).unwrap();
        assert_eq!(
            changes,
            [Change::Expire {
                key: "b".into(),
                revision: 4
            }]
        );
        assert!(kv.live("a", 25).is_some());
        assert!(
            kv.live("a", 30).is_none(),
            "expired at its time even before it is reaped"
        );
    }
}
