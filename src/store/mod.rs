//! SQLite: the only place SQL is written.
//!
//! One file (`keel.db`, WAL mode) under the data directory holds the
//! operator's grants, the audit log, each skill's key-value namespace, the
//! capabilities each skill was first seen with, and the origins each skill
//! name is accepted from. Grants, baselines, kv data and accepted origins
//! are kept per workspace (the canonical path keel runs in): one data dir
//! shared by several projects never lets a grant, a first sighting or a
//! skill's data in one apply to another. Rows written before that
//! (migration 4) carry the workspace `""`: a grant there applies nowhere
//! (`keel grants` says so), a baseline and kv data move to the first
//! workspace that accepts the skill name. Several keel processes may
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
    // 4: grants, baselines and kv data per workspace; which origins a skill
    // name is accepted from. Rows from before carry the workspace '' (see
    // `LEGACY_WORKSPACE`): such a grant applies nowhere; such a baseline
    // and such kv data are adopted (moved) by the first workspace that
    // accepts a skill of that name.
    "CREATE TABLE grants_v4 (
        workspace TEXT NOT NULL,
        skill TEXT NOT NULL,
        capability TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        PRIMARY KEY (workspace, skill, capability)
    );
    INSERT INTO grants_v4 (workspace, skill, capability, created_ms)
        SELECT '', skill, capability, created_ms FROM grants;
    DROP TABLE grants;
    ALTER TABLE grants_v4 RENAME TO grants;
    CREATE TABLE skill_baseline_v4 (
        workspace TEXT NOT NULL,
        skill TEXT NOT NULL,
        capability TEXT NOT NULL,
        PRIMARY KEY (workspace, skill, capability)
    );
    INSERT INTO skill_baseline_v4 (workspace, skill, capability)
        SELECT '', skill, capability FROM skill_baseline;
    DROP TABLE skill_baseline;
    ALTER TABLE skill_baseline_v4 RENAME TO skill_baseline;
    CREATE TABLE skill_owners (
        workspace TEXT NOT NULL,
        skill TEXT NOT NULL,
        origin TEXT NOT NULL,
        accepted_ms INTEGER NOT NULL,
        PRIMARY KEY (workspace, skill, origin)
    );
    CREATE TABLE kv_v4 (
        workspace TEXT NOT NULL,
        skill TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        updated_ms INTEGER NOT NULL,
        PRIMARY KEY (workspace, skill, key)
    );
    INSERT INTO kv_v4 (workspace, skill, key, value, updated_ms)
        SELECT '', skill, key, value, updated_ms FROM kv;
    DROP TABLE kv;
    ALTER TABLE kv_v4 RENAME TO kv;
    ALTER TABLE approvals ADD COLUMN workspace TEXT NOT NULL DEFAULT '';",
];

/// The workspace of grants and baselines recorded before they were kept
/// per workspace (migration 4). A grant there applies nowhere; `keel
/// grants` lists it with a hint to grant it again where it is meant.
pub const LEGACY_WORKSPACE: &str = "";

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
    /// The workspace (absolute path) the grant applies in; `""`
    /// ([`LEGACY_WORKSPACE`]) for a grant from before grants were per
    /// workspace, which applies nowhere.
    pub workspace: String,
    pub skill: String,
    pub capability: String,
    pub created_ms: i64,
}

/// Where one copy of a skill stands in a workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// Its origin is accepted for the name here (it was there when the
    /// name was first seen, or the operator accepted it). `pending` are
    /// its declared capabilities that are not in the name's baseline.
    Owner { pending: Vec<String> },
    /// Its origin is not accepted for the name here. `owners` are the
    /// origins that are (empty: nobody yet, and this copy could not be
    /// accepted, e.g. two copies of one version compete).
    Claimant { owners: Vec<String> },
}

/// One copy of a skill found on disk, as [`Store::sight_skill`] sees it.
#[derive(Debug, Clone)]
pub struct SkillCopy<'a> {
    /// [`Origin::key`](crate::skill::Origin::key).
    pub origin: &'a str,
    /// Its declared capabilities, as written.
    pub declared: &'a [String],
    /// Whether a first sighting may accept it (false for one of two copies
    /// of the same version).
    pub may_accept: bool,
}

