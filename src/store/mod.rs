//! SQLite: the only place SQL is written.
//!
//! One file (`keel.db`, WAL mode) under the data directory holds the
//! operator's grants, the audit log, each skill's key-value namespace and the
//! capabilities each skill was first seen with. Several keel processes may
//! share it (a console and a `keel grant` in another terminal): every read
//! goes to the database, so a grant made elsewhere takes effect on the next
//! call. Migrations are numbered and run once, inside a transaction.
//! Sessions and runs live in [`sessions`], the transcript and token usage
//! in [`transcript`], approval requests in [`approvals`].

use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

mod approvals;
mod sessions;
mod transcript;

pub use approvals::{AnswerError, ApprovalAnswer, ApprovalRecord, NewApproval};
pub use sessions::{INTERRUPTED, RunError, RunRecord, SessionRecord};
pub use transcript::{MessageRecord, NewMessage, UsageTotals};

use rusqlite::{Connection, OptionalExtension, params};

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database could not be opened or a statement failed.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// The database was written by a newer keel.
    #[error(
        "the database is at schema version {found}, newer than this keel ({supported}); upgrade keel"
    )]
    TooNew { found: i64, supported: i64 },
    /// A key or value is over its limit.
    #[error("{0}")]
    TooLarge(String),
}

/// Largest key-value key, in bytes.
pub const KV_MAX_KEY: usize = 1024;
/// Largest key-value value (JSON text), in bytes.
pub const KV_MAX_VALUE: usize = 1024 * 1024;
/// Most keys one `kv.list` returns.
pub const KV_MAX_LIST: usize = 10_000;
/// Audit records kept; older ones are pruned as new ones arrive.
pub const AUDIT_KEEP: i64 = 200_000;

const MIGRATIONS: &[&str] = &[
    // 1: grants, audit, kv, first-seen capabilities
    "CREATE TABLE grants (
        skill TEXT NOT NULL,
        capability TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        PRIMARY KEY (skill, capability)
    );
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY,
        at_ms INTEGER NOT NULL,
        skill TEXT NOT NULL,
        version TEXT NOT NULL,
        tool TEXT NOT NULL,
        capability TEXT NOT NULL,
        target TEXT NOT NULL,
        decision TEXT NOT NULL,
        reason TEXT NOT NULL
    );
    CREATE TABLE kv (
        skill TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        updated_ms INTEGER NOT NULL,
        PRIMARY KEY (skill, key)
    );
    CREATE TABLE skill_baseline (
        skill TEXT NOT NULL,
        capability TEXT NOT NULL,
        PRIMARY KEY (skill, capability)
    );",
    // 2: sessions, runs and their transitions (the agent)
    "CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        title TEXT NOT NULL,
        created_ms INTEGER NOT NULL
    );
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        session_id TEXT NOT NULL REFERENCES sessions (id),
        state TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL,
        reason TEXT
    );
    CREATE INDEX runs_by_session ON runs (session_id, created_ms);
    CREATE INDEX runs_by_state ON runs (state);
    CREATE TABLE run_transitions (
        run_id TEXT NOT NULL REFERENCES runs (id),
        from_state TEXT,
        to_state TEXT NOT NULL,
        at_ms INTEGER NOT NULL,
        reason TEXT
    );
    CREATE INDEX run_transitions_by_run ON run_transitions (run_id);",
    // 3: the transcript, approvals, token usage, run owners
    "ALTER TABLE runs ADD COLUMN owner TEXT;
    ALTER TABLE runs ADD COLUMN model TEXT;
    ALTER TABLE runs ADD COLUMN input_tokens INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE runs ADD COLUMN output_tokens INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        session_id TEXT NOT NULL REFERENCES sessions (id),
        run_id TEXT REFERENCES runs (id),
        kind TEXT NOT NULL,
        content TEXT NOT NULL,
        tool_calls TEXT,
        call_id TEXT,
        name TEXT,
        is_error INTEGER NOT NULL DEFAULT 0,
        elapsed_ms INTEGER,
        covers_to INTEGER,
        created_ms INTEGER NOT NULL
    );
    CREATE INDEX messages_by_session ON messages (session_id, id);
    CREATE INDEX messages_by_run ON messages (run_id);
    CREATE TABLE approvals (
        id TEXT PRIMARY KEY,
        run_id TEXT NOT NULL REFERENCES runs (id),
        skill TEXT NOT NULL,
        tool TEXT NOT NULL,
        capability TEXT NOT NULL,
        target TEXT NOT NULL,
        rule TEXT NOT NULL,
        arguments TEXT NOT NULL,
        state TEXT NOT NULL,
        answer TEXT,
        created_ms INTEGER NOT NULL,
        answered_ms INTEGER
    );
    CREATE INDEX approvals_by_state ON approvals (state);
    CREATE TABLE usage (
        id INTEGER PRIMARY KEY,
        at_ms INTEGER NOT NULL,
        run_id TEXT,
        skill TEXT,
        model TEXT NOT NULL,
        input_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL
    );",
    // 4: bytes each skill keeps in kv (keys plus values), kept with every
    // write so the per-skill bound is checked without scanning
    "CREATE TABLE kv_usage (
        skill TEXT PRIMARY KEY,
        bytes INTEGER NOT NULL
    );
    INSERT INTO kv_usage (skill, bytes)
        SELECT skill, sum(octet_length(key) + octet_length(value)) FROM kv GROUP BY skill;",
];

/// One audit record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditRecord {
    pub id: i64,
    /// Milliseconds since the Unix epoch.
    pub at_ms: i64,
    pub skill: String,
    pub version: String,
    pub tool: String,
    pub capability: String,
    pub target: String,
    pub decision: String,
    pub reason: String,
}

/// A new audit entry, before it has an id and a time.
#[derive(Debug, Clone)]
pub struct AuditEntry<'a> {
    pub skill: &'a str,
    pub version: &'a str,
    pub tool: &'a str,
    pub capability: &'a str,
    pub target: &'a str,
    pub decision: &'a str,
    pub reason: &'a str,
}

/// A persisted grant.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GrantRecord {
    pub skill: String,
    pub capability: String,
    pub created_ms: i64,
}

/// The SQLite store. Cheap to share behind an `Arc`.
pub struct Store {
    conn: Mutex<Connection>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Store {
    /// Opens (creating if needed) `keel.db` in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let conn = Connection::open(data_dir.join("keel.db"))?;
        Self::from_connection(conn)
    }

    /// An in-memory store, for tests and `keel check`.
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::from_connection(Connection::open_in_memory()?)
    }

    fn from_connection(mut conn: Connection) -> Result<Self, StoreError> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let supported = MIGRATIONS.len() as i64;
        if version > supported {
            return Err(StoreError::TooNew {
                found: version,
                supported,
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        // A panic while holding the lock cannot leave SQLite inconsistent
        // (statements are atomic), so a poisoned lock is still usable.
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        Ok(f(&mut conn)?)
    }

    // --- grants -----------------------------------------------------------

    /// Records a grant; granting twice is not an error.
    pub fn grant(&self, skill: &str, capability: &str) -> Result<bool, StoreError> {
        self.with(|c| {
            let n = c.execute(
                "INSERT OR IGNORE INTO grants (skill, capability, created_ms) VALUES (?1, ?2, ?3)",
                params![skill, capability, now_ms()],
            )?;
            Ok(n > 0)
        })
    }

    /// Removes a grant; returns whether there was one.
    pub fn revoke(&self, skill: &str, capability: &str) -> Result<bool, StoreError> {
        self.with(|c| {
            let n = c.execute(
                "DELETE FROM grants WHERE skill = ?1 AND capability = ?2",
                params![skill, capability],
            )?;
            Ok(n > 0)
        })
    }

    /// Grants for one skill, or for all skills with `None`.
    pub fn grants(&self, skill: Option<&str>) -> Result<Vec<GrantRecord>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT skill, capability, created_ms FROM grants
                 WHERE ?1 IS NULL OR skill = ?1 ORDER BY skill, capability",
            )?;
            let rows = st.query_map(params![skill], |r| {
                Ok(GrantRecord {
                    skill: r.get(0)?,
                    capability: r.get(1)?,
                    created_ms: r.get(2)?,
                })
            })?;
            rows.collect()
        })
    }

    // --- first-seen capabilities -------------------------------------------

    /// The capabilities a skill declared when keel first loaded it, or
    /// `None` if it has never been seen.
    pub fn baseline(&self, skill: &str) -> Result<Option<Vec<String>>, StoreError> {
        self.with(|c| {
            let seen: Option<i64> = c
                .query_row(
                    "SELECT 1 FROM skill_baseline WHERE skill = ?1 LIMIT 1",
                    params![skill],
                    |r| r.get(0),
                )
                .optional()?;
            if seen.is_none() {
                return Ok(None);
            }
            let mut st = c.prepare_cached(
                "SELECT capability FROM skill_baseline WHERE skill = ?1 ORDER BY capability",
            )?;
            let rows = st.query_map(params![skill], |r| r.get(0))?;
            Ok(Some(rows.collect::<rusqlite::Result<Vec<String>>>()?))
        })
    }

    /// Records the capabilities a skill was first seen with. A skill with no
    /// capabilities is recorded with the empty marker `""`, so that it counts
    /// as seen.
    pub fn set_baseline(&self, skill: &str, capabilities: &[String]) -> Result<(), StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT OR IGNORE INTO skill_baseline (skill, capability) VALUES (?1, '')",
                params![skill],
            )?;
            for cap in capabilities {
                tx.execute(
                    "INSERT OR IGNORE INTO skill_baseline (skill, capability) VALUES (?1, ?2)",
                    params![skill, cap],
                )?;
            }
            tx.commit()
        })
    }

    // --- audit ------------------------------------------------------------

    /// Appends an audit record. The log is bounded: every thousandth
    /// record prunes those older than the newest [`AUDIT_KEEP`].
    pub fn audit(&self, e: &AuditEntry<'_>) -> Result<(), StoreError> {
        self.with(|c| {
            c.prepare_cached(
                "INSERT INTO audit (at_ms, skill, version, tool, capability, target, decision, reason)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                now_ms(),
                e.skill,
                e.version,
                e.tool,
                e.capability,
                e.target,
                e.decision,
                e.reason
            ])?;
            let id = c.last_insert_rowid();
            if id % 1000 == 0 {
                c.prepare_cached("DELETE FROM audit WHERE id <= ?1")?
                    .execute(params![id - AUDIT_KEEP])?;
            }
            Ok(())
        })
    }

    /// The newest `limit` audit records, newest first.
    pub fn audit_log(&self, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT id, at_ms, skill, version, tool, capability, target, decision, reason
                 FROM audit ORDER BY id DESC LIMIT ?1",
            )?;
            let rows = st.query_map(params![limit as i64], |r| {
                Ok(AuditRecord {
                    id: r.get(0)?,
                    at_ms: r.get(1)?,
                    skill: r.get(2)?,
                    version: r.get(3)?,
                    tool: r.get(4)?,
                    capability: r.get(5)?,
                    target: r.get(6)?,
                    decision: r.get(7)?,
                    reason: r.get(8)?,
                })
            })?;
            rows.collect()
        })
    }

    // --- kv -----------------------------------------------------------------

    fn check_key(key: &str) -> Result<(), StoreError> {
        if key.len() > KV_MAX_KEY {
            return Err(StoreError::TooLarge(format!(
                "kv key is {} bytes; the limit is {KV_MAX_KEY}",
                key.len()
            )));
        }
        Ok(())
    }

    /// The JSON text stored under `key` in `skill`'s namespace.
    pub fn kv_get(&self, skill: &str, key: &str) -> Result<Option<String>, StoreError> {
        Self::check_key(key)?;
        self.with(|c| {
            c.prepare_cached("SELECT value FROM kv WHERE skill = ?1 AND key = ?2")?
                .query_row(params![skill, key], |r| r.get(0))
                .optional()
        })
    }

    /// Stores `json` under `key`, unless the skill's kv data (keys plus
    /// values, in bytes) would then pass `max_total`. A write that does not
    /// grow the data is always allowed, so a skill over its bound (after the
    /// bound was lowered) can still shrink. The check and the write are one
    /// transaction, so concurrent writers cannot both slip under the bound.
    pub fn kv_set(
        &self,
        skill: &str,
        key: &str,
        json: &str,
        max_total: u64,
    ) -> Result<(), StoreError> {
        Self::check_key(key)?;
        if json.len() > KV_MAX_VALUE {
            return Err(StoreError::TooLarge(format!(
                "kv value is {} bytes as JSON; the limit is {KV_MAX_VALUE}",
                json.len()
            )));
        }
        let size = (key.len() + json.len()) as i64;
        let outcome = self.with(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let old: i64 = tx
                .prepare_cached(
                    "SELECT octet_length(key) + octet_length(value) FROM kv WHERE skill = ?1 AND key = ?2",
                )?
                .query_row(params![skill, key], |r| r.get(0))
                .optional()?
                .unwrap_or(0);
            let used = kv_used(&tx, skill)?;
            let total = used - old + size;
            if total > used && total as u64 > max_total {
                return Ok(Err(total));
            }
            tx.prepare_cached(
                "INSERT INTO kv (skill, key, value, updated_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (skill, key) DO UPDATE SET value = excluded.value, updated_ms = excluded.updated_ms",
            )?
            .execute(params![skill, key, json, now_ms()])?;
            set_kv_used(&tx, skill, total)?;
            tx.commit()?;
            Ok(Ok(()))
        })?;
        outcome.map_err(|total| {
            StoreError::TooLarge(format!(
                "kv data of skill `{skill}` would be {total} bytes; the limit is {} MiB ({max_total} bytes): delete keys it no longer needs, or raise kv_mb under [limits] (or [limits.skills.{skill}]) in keel.toml",
                max_total / (1024 * 1024)
            ))
        })
    }

    /// Deletes a key; returns whether it existed.
    pub fn kv_delete(&self, skill: &str, key: &str) -> Result<bool, StoreError> {
        Self::check_key(key)?;
        self.with(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let old: Option<i64> = tx
                .prepare_cached(
                    "SELECT octet_length(key) + octet_length(value) FROM kv WHERE skill = ?1 AND key = ?2",
                )?
                .query_row(params![skill, key], |r| r.get(0))
                .optional()?;
            let Some(old) = old else {
                return Ok(false);
            };
            tx.prepare_cached("DELETE FROM kv WHERE skill = ?1 AND key = ?2")?
                .execute(params![skill, key])?;
            let used = kv_used(&tx, skill)?;
            set_kv_used(&tx, skill, (used - old).max(0))?;
            tx.commit()?;
            Ok(true)
        })
    }

    /// Bytes (keys plus values) `skill` keeps in kv.
    pub fn kv_usage(&self, skill: &str) -> Result<u64, StoreError> {
        self.with(|c| kv_used(c, skill).map(|b| b.max(0) as u64))
    }

    /// Keys in `skill`'s namespace that start with `prefix`, sorted, at most
    /// [`KV_MAX_LIST`].
    pub fn kv_list(&self, skill: &str, prefix: &str) -> Result<Vec<String>, StoreError> {
        Self::check_key(prefix)?;
        self.with(|c| {
            // substr() rather than LIKE, so `%` and `_` in a prefix are literal.
            let mut st = c.prepare_cached(
                "SELECT key FROM kv WHERE skill = ?1 AND substr(key, 1, length(?2)) = ?2
                 ORDER BY key LIMIT ?3",
            )?;
            let rows = st.query_map(params![skill, prefix, KV_MAX_LIST as i64], |r| r.get(0))?;
            rows.collect()
        })
    }
}