fn accepted_origins(c: &Connection, ws: &str, name: &str) -> rusqlite::Result<Vec<String>> {
    let mut st = c.prepare_cached(
        "SELECT origin FROM skill_owners WHERE workspace = ?1 AND skill = ?2 ORDER BY accepted_ms, origin",
    )?;
    let rows = st.query_map(params![ws, name], |r| r.get(0))?;
    rows.collect()
}

/// A workspace as the store keys it.
fn ws_key(workspace: &Path) -> String {
    workspace.to_string_lossy().into_owned()
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

    /// Records a grant for a skill in a workspace; granting twice is not an
    /// error.
    pub fn grant(
        &self,
        workspace: &Path,
        skill: &str,
        capability: &str,
    ) -> Result<bool, StoreError> {
        self.with(|c| {
            let n = c.execute(
                "INSERT OR IGNORE INTO grants (workspace, skill, capability, created_ms)
                 VALUES (?1, ?2, ?3, ?4)",
                params![ws_key(workspace), skill, capability, now_ms()],
            )?;
            Ok(n > 0)
        })
    }

    /// Removes a grant; returns whether there was one. `workspace` may be
    /// [`LEGACY_WORKSPACE`] to clear a grant from before the migration.
    pub fn revoke(
        &self,
        workspace: &str,
        skill: &str,
        capability: &str,
    ) -> Result<bool, StoreError> {
        self.with(|c| {
            let n = c.execute(
                "DELETE FROM grants WHERE workspace = ?1 AND skill = ?2 AND capability = ?3",
                params![workspace, skill, capability],
            )?;
            Ok(n > 0)
        })
    }

    /// Grants in one workspace for one skill (or every skill with `None`).
    pub fn grants(
        &self,
        workspace: &Path,
        skill: Option<&str>,
    ) -> Result<Vec<GrantRecord>, StoreError> {
        self.grants_where(Some(&ws_key(workspace)), skill)
    }

    /// Every grant in every workspace, legacy ones included: `keel grants`.
    pub fn all_grants(&self) -> Result<Vec<GrantRecord>, StoreError> {
        self.grants_where(None, None)
    }

    fn grants_where(
        &self,
        workspace: Option<&str>,
        skill: Option<&str>,
    ) -> Result<Vec<GrantRecord>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT workspace, skill, capability, created_ms FROM grants
                 WHERE (?1 IS NULL OR workspace = ?1) AND (?2 IS NULL OR skill = ?2)
                 ORDER BY workspace, skill, capability",
            )?;
            let rows = st.query_map(params![workspace, skill], |r| {
                Ok(GrantRecord {
                    workspace: r.get(0)?,
                    skill: r.get(1)?,
                    capability: r.get(2)?,
                    created_ms: r.get(3)?,
                })
            })?;
            rows.collect()
        })
    }

    // --- skill origins and first-seen capabilities ---------------------------

    /// Where each copy of skill `name` stands in `workspace`, recording a
    /// first sighting: when the name was never seen here, every copy found
    /// now (whose `may_accept` is set) is accepted, with the union of their
    /// declared capabilities as the name's baseline. Later, a copy from an
    /// origin not accepted here is a claimant. One immediate transaction,
    /// so processes sighting the same new name at once agree.
    ///
    /// A baseline from before baselines were per workspace is adopted
    /// (moved, not copied) by the first workspace that accepts the name:
    /// it can only be stricter than the current declaration.
    pub fn sight_skill(
        &self,
        workspace: &Path,
        name: &str,
        copies: &[SkillCopy<'_>],
    ) -> Result<Vec<Standing>, StoreError> {
        let ws = ws_key(workspace);
        self.with(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let mut accepted = accepted_origins(&tx, &ws, name)?;
            if accepted.is_empty() {
                let now = now_ms();
                for copy in copies.iter().filter(|c| c.may_accept) {
                    tx.execute(
                        "INSERT OR IGNORE INTO skill_owners (workspace, skill, origin, accepted_ms)
                         VALUES (?1, ?2, ?3, ?4)",
                        params![ws, name, copy.origin, now],
                    )?;
                    accepted.push(copy.origin.to_string());
                }
                let has_baseline: bool = tx.query_row(
                    "SELECT EXISTS (SELECT 1 FROM skill_baseline WHERE workspace = ?1 AND skill = ?2)",
                    params![ws, name],
                    |r| r.get(0),
                )?;
                if !accepted.is_empty() {
                    // The name's data from before kv was per workspace
                    // follows it here, once.
                    tx.execute(
                        "UPDATE kv SET workspace = ?1 WHERE workspace = ?2 AND skill = ?3",
                        params![ws, LEGACY_WORKSPACE, name],
                    )?;
                }
                if !accepted.is_empty() && !has_baseline {
                    let adopted = tx.execute(
                        "UPDATE skill_baseline SET workspace = ?1 WHERE workspace = ?2 AND skill = ?3",
                        params![ws, LEGACY_WORKSPACE, name],
                    )?;
                    if adopted == 0 {
                        let declared = copies
                            .iter()
                            .filter(|c| c.may_accept)
                            .flat_map(|c| c.declared.iter().map(String::as_str));
                        for cap in std::iter::once("").chain(declared) {
                            tx.execute(
                                "INSERT OR IGNORE INTO skill_baseline (workspace, skill, capability)
                                 VALUES (?1, ?2, ?3)",
                                params![ws, name, cap],
                            )?;
                        }
                    }
                }
            }
            let base: Vec<String> = {
                let mut st = tx.prepare_cached(
                    "SELECT capability FROM skill_baseline WHERE workspace = ?1 AND skill = ?2",
                )?;
                let rows = st.query_map(params![ws, name], |r| r.get(0))?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            tx.commit()?;
            Ok(copies
                .iter()
                .map(|copy| {
                    if accepted.iter().any(|o| o == copy.origin) {
                        Standing::Owner {
                            pending: copy
                                .declared
                                .iter()
                                .filter(|d| !base.contains(d))
                                .cloned()
                                .collect(),
                        }
                    } else {
                        Standing::Claimant {
                            owners: accepted.clone(),
                        }
                    }
                })
                .collect())
        })
    }

    /// The origins accepted for skill `name` in `workspace`.
    pub fn skill_origins(&self, workspace: &Path, name: &str) -> Result<Vec<String>, StoreError> {
        self.with(|c| accepted_origins(c, &ws_key(workspace), name))
    }

    /// The operator accepts `origin` for skill `name` in `workspace` (`keel
    /// skill accept`): a copy from there loads and shares the name's
    /// grants, baseline, policy section and data. Returns whether it was
    /// new.
    pub fn accept_skill_origin(
        &self,
        workspace: &Path,
        name: &str,
        origin: &str,
    ) -> Result<bool, StoreError> {
        self.with(|c| {
            let n = c.execute(
                "INSERT OR IGNORE INTO skill_owners (workspace, skill, origin, accepted_ms)
                 VALUES (?1, ?2, ?3, ?4)",
                params![ws_key(workspace), name, origin, now_ms()],
            )?;
            Ok(n > 0)
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

    /// The JSON text stored under `key` in `skill`'s namespace in
    /// `workspace`. A namespace belongs to the skill name in one workspace
    /// (shared by the origins accepted for it there), so a skill of the
    /// same name elsewhere never reads it.
    pub fn kv_get(
        &self,
        workspace: &Path,
        skill: &str,
        key: &str,
    ) -> Result<Option<String>, StoreError> {
        Self::check_key(key)?;
        self.with(|c| {
            c.prepare_cached(
                "SELECT value FROM kv WHERE workspace = ?1 AND skill = ?2 AND key = ?3",
            )?
            .query_row(params![ws_key(workspace), skill, key], |r| r.get(0))
            .optional()
        })
    }

    pub fn kv_set(
        &self,
        workspace: &Path,
        skill: &str,
        key: &str,
        json: &str,
    ) -> Result<(), StoreError> {
        Self::check_key(key)?;
        if json.len() > KV_MAX_VALUE {
            return Err(StoreError::TooLarge(format!(
                "kv value is {} bytes as JSON; the limit is {KV_MAX_VALUE}",
                json.len()
            )));
        }
        self.with(|c| {
            c.prepare_cached(
                "INSERT INTO kv (workspace, skill, key, value, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (workspace, skill, key) DO UPDATE SET value = excluded.value,
                    updated_ms = excluded.updated_ms",
            )?
            .execute(params![ws_key(workspace), skill, key, json, now_ms()])?;
            Ok(())
        })
    }

    /// Deletes a key; returns whether it existed.
    pub fn kv_delete(&self, workspace: &Path, skill: &str, key: &str) -> Result<bool, StoreError> {
        Self::check_key(key)?;
        self.with(|c| {
            let n = c
                .prepare_cached("DELETE FROM kv WHERE workspace = ?1 AND skill = ?2 AND key = ?3")?
                .execute(params![ws_key(workspace), skill, key])?;
            Ok(n > 0)
        })
    }

    /// Keys in `skill`'s namespace that start with `prefix`, sorted, at most
    /// [`KV_MAX_LIST`].
    pub fn kv_list(
        &self,
        workspace: &Path,
        skill: &str,
        prefix: &str,
    ) -> Result<Vec<String>, StoreError> {
        Self::check_key(prefix)?;
        self.with(|c| {
            // substr() rather than LIKE, so `%` and `_` in a prefix are literal.
            let mut st = c.prepare_cached(
                "SELECT key FROM kv WHERE workspace = ?1 AND skill = ?2
                    AND substr(key, 1, length(?3)) = ?3
                 ORDER BY key LIMIT ?4",
            )?;
            let rows = st.query_map(
                params![ws_key(workspace), skill, prefix, KV_MAX_LIST as i64],
                |r| r.get(0),
            )?;
            rows.collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_namespaces_are_separate_and_prefixes_are_literal() {
        let s = Store::in_memory().unwrap();
        let w = Path::new("/ws/a");
        s.kv_set(w, "a", "x%1", "1").unwrap();
        s.kv_set(w, "a", "xy", "2").unwrap();
        s.kv_set(w, "b", "x%1", "3").unwrap();
        assert_eq!(s.kv_get(w, "a", "x%1").unwrap().as_deref(), Some("1"));
        assert_eq!(s.kv_get(w, "b", "x%1").unwrap().as_deref(), Some("3"));
        assert_eq!(s.kv_list(w, "a", "x%").unwrap(), vec!["x%1".to_string()]);
        assert!(s.kv_delete(w, "a", "xy").unwrap());
        assert!(!s.kv_delete(w, "a", "xy").unwrap());
        assert_eq!(s.kv_get(w, "a", "xy").unwrap(), None);
        assert!(s.kv_set(w, "a", &"k".repeat(KV_MAX_KEY + 1), "1").is_err());
        // The same skill name in another workspace is another namespace.
        let other = Path::new("/ws/b");
        assert_eq!(s.kv_get(other, "a", "x%1").unwrap(), None);
        assert!(s.kv_list(other, "a", "").unwrap().is_empty());
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
        let a = Path::new("/ws/a");
        let b = Path::new("/ws/b");
        {
            let s = Store::open(d.path()).unwrap();
            assert!(s.grant(a, "notes", "exec:git").unwrap());
            assert!(!s.grant(a, "notes", "exec:git").unwrap());
        }
        let s = Store::open(d.path()).unwrap();
        assert_eq!(s.grants(a, Some("notes")).unwrap().len(), 1);
        // A grant is for its workspace only.
        assert!(s.grants(b, Some("notes")).unwrap().is_empty());
        assert!(s.revoke("/ws/a", "notes", "exec:git").unwrap());
        assert!(s.all_grants().unwrap().is_empty());
    }

    fn copy<'a>(origin: &'a str, declared: &'a [String]) -> SkillCopy<'a> {
        SkillCopy {
            origin,
            declared,
            may_accept: true,
        }
    }

    #[test]
    fn the_origins_first_seen_own_a_name_and_others_are_claimants() {
        let s = Store::in_memory().unwrap();
        let a = Path::new("/ws/a");
        let caps = ["kv".to_string()];
        let more = ["kv".to_string(), "exec:*".to_string()];
        // First sighting: every copy found now is accepted (two versions
        // side by side), their declarations together are the baseline.
        assert_eq!(
            s.sight_skill(a, "vict", &[copy("/a/v1", &caps), copy("/a/v2", &caps)])
                .unwrap(),
            vec![
                Standing::Owner { pending: vec![] },
                Standing::Owner { pending: vec![] }
            ]
        );
        // An accepted origin that declares more: pending.
        assert_eq!(
            s.sight_skill(a, "vict", &[copy("/a/v1", &more)]).unwrap(),
            vec![Standing::Owner {
                pending: vec!["exec:*".into()]
            }]
        );
        // Another origin: a claimant, whatever it declares.
        assert_eq!(
            s.sight_skill(a, "vict", &[copy("/a/scripts/zz.luau", &caps)])
                .unwrap(),
            vec![Standing::Claimant {
                owners: vec!["/a/v1".into(), "/a/v2".into()]
            }]
        );
        // Another workspace: its own first sighting and baseline.
        let b = Path::new("/ws/b");
        assert_eq!(
            s.sight_skill(b, "vict", &[copy("/b/vict", &more)]).unwrap(),
            vec![Standing::Owner { pending: vec![] }]
        );
        // Nobody owns it and it may not be accepted: held back.
        let twin = SkillCopy {
            may_accept: false,
            ..copy("/x", &caps)
        };
        assert_eq!(
            s.sight_skill(a, "twin", &[twin.clone(), twin]).unwrap(),
            vec![
                Standing::Claimant { owners: vec![] },
                Standing::Claimant { owners: vec![] }
            ]
        );
        // The operator accepts the claimant: it shares the baseline.
        assert!(
            s.accept_skill_origin(a, "vict", "/a/scripts/zz.luau")
                .unwrap()
        );
        assert!(
            !s.accept_skill_origin(a, "vict", "/a/scripts/zz.luau")
                .unwrap()
        );
        assert_eq!(
            s.sight_skill(a, "vict", &[copy("/a/scripts/zz.luau", &more)])
                .unwrap(),
            vec![Standing::Owner {
                pending: vec!["exec:*".into()]
            }]
        );
    }

    #[test]
    fn rows_from_before_the_migration_apply_nowhere_or_are_adopted_once() {
        let d = tempfile::tempdir().unwrap();
        {
            // A database at schema 3, with a grant and a baseline.
            let c = Connection::open(d.path().join("keel.db")).unwrap();
            for sql in &MIGRATIONS[..3] {
                c.execute_batch(sql).unwrap();
            }
            c.pragma_update(None, "user_version", 3).unwrap();
            c.execute_batch(
                "INSERT INTO grants VALUES ('notes', 'fs.read:/ws/a', 1);
                 INSERT INTO skill_baseline VALUES ('notes', ''), ('notes', 'kv');
                 INSERT INTO kv VALUES ('notes', 'n', '1', 1);",
            )
            .unwrap();
        }
        let s = Store::open(d.path()).unwrap();
        let all = s.all_grants().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].workspace, LEGACY_WORKSPACE);
        assert!(s.grants(Path::new("/ws/a"), None).unwrap().is_empty());
        // The first workspace to load `notes` adopts the old baseline (the
        // stricter one): `exec:git` stays pending.
        let caps = ["kv".to_string(), "exec:git".to_string()];
        assert_eq!(
            s.sight_skill(
                Path::new("/ws/a"),
                "notes",
                &[copy("/ws/a/skills/notes", &caps)]
            )
            .unwrap(),
            vec![Standing::Owner {
                pending: vec!["exec:git".into()]
            }]
        );
        // The old data followed the name to that workspace.
        assert_eq!(
            s.kv_get(Path::new("/ws/a"), "notes", "n")
                .unwrap()
                .as_deref(),
            Some("1")
        );
        // Moved, not copied: the next workspace starts from its own.
        assert_eq!(s.kv_get(Path::new("/ws/b"), "notes", "n").unwrap(), None);
        assert_eq!(
            s.sight_skill(Path::new("/ws/b"), "notes", &[copy("/ws/b/notes", &caps)])
                .unwrap(),
            vec![Standing::Owner { pending: vec![] }]
        );
    }
}