fn kv_used(c: &Connection, skill: &str) -> rusqlite::Result<i64> {
    Ok(
        c.prepare_cached("SELECT bytes FROM kv_usage WHERE skill = ?1")?
            .query_row(params![skill], |r| r.get(0))
            .optional()?
            .unwrap_or(0),
    )
}

fn set_kv_used(c: &Connection, skill: &str, bytes: i64) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO kv_usage (skill, bytes) VALUES (?1, ?2)
         ON CONFLICT (skill) DO UPDATE SET bytes = excluded.bytes",
    )?
    .execute(params![skill, bytes])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_total_bytes_per_skill_are_bounded_and_deletes_give_room_back() {
        let s = Store::in_memory().unwrap();
        let v = "x".repeat(400);
        s.kv_set("a", "k1", &v, 1000).unwrap();
        s.kv_set("a", "k2", &v, 1000).unwrap();
        assert_eq!(s.kv_usage("a").unwrap(), 2 * (2 + 400));
        let e = s.kv_set("a", "k3", &v, 1000).unwrap_err().to_string();
        assert!(e.contains("kv_mb") && e.contains("`a`"), "{e}");
        assert_eq!(s.kv_get("a", "k3").unwrap(), None, "a refused write landed");
        // Another skill has its own budget; overwriting in place and
        // shrinking are fine.
        s.kv_set("b", "k3", &v, 1000).unwrap();
        s.kv_set("a", "k1", &"y".repeat(400), 1000).unwrap();
        s.kv_set("a", "k1", "1", 10).unwrap();
        assert!(s.kv_delete("a", "k2").unwrap());
        assert_eq!(s.kv_usage("a").unwrap(), 3);
        s.kv_set("a", "k3", &v, 1000).unwrap();
    }

    /// Eight connections (as eight processes would have) race to fill one
    /// skill's kv: the bound holds exactly, because each check and its write
    /// are one IMMEDIATE transaction.
    #[test]
    fn racing_writers_cannot_overshoot_the_kv_bound() {
        let dir = tempfile::tempdir().unwrap();
        Store::open(dir.path()).unwrap();
        let max = 50_000u64;
        let accepted: u64 = std::thread::scope(|sc| {
            let hs: Vec<_> = (0..8)
                .map(|t| {
                    let path = dir.path().to_path_buf();
                    sc.spawn(move || {
                        let s = Store::open(&path).unwrap();
                        let mut ok = 0u64;
                        for i in 0..100 {
                            let key = format!("t{t}-{i:03}");
                            match s.kv_set("race", &key, &"v".repeat(994), max) {
                                Ok(()) => ok += 1,
                                Err(StoreError::TooLarge(_)) => {}
                                Err(e) => panic!("{e}"),
                            }
                        }
                        ok
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        let s = Store::open(dir.path()).unwrap();
        let used = s.kv_usage("race").unwrap();
        assert_eq!(
            accepted, 50,
            "{accepted} writes of 1000 bytes fit a 50000-byte bound"
        );
        assert_eq!(used, 50_000);
        assert_eq!(s.kv_list("race", "").unwrap().len(), 50);
    }

    #[test]
    fn kv_namespaces_are_separate_and_prefixes_are_literal() {
        let s = Store::in_memory().unwrap();
        s.kv_set("a", "x%1", "1", u64::MAX).unwrap();
        s.kv_set("a", "xy", "2", u64::MAX).unwrap();
        s.kv_set("b", "x%1", "3", u64::MAX).unwrap();
        assert_eq!(s.kv_get("a", "x%1").unwrap().as_deref(), Some("1"));
        assert_eq!(s.kv_get("b", "x%1").unwrap().as_deref(), Some("3"));
        assert_eq!(s.kv_list("a", "x%").unwrap(), vec!["x%1".to_string()]);
        assert!(s.kv_delete("a", "xy").unwrap());
        assert!(!s.kv_delete("a", "xy").unwrap());
        assert_eq!(s.kv_get("a", "xy").unwrap(), None);
        assert!(
            s.kv_set("a", &"k".repeat(KV_MAX_KEY + 1), "1", u64::MAX)
                .is_err()
        );
    }

    #[test]
    fn the_audit_log_is_bounded() {
        let s = Store::in_memory().unwrap();
        let e = AuditEntry {
            skill: "s",
            version: "1.0.0",
            tool: "s.t",
            capability: "kv",
            target: "",
            decision: "allow",
            reason: "test",
        };
        for _ in 0..(AUDIT_KEEP + 2000) {
            s.audit(&e).unwrap();
        }
        let count: i64 = s
            .with(|c| c.query_row("SELECT COUNT(*) FROM audit", [], |r| r.get(0)))
            .unwrap();
        assert!(count <= AUDIT_KEEP + 1000, "{count}");
        assert!(count >= AUDIT_KEEP, "{count}");
    }

    #[test]
    fn grants_persist_across_reopen_and_migrations_run_once() {
        let d = tempfile::tempdir().unwrap();
        {
            let s = Store::open(d.path()).unwrap();
            assert!(s.grant("notes", "exec:git").unwrap());
            assert!(!s.grant("notes", "exec:git").unwrap());
            s.set_baseline("notes", &["kv".into()]).unwrap();
        }
        let s = Store::open(d.path()).unwrap();
        assert_eq!(s.grants(Some("notes")).unwrap().len(), 1);
        assert_eq!(
            s.baseline("notes").unwrap(),
            Some(vec!["".into(), "kv".into()])
        );
        assert_eq!(s.baseline("other").unwrap(), None);
        assert!(s.revoke("notes", "exec:git").unwrap());
        assert!(s.grants(None).unwrap().is_empty());
    }
}
