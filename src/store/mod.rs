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
//! share it (a console, a `keel grant` in another terminal, twenty `keel ask`
//! at once): every read goes to the database, so a grant made elsewhere
//! takes effect on the next call. Sessions and runs live in [`sessions`],
//! the transcript and token usage in [`transcript`], approval requests in
//! [`approvals`].
//!
//! # Many processes, one file
//!
//! - Every transaction that may write starts `BEGIN IMMEDIATE` (the
//!   connection's default behaviour is set once, in [`Store::open`]): it
//!   takes the write lock before it reads, so no transaction reads and then
//!   tries to upgrade to a write lock. (A transaction that only reads is
//!   deferred and never writes, so it never upgrades either.) An upgrade is what SQLite refuses at once with "database
//!   is locked" (the busy handler is not consulted for it) when another
//!   process committed in between; an immediate transaction instead waits
//!   in the busy handler for its turn. Single statements outside a
//!   transaction take their lock up front and wait the same way.
//! - Waits are bounded: [`BUSY_TIMEOUT`]. When it runs out the error says
//!   which data directory and that another process holds its write lock.
//! - Setting up a database (WAL mode, migrations) happens under an
//!   exclusive lock on `keel.db.setup-lock` beside it, and the schema
//!   version is read again inside the migration's immediate transaction:
//!   fifty processes starting on an empty data directory migrate it once,
//!   and the others wait and find it done. A database already set up is
//!   recognised without taking that lock.
//! - A damaged file is found at open (`PRAGMA quick_check`, which skips
//!   the index cross-checks of a full integrity check) and reported with
//!   what to do, rather than as a puzzling failure later. It reads every
//!   page (about 1.3 ms a megabyte, paid by every command, a one-shot
//!   `keel ask` included), so a database over 1 MiB is checked at most
//!   once an hour (the time of the last clean check is
//!   `keel.db.checked`'s); a damaged page met in between is still reported
//!   as [`StoreError::Corrupt`].
//! - A full disk, a lock held too long and a damaged page are reported as
//!   what they are ([`StoreError::DiskFull`], [`StoreError::Busy`],
//!   [`StoreError::Corrupt`]), never as a missing row.
//!
//! # Async callers
//!
//! The API is synchronous; engine threads and the CLI call it directly.
//! Async code must not: a call can wait out the busy timeout, and a tokio
//! worker blocked on it stalls every task on that worker. [`Store::call`]
//! runs a closure on the store's own thread and awaits its answer, so the
//! agent loop never holds the connection's mutex on a runtime worker.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod approvals;
mod events;
mod sessions;
mod transcript;
pub mod types;

pub use approvals::{AnswerError, ApprovalRecord, NewApproval};
pub use events::{RUN_EVENTS_PAGE, RunEventRecord};
pub use sessions::{INTERRUPTED, RunError, RunRecord, SessionRecord, SessionSummary};
pub use transcript::{MessageRecord, NewMessage, UsageTotals};
pub use types::{ApprovalAnswer, ApprovalState, MessageKind, RunState};

use rusqlite::{Connection, ErrorCode, OptionalExtension, TransactionBehavior, params};

/// Longest wait for another process's write lock (and for the setup lock)
/// before a call fails with [`StoreError::Busy`].
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// A database up to this size is checked (`PRAGMA quick_check`) at every
/// open: at about 1.3 ms a megabyte, that keeps the check within a
/// millisecond or so of every command, a one-shot `keel ask` included.
const CHECK_ALWAYS_BYTES: u64 = 1024 * 1024;
/// A bigger one is checked at an open at least this long after the last
/// clean check.
const CHECK_EVERY: Duration = Duration::from_secs(3600);

/// Jobs queued for the store thread before [`Store::call`] waits to queue.
const QUEUE: usize = 256;

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A statement failed for a reason not covered below. (The message
    /// embeds SQLite's, which is therefore not also given as the source:
    /// a chain printed with `{:#}` would say it twice.)
    #[error("database error: {0}")]
    Sqlite(rusqlite::Error),
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {error}")]
    DataDir {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The database was written by a newer keel.
    #[error(
        "the database is at schema version {found}, newer than this keel ({supported}); upgrade keel"
    )]
    TooNew { found: i64, supported: i64 },
    /// A key or value is over its limit.
    #[error("{0}")]
    TooLarge(String),
    /// The disk (or quota) holding the data directory is full.
    #[error(
        "the disk holding {} is full: keel could not write its database (nothing was changed). \
         Free some space there, or point keel at another place with --data-dir, and try again",
        .dir.display()
    )]
    DiskFull { dir: PathBuf },
    /// Another process held the write lock for longer than [`BUSY_TIMEOUT`].
    #[error(
        "the database in {} stayed locked for {} s: another process using this data directory \
         holds its write lock (another keel, or a sqlite3 shell with a transaction open). \
         Try again when it is done (`fuser {}` shows who has it open)",
        .dir.display(), .waited.as_secs(), .dir.join("keel.db").display()
    )]
    Busy { dir: PathBuf, waited: Duration },
    /// The database file is damaged.
    #[error(
        "the database {db} is damaged ({detail}). keel will not use it. Move it aside \
         (`mv {db} {db}.damaged`, with its -wal and -shm files if any) to start afresh, \
         or try to save what it holds with `sqlite3 {db}.damaged .recover | sqlite3 {db}`",
        db = .dir.join("keel.db").display()
    )]
    Corrupt { dir: PathBuf, detail: String },
    /// The store thread is gone (it only stops when the store is dropped).
    #[error("the store's thread has stopped")]
    Closed,
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sqlite(e)
    }
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
    // 5: bytes each skill keeps in kv per workspace (keys plus values),
    // kept with every write so the per-skill bound is checked without
    // scanning
    "CREATE TABLE kv_usage (
        workspace TEXT NOT NULL,
        skill TEXT NOT NULL,
        bytes INTEGER NOT NULL,
        PRIMARY KEY (workspace, skill)
    );
    INSERT INTO kv_usage (workspace, skill, bytes)
        SELECT workspace, skill, sum(octet_length(key) + octet_length(value))
        FROM kv GROUP BY workspace, skill;",
    // 6: a model call whose server reported no usage is recorded as
    // unknown (NULL), not as 0 tokens; a run counts such calls
    "CREATE TABLE usage_v6 (
        id INTEGER PRIMARY KEY,
        at_ms INTEGER NOT NULL,
        run_id TEXT,
        skill TEXT,
        model TEXT NOT NULL,
        input_tokens INTEGER,
        output_tokens INTEGER
    );
    INSERT INTO usage_v6 (id, at_ms, run_id, skill, model, input_tokens, output_tokens)
        SELECT id, at_ms, run_id, skill, model, input_tokens, output_tokens FROM usage;
    DROP TABLE usage;
    ALTER TABLE usage_v6 RENAME TO usage;
    ALTER TABLE runs ADD COLUMN unreported_calls INTEGER NOT NULL DEFAULT 0;",
    // 7: what the latest model call of a run was offered (tools, and the
    // bytes of system prompt plus tool definitions)
    "ALTER TABLE runs ADD COLUMN offered_tools INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE runs ADD COLUMN offered_bytes INTEGER NOT NULL DEFAULT 0;",
    // 8: the events of runs started through the gateway, as its event
    // streams sent them, so a client can resume after a restart
    "CREATE TABLE run_events (
        run_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        event TEXT NOT NULL,
        data TEXT NOT NULL,
        at_ms INTEGER NOT NULL,
        PRIMARY KEY (run_id, seq)
    ) WITHOUT ROWID;",
    // 9: skills the operator disabled, per workspace (`keel skill
    // disable`); a skill with no row is enabled
    "CREATE TABLE skill_disabled (
        workspace TEXT NOT NULL,
        skill TEXT NOT NULL,
        disabled_ms INTEGER NOT NULL,
        PRIMARY KEY (workspace, skill)
    );",
    // 10: an approval request may have no run (a tool called directly
    // over HTTP): `run_id` may be NULL
    "CREATE TABLE approvals_v10 (
        id TEXT PRIMARY KEY,
        run_id TEXT REFERENCES runs (id),
        skill TEXT NOT NULL,
        tool TEXT NOT NULL,
        capability TEXT NOT NULL,
        target TEXT NOT NULL,
        rule TEXT NOT NULL,
        arguments TEXT NOT NULL,
        state TEXT NOT NULL,
        answer TEXT,
        created_ms INTEGER NOT NULL,
        answered_ms INTEGER,
        workspace TEXT NOT NULL DEFAULT ''
    );
    INSERT INTO approvals_v10 (id, run_id, skill, tool, capability, target, rule,
            arguments, state, answer, created_ms, answered_ms, workspace)
        SELECT id, run_id, skill, tool, capability, target, rule,
            arguments, state, answer, created_ms, answered_ms, workspace FROM approvals;
    DROP TABLE approvals;
    ALTER TABLE approvals_v10 RENAME TO approvals;
    CREATE INDEX approvals_by_state ON approvals (state);",
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
    /// The data directory, for errors and owner liveness; `None` in memory.
    dir: Option<PathBuf>,
    /// The store thread's queue, started on the first [`Store::call`].
    thread: OnceLock<tokio::sync::mpsc::Sender<Job>>,
    /// How long a statement waits for another process's lock.
    busy: Duration,
}

/// Work for the store thread.
type Job = Box<dyn FnOnce() + Send>;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Where to report a store error: the data directory, or (in memory) a
/// placeholder.
fn dir_or_memory(dir: Option<&Path>) -> PathBuf {
    dir.map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("(in-memory database)"))
}

/// Turns SQLite's result codes for a full disk, a lock held too long and
/// a damaged file into errors that say so.
fn classify(e: rusqlite::Error, dir: Option<&Path>) -> StoreError {
    classify_after(e, dir, BUSY_TIMEOUT)
}

fn classify_after(e: rusqlite::Error, dir: Option<&Path>, waited: Duration) -> StoreError {
    let code = match &e {
        rusqlite::Error::SqliteFailure(f, _) => Some(f.code),
        _ => None,
    };
    match code {
        Some(ErrorCode::DiskFull) => StoreError::DiskFull {
            dir: dir_or_memory(dir),
        },
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Busy {
            dir: dir_or_memory(dir),
            waited,
        },
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => StoreError::Corrupt {
            dir: dir_or_memory(dir),
            detail: e.to_string(),
        },
        // SQLite reports a full disk as SQLITE_FULL only for the database
        // and journal; growing the WAL index (`-shm`) or creating a file
        // on a full disk is a plain I/O error. Ask the file system.
        Some(ErrorCode::SystemIoFailure | ErrorCode::CannotOpen)
            if dir.is_some_and(no_space_left) =>
        {
            StoreError::DiskFull {
                dir: dir_or_memory(dir),
            }
        }
        _ => StoreError::Sqlite(e),
    }
}

/// Whether the file system holding `dir` has (next to) no room left for an
/// unprivileged writer.
#[cfg(unix)]
fn no_space_left(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `path` is a valid NUL-terminated string and `stat` a
    // properly sized, writable statvfs that outlives the call.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return false;
    }
    // Less than a WAL index's first page (32 KiB) cannot hold a write.
    (stat.f_bavail as u128) * (stat.f_frsize as u128) < 64 * 1024
}

#[cfg(not(unix))]
fn no_space_left(_: &Path) -> bool {
    false
}

/// Holds `keel.db.setup-lock` while a database is being set up.
struct SetupLock(std::fs::File);

impl SetupLock {
    /// Waits (at most [`BUSY_TIMEOUT`]) for the exclusive setup lock.
    fn acquire(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join("keel.db.setup-lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|error| match error.raw_os_error() {
                Some(libc::ENOSPC) => StoreError::DiskFull {
                    dir: dir.to_path_buf(),
                },
                _ => StoreError::DataDir {
                    path: path.clone(),
                    error,
                },
            })?;
        // The lock is only ever held for the few milliseconds of a setup,
        // so a short poll is cheaper than a thread parked in a blocking
        // lock that could not be abandoned at the deadline.
        let started = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(Self(file)),
                Err(std::fs::TryLockError::WouldBlock) if started.elapsed() < BUSY_TIMEOUT => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(StoreError::Busy {
                        dir: dir.to_path_buf(),
                        waited: started.elapsed(),
                    });
                }
                Err(std::fs::TryLockError::Error(error)) => {
                    return Err(StoreError::DataDir { path, error });
                }
            }
        }
    }
}

impl Drop for SetupLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

impl Store {
    /// Opens (creating if needed) `keel.db` in `data_dir`: sets it up (WAL,
    /// migrations) if that is not done yet, and checks it is not damaged.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|error| {
            if error.raw_os_error() == Some(libc::ENOSPC) {
                StoreError::DiskFull {
                    dir: data_dir.to_path_buf(),
                }
            } else {
                StoreError::DataDir {
                    path: data_dir.to_path_buf(),
                    error,
                }
            }
        })?;
        let dir = Some(data_dir);
        let err = |e| classify(e, dir);
        let mut conn = Connection::open(data_dir.join("keel.db")).map_err(err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
        conn.set_transaction_behavior(TransactionBehavior::Immediate);
        if !Self::is_set_up(&conn).map_err(err)? {
            let _lock = SetupLock::acquire(data_dir)?;
            Self::set_up(&mut conn, dir)?;
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        let size = |name: &str| std::fs::metadata(data_dir.join(name)).map_or(0, |m| m.len());
        let bytes = size("keel.db") + size("keel.db-wal");
        if Self::check_due(data_dir, bytes) {
            Self::quick_check(&conn, dir)?;
            // The time of the last clean check only matters (and is only
            // written) for a database too big to check every time.
            if bytes > CHECK_ALWAYS_BYTES {
                Self::checked(data_dir);
            }
        }
        Ok(Self::with_connection(conn, dir))
    }

    /// An in-memory store, for tests and `keel check`.
    pub fn in_memory() -> Result<Self, StoreError> {
        let err = |e| classify(e, None);
        let mut conn = Connection::open_in_memory().map_err(err)?;
        conn.set_transaction_behavior(TransactionBehavior::Immediate);
        Self::set_up(&mut conn, None)?;
        Ok(Self::with_connection(conn, None))
    }

    fn with_connection(conn: Connection, dir: Option<&Path>) -> Self {
        Self {
            conn: Mutex::new(conn),
            dir: dir.map(Path::to_path_buf),
            thread: OnceLock::new(),
            busy: BUSY_TIMEOUT,
        }
    }

    /// Shortens the wait for other processes' locks (tests of the wait).
    #[cfg(test)]
    fn set_busy_timeout(&mut self, busy: Duration) {
        let conn = self.conn.get_mut().unwrap_or_else(|p| p.into_inner());
        let _ = conn.busy_timeout(busy);
        self.busy = busy;
    }

    /// The data directory holding `keel.db`; `None` for an in-memory store.
    pub fn data_dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Whether the database is in WAL mode at the current schema version
    /// (read without any lock: the common case, a database in use).
    fn is_set_up(conn: &Connection) -> rusqlite::Result<bool> {
        let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0))?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        Ok(mode.eq_ignore_ascii_case("wal") && version == MIGRATIONS.len() as i64)
    }

    /// WAL mode and migrations. A file-backed database is set up under the
    /// setup lock (see the module docs); the version is read again inside
    /// each migration's immediate transaction all the same, so a keel that
    /// does not know the lock cannot make a migration run twice.
    fn set_up(conn: &mut Connection, dir: Option<&Path>) -> Result<(), StoreError> {
        let err = |e| classify(e, dir);
        if dir.is_some() {
            conn.pragma_update(None, "journal_mode", "WAL")
                .map_err(err)?;
        }
        let supported = MIGRATIONS.len() as i64;
        loop {
            let tx = conn.transaction().map_err(err)?;
            let version: i64 = tx
                .pragma_query_value(None, "user_version", |r| r.get(0))
                .map_err(err)?;
            if version > supported {
                return Err(StoreError::TooNew {
                    found: version,
                    supported,
                });
            }
            let Some(sql) = MIGRATIONS.get(version as usize) else {
                return Ok(());
            };
            tx.execute_batch(sql).map_err(err)?;
            tx.pragma_update(None, "user_version", version + 1)
                .map_err(err)?;
            tx.commit().map_err(err)?;
        }
    }

    /// Whether this open should run `quick_check`: always for a database
    /// up to [`CHECK_ALWAYS_BYTES`] (it reads every page: about 1.3 ms a
    /// megabyte), and for a bigger one when the last clean check
    /// (`keel.db.checked`) is older than [`CHECK_EVERY`], so a large
    /// transcript does not slow every command down. `bytes` is the size of
    /// the database and its WAL.
    fn check_due(dir: &Path, bytes: u64) -> bool {
        if bytes <= CHECK_ALWAYS_BYTES {
            return true;
        }
        std::fs::metadata(dir.join("keel.db.checked"))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_none_or(|age| age > CHECK_EVERY)
    }

    /// Notes a clean check (best effort: a failure only means the next
    /// start checks again).
    fn checked(dir: &Path) {
        let _ = std::fs::write(dir.join("keel.db.checked"), b"");
    }

    /// Fails with [`StoreError::Corrupt`] if SQLite finds a damaged page.
    fn quick_check(conn: &Connection, dir: Option<&Path>) -> Result<(), StoreError> {
        let mut st = conn
            .prepare("PRAGMA quick_check(5)")
            .map_err(|e| classify(e, dir))?;
        let problems: Vec<String> = st
            .query_map([], |r| r.get::<_, String>(0))
            .and_then(|rows| rows.collect())
            .map_err(|e| classify(e, dir))?;
        if problems.len() == 1 && problems[0] == "ok" {
            return Ok(());
        }
        Err(StoreError::Corrupt {
            dir: dir_or_memory(dir),
            detail: problems.join("; "),
        })
    }

    /// Whether the database answers (for readiness checks).
    pub fn ping(&self) -> Result<(), StoreError> {
        self.with(|c| c.query_row("SELECT 1", [], |_| Ok(())))
    }

    /// Runs `f` on the connection. Errors are classified: a full disk, a
    /// lock held too long and a damaged page each get their own variant.
    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        // A panic while holding the lock cannot leave SQLite inconsistent
        // (statements are atomic), so a poisoned lock is still usable.
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn).map_err(|e| classify_after(e, self.dir.as_deref(), self.busy))
    }

    /// Runs `f` on the store's own thread and waits for it without blocking
    /// the async runtime. For async code (the agent loop); engine threads
    /// and the CLI call the store directly.
    ///
    /// Dropping the returned future does not stop `f`: once queued, a write
    /// happens whether or not anybody waits for its answer.
    pub async fn call<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let store = self.clone();
        let job: Job = Box::new(move || {
            // A panic in `f` answers this call with an error (the sender
            // is dropped) and leaves the thread serving the next one.
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&store)));
            if let Ok(r) = r {
                let _ = answer.send(r);
            }
        });
        self.queue()?
            .send(job)
            .await
            .map_err(|_| StoreError::Closed)?;
        answered.await.map_err(|_| StoreError::Closed)?
    }

    /// The store thread's queue, starting the thread on first use. The
    /// thread ends when the store (which holds the only sender) is dropped
    /// and the queue is drained; each job holds its own `Arc` of the store.
    fn queue(&self) -> Result<&tokio::sync::mpsc::Sender<Job>, StoreError> {
        if let Some(q) = self.thread.get() {
            return Ok(q);
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Job>(QUEUE);
        if self.thread.set(tx).is_ok() {
            std::thread::Builder::new()
                .name("keel-store".into())
                .spawn(move || {
                    while let Some(job) = rx.blocking_recv() {
                        job();
                    }
                })
                .map_err(|_| StoreError::Closed)?;
        }
        self.thread.get().ok_or(StoreError::Closed)
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
    /// so processes sighting the same new name at once agree. A name
    /// already accepted here (every start after the first) needs nothing
    /// written: that case is one read transaction, which takes no write
    /// lock, so twenty processes starting at once do not queue for it.
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
        let baseline = |c: &Connection| -> rusqlite::Result<Vec<String>> {
            let mut st = c.prepare_cached(
                "SELECT capability FROM skill_baseline WHERE workspace = ?1 AND skill = ?2",
            )?;
            let rows = st.query_map(params![ws, name], |r| r.get(0))?;
            rows.collect()
        };
        let standings = |accepted: Vec<String>, base: Vec<String>| {
            copies
                .iter()
                .map(|copy| {
                    if accepted.iter().any(|o| o == copy.origin) {
                        Standing::Owner {
                            pending: crate::capability::not_in_baseline(copy.declared, &base),
                        }
                    } else {
                        Standing::Claimant {
                            owners: accepted.clone(),
                        }
                    }
                })
                .collect()
        };
        self.with(|c| {
            // Already accepted: read both in one snapshot and write nothing.
            {
                let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Deferred)?;
                let accepted = accepted_origins(&tx, &ws, name)?;
                if !accepted.is_empty() {
                    let base = baseline(&tx)?;
                    tx.commit()?;
                    return Ok(standings(accepted, base));
                }
            }
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
                    tx.execute(
                        "UPDATE kv_usage SET workspace = ?1 WHERE workspace = ?2 AND skill = ?3",
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
            let base = baseline(&tx)?;
            tx.commit()?;
            Ok(standings(accepted, base))
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

    // --- skills disabled ---------------------------------------------------

    /// Disables (`enabled = false`) or enables skill `name` in `workspace`.
    /// Returns whether that changed anything (disabling a disabled skill
    /// is not an error).
    pub fn set_skill_enabled(
        &self,
        workspace: &Path,
        name: &str,
        enabled: bool,
    ) -> Result<bool, StoreError> {
        self.with(|c| {
            let n = if enabled {
                c.execute(
                    "DELETE FROM skill_disabled WHERE workspace = ?1 AND skill = ?2",
                    params![ws_key(workspace), name],
                )?
            } else {
                c.execute(
                    "INSERT OR IGNORE INTO skill_disabled (workspace, skill, disabled_ms)
                     VALUES (?1, ?2, ?3)",
                    params![ws_key(workspace), name, now_ms()],
                )?
            };
            Ok(n > 0)
        })
    }

    /// Whether skill `name` is disabled in `workspace`.
    pub fn skill_disabled(&self, workspace: &Path, name: &str) -> Result<bool, StoreError> {
        self.with(|c| {
            c.prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM skill_disabled WHERE workspace = ?1 AND skill = ?2)",
            )?
            .query_row(params![ws_key(workspace), name], |r| r.get(0))
        })
    }

    /// The skills disabled in `workspace`, by name.
    pub fn disabled_skills(
        &self,
        workspace: &Path,
    ) -> Result<std::collections::BTreeSet<String>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT skill FROM skill_disabled WHERE workspace = ?1 ORDER BY skill",
            )?;
            let rows = st.query_map(params![ws_key(workspace)], |r| r.get(0))?;
            rows.collect()
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

    /// The newest `limit` audit records, newest first (0: all).
    pub fn audit_log(&self, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT id, at_ms, skill, version, tool, capability, target, decision, reason
                 FROM audit ORDER BY id DESC LIMIT ?1",
            )?;
            // 0 is "no limit" (SQLite's LIMIT -1), never an empty list.
            let limit = if limit == 0 { -1 } else { limit as i64 };
            let rows = st.query_map(params![limit], |r| {
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

    /// Stores `json` under `key`, unless the skill's kv data (keys plus
    /// values, in bytes) would then pass `max_total`. A write that does not
    /// grow the data is always allowed, so a skill over its bound (after the
    /// bound was lowered) can still shrink. The check and the write are one
    /// transaction, so concurrent writers cannot both slip under the bound.
    pub fn kv_set(
        &self,
        workspace: &Path,
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
        let ws = ws_key(workspace);
        let outcome = self.with(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let old: i64 = tx
                .prepare_cached(
                    "SELECT octet_length(key) + octet_length(value) FROM kv WHERE workspace = ?1 AND skill = ?2 AND key = ?3",
                )?
                .query_row(params![ws, skill, key], |r| r.get(0))
                .optional()?
                .unwrap_or(0);
            let used = kv_used(&tx, &ws, skill)?;
            let total = used - old + size;
            if total > used && total as u64 > max_total {
                return Ok(Err(total));
            }
            tx.prepare_cached(
                "INSERT INTO kv (workspace, skill, key, value, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (workspace, skill, key) DO UPDATE SET value = excluded.value,
                    updated_ms = excluded.updated_ms",
            )?
            .execute(params![ws, skill, key, json, now_ms()])?;
            set_kv_used(&tx, &ws, skill, total)?;
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
    pub fn kv_delete(&self, workspace: &Path, skill: &str, key: &str) -> Result<bool, StoreError> {
        Self::check_key(key)?;
        self.with(|c| {
            let ws = ws_key(workspace);
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let old: Option<i64> = tx
                .prepare_cached(
                    "SELECT octet_length(key) + octet_length(value) FROM kv WHERE workspace = ?1 AND skill = ?2 AND key = ?3",
                )?
                .query_row(params![ws, skill, key], |r| r.get(0))
                .optional()?;
            let Some(old) = old else {
                return Ok(false);
            };
            tx.prepare_cached("DELETE FROM kv WHERE workspace = ?1 AND skill = ?2 AND key = ?3")?
                .execute(params![ws, skill, key])?;
            let used = kv_used(&tx, &ws, skill)?;
            set_kv_used(&tx, &ws, skill, (used - old).max(0))?;
            tx.commit()?;
            Ok(true)
        })
    }

    /// Bytes (keys plus values) `skill` keeps in kv in `workspace`.
    pub fn kv_usage(&self, workspace: &Path, skill: &str) -> Result<u64, StoreError> {
        self.with(|c| kv_used(c, &ws_key(workspace), skill).map(|b| b.max(0) as u64))
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

fn kv_used(c: &Connection, workspace: &str, skill: &str) -> rusqlite::Result<i64> {
    Ok(
        c.prepare_cached("SELECT bytes FROM kv_usage WHERE workspace = ?1 AND skill = ?2")?
            .query_row(params![workspace, skill], |r| r.get(0))
            .optional()?
            .unwrap_or(0),
    )
}

fn set_kv_used(c: &Connection, workspace: &str, skill: &str, bytes: i64) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO kv_usage (workspace, skill, bytes) VALUES (?1, ?2, ?3)
         ON CONFLICT (workspace, skill) DO UPDATE SET bytes = excluded.bytes",
    )?
    .execute(params![workspace, skill, bytes])?;
    Ok(())
}

/// The gate reads the operator's grants from the store.
impl crate::kernel::gate::GrantSource for Store {
    fn grants_for(
        &self,
        workspace: &Path,
        skill: &str,
    ) -> Result<Vec<String>, crate::kernel::gate::StorageError> {
        Ok(self
            .grants(workspace, Some(skill))?
            .into_iter()
            .map(|g| g.capability)
            .collect())
    }
}

/// The gate writes every decision to the store's audit log.
impl crate::kernel::gate::AuditSink for Store {
    fn record(
        &self,
        e: &crate::kernel::gate::AuditEvent<'_>,
    ) -> Result<(), crate::kernel::gate::StorageError> {
        self.audit(&AuditEntry {
            skill: e.skill,
            version: e.version,
            tool: e.tool,
            capability: e.capability.name(),
            target: e.target,
            decision: e.decision.as_str(),
            reason: e.reason,
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The workspace the kv tests write in.
    const W: &str = "/ws";
    use crate::store::RunState;

    #[test]
    fn kv_total_bytes_per_skill_are_bounded_and_deletes_give_room_back() {
        let s = Store::in_memory().unwrap();
        let v = "x".repeat(400);
        s.kv_set(Path::new(W), "a", "k1", &v, 1000).unwrap();
        s.kv_set(Path::new(W), "a", "k2", &v, 1000).unwrap();
        assert_eq!(s.kv_usage(Path::new(W), "a").unwrap(), 2 * (2 + 400));
        let e = s
            .kv_set(Path::new(W), "a", "k3", &v, 1000)
            .unwrap_err()
            .to_string();
        assert!(e.contains("kv_mb") && e.contains("`a`"), "{e}");
        assert_eq!(
            s.kv_get(Path::new(W), "a", "k3").unwrap(),
            None,
            "a refused write landed"
        );
        // Another skill has its own budget; overwriting in place and
        // shrinking are fine.
        s.kv_set(Path::new(W), "b", "k3", &v, 1000).unwrap();
        s.kv_set(Path::new(W), "a", "k1", &"y".repeat(400), 1000)
            .unwrap();
        s.kv_set(Path::new(W), "a", "k1", "1", 10).unwrap();
        assert!(s.kv_delete(Path::new(W), "a", "k2").unwrap());
        assert_eq!(s.kv_usage(Path::new(W), "a").unwrap(), 3);
        s.kv_set(Path::new(W), "a", "k3", &v, 1000).unwrap();
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
                            match s.kv_set(Path::new(W), "race", &key, &"v".repeat(994), max) {
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
        let used = s.kv_usage(Path::new(W), "race").unwrap();
        assert_eq!(
            accepted, 50,
            "{accepted} writes of 1000 bytes fit a 50000-byte bound"
        );
        assert_eq!(used, 50_000);
        assert_eq!(s.kv_list(Path::new(W), "race", "").unwrap().len(), 50);
    }

    #[test]
    fn kv_namespaces_are_separate_and_prefixes_are_literal() {
        let s = Store::in_memory().unwrap();
        let w = Path::new("/ws/a");
        s.kv_set(w, "a", "x%1", "1", u64::MAX).unwrap();
        s.kv_set(w, "a", "xy", "2", u64::MAX).unwrap();
        s.kv_set(w, "b", "x%1", "3", u64::MAX).unwrap();
        assert_eq!(s.kv_get(w, "a", "x%1").unwrap().as_deref(), Some("1"));
        assert_eq!(s.kv_get(w, "b", "x%1").unwrap().as_deref(), Some("3"));
        assert_eq!(s.kv_list(w, "a", "x%").unwrap(), vec!["x%1".to_string()]);
        assert!(s.kv_delete(w, "a", "xy").unwrap());
        assert!(!s.kv_delete(w, "a", "xy").unwrap());
        assert_eq!(s.kv_get(w, "a", "xy").unwrap(), None);
        assert!(
            s.kv_set(w, "a", &"k".repeat(KV_MAX_KEY + 1), "1", u64::MAX)
                .is_err()
        );
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

    #[test]
    fn approvals_keep_their_rows_when_run_ids_become_optional() {
        let d = tempfile::tempdir().unwrap();
        {
            // A database at schema 9, with a run and its pending approval.
            let c = Connection::open(d.path().join("keel.db")).unwrap();
            for sql in &MIGRATIONS[..9] {
                c.execute_batch(sql).unwrap();
            }
            c.pragma_update(None, "user_version", 9).unwrap();
            c.execute_batch(
                "INSERT INTO sessions VALUES ('s1', 't', 1);
                 INSERT INTO runs (id, session_id, state, created_ms, updated_ms) VALUES ('r1', 's1', 'waiting_permission', 1, 1);
                 INSERT INTO approvals (id, run_id, skill, tool, capability, target, rule, arguments, state, created_ms, workspace)
                     VALUES ('a1', 'r1', 'notes', 'notes.add', 'kv', '', 'kv', '{}', 'pending', 5, '/ws');",
            )
            .unwrap();
        }
        let s = Store::open(d.path()).unwrap();
        let a = s.approval("a1").unwrap().unwrap();
        assert_eq!((a.run_id.as_str(), a.workspace.as_str()), ("r1", "/ws"));
        assert_eq!(a.state, ApprovalState::Pending);
        // A request with no run is stored (and read back with an empty id).
        let direct = s
            .create_approval(&NewApproval {
                run_id: "",
                skill: "notes",
                tool: "notes.add",
                capability: "kv",
                target: "",
                rule: "kv",
                workspace: Path::new("/ws"),
                arguments: "{}",
            })
            .unwrap();
        assert_eq!(direct.run_id, "");
        assert_eq!(s.approvals(true).unwrap().len(), 2);
    }

    #[test]
    fn processes_opening_a_fresh_directory_at_once_and_writing_all_succeed() {
        // Each thread has its own connection, as each process would.
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("data");
        let start = Arc::new(std::sync::Barrier::new(12));
        let workers: Vec<_> = (0..12)
            .map(|_| {
                let (dir, start) = (dir.clone(), start.clone());
                std::thread::spawn(move || -> Result<(), StoreError> {
                    start.wait();
                    let s = Store::open(&dir)?;
                    let session = s.create_session("t")?;
                    for i in 0..30 {
                        let run = s
                            .accept_message(&session.id, Some("me"), Some("hi"))?
                            .expect("session exists");
                        let moved = s.transition_run(&run.id, RunState::Running, None)?;
                        assert_eq!(moved, Ok(()));
                        s.add_messages(&[NewMessage {
                            session_id: &session.id,
                            run_id: Some(&run.id),
                            kind: MessageKind::Assistant,
                            content: "ok",
                            ..Default::default()
                        }])?;
                        s.kv_set(Path::new(W), "k", &format!("{i}"), "1", u64::MAX)?;
                        let done = s.transition_run(&run.id, RunState::Done, None)?;
                        assert_eq!(done, Ok(()));
                        s.recover_interrupted_runs(&|o| o == "me")?;
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap().unwrap();
        }
        let s = Store::open(&dir).unwrap();
        assert_eq!(s.sessions().unwrap().len(), 12);
        let version: i64 = s
            .with(|c| c.pragma_query_value(None, "user_version", |r| r.get(0)))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
    }

    #[test]
    fn async_callers_keep_running_while_another_process_holds_the_write_lock() {
        let d = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(d.path()).unwrap());
        // Another "process": its own connection, holding the write lock.
        let other = Connection::open(d.path().join("keel.db")).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        // One worker thread: a call that blocked it would stall the rest.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let s = store.clone();
            let write = tokio::spawn(async move { s.call(|s| s.create_session("x")).await });
            let unrelated = tokio::spawn(async { 42 });
            assert_eq!(unrelated.await.unwrap(), 42);
            tokio::task::yield_now().await;
            assert!(!write.is_finished(), "the write got past a held lock");
            tokio::task::spawn_blocking(move || other.execute_batch("COMMIT"))
                .await
                .unwrap()
                .unwrap();
            let session = write.await.unwrap().unwrap();
            assert_eq!(store.session(&session.id).unwrap(), Some(session));
        });
    }

    #[test]
    fn a_lock_held_too_long_is_a_busy_error_naming_the_data_dir() {
        let d = tempfile::tempdir().unwrap();
        let mut store = Store::open(d.path()).unwrap();
        store.set_busy_timeout(Duration::from_millis(100));
        let other = Connection::open(d.path().join("keel.db")).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let e = store.create_session("x").unwrap_err();
        assert!(matches!(e, StoreError::Busy { .. }), "{e:?}");
        let text = e.to_string();
        assert!(
            text.contains(&d.path().display().to_string()) && text.contains("write lock"),
            "{text}"
        );
        other.execute_batch("ROLLBACK").unwrap();
        assert!(store.create_session("x").is_ok());
    }

    #[test]
    fn an_accepted_skill_is_sighted_while_another_process_holds_the_write_lock() {
        let d = tempfile::tempdir().unwrap();
        let mut store = Store::open(d.path()).unwrap();
        store.set_busy_timeout(Duration::from_millis(100));
        let ws = Path::new(W);
        let caps = ["kv".to_string()];
        let more = ["kv".to_string(), "exec:git".to_string()];
        store
            .sight_skill(ws, "notes", &[copy("/ws/notes", &caps)])
            .unwrap();
        let other = Connection::open(d.path().join("keel.db")).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        // Read without the lock: the owner (with what is new since the
        // baseline) and a claimant, as before.
        assert_eq!(
            store
                .sight_skill(
                    ws,
                    "notes",
                    &[copy("/ws/notes", &more), copy("/ws/other/notes", &caps)]
                )
                .unwrap(),
            vec![
                Standing::Owner {
                    pending: vec!["exec:git".into()]
                },
                Standing::Claimant {
                    owners: vec!["/ws/notes".into()]
                }
            ]
        );
        // A name never seen must be recorded, so it waits for the lock.
        let e = store
            .sight_skill(ws, "fresh", &[copy("/ws/fresh", &caps)])
            .unwrap_err();
        assert!(matches!(e, StoreError::Busy { .. }), "{e:?}");
        other.execute_batch("ROLLBACK").unwrap();
        assert_eq!(
            store
                .sight_skill(ws, "fresh", &[copy("/ws/fresh", &caps)])
                .unwrap(),
            vec![Standing::Owner { pending: vec![] }]
        );
    }

    #[test]
    fn a_big_database_is_checked_hourly_not_at_every_open() {
        let d = tempfile::tempdir().unwrap();
        let marker = d.path().join("keel.db.checked");
        {
            let s = Store::open(d.path()).unwrap();
            // Small: checked at every open, so no time is kept.
            assert!(!marker.exists());
            for i in 0..8000 {
                s.kv_set(
                    Path::new(W),
                    "k",
                    &format!("key {i}"),
                    &"x".repeat(300),
                    u64::MAX,
                )
                .unwrap();
            }
            s.with(|c| c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)"))
                .unwrap();
        }
        let path = d.path().join("keel.db");
        assert!(std::fs::metadata(&path).unwrap().len() > CHECK_ALWAYS_BYTES);
        drop(Store::open(d.path()).unwrap());
        assert!(marker.exists(), "a clean check of a big database is noted");
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = (bytes.len() / 4096 / 2) * 4096;
        bytes[mid..mid + 4096].fill(0x5a);
        std::fs::write(&path, &bytes).unwrap();
        // Checked a moment ago: this open does not read every page.
        drop(Store::open(d.path()).unwrap());
        // An hour later it does, and finds the damage.
        let two_hours_ago = SystemTime::now() - Duration::from_secs(7200);
        std::fs::File::options()
            .write(true)
            .open(&marker)
            .unwrap()
            .set_modified(two_hours_ago)
            .unwrap();
        let e = Store::open(d.path())
            .err()
            .expect("the damage went unnoticed");
        assert!(matches!(e, StoreError::Corrupt { .. }), "{e:?}");
    }

    #[test]
    fn a_damaged_page_is_found_at_open_with_what_to_do() {
        let d = tempfile::tempdir().unwrap();
        {
            let s = Store::open(d.path()).unwrap();
            for i in 0..2000 {
                s.kv_set(
                    Path::new(W),
                    "k",
                    &format!("key {i}"),
                    &"x".repeat(200),
                    u64::MAX,
                )
                .unwrap();
            }
            s.with(|c| c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)"))
                .unwrap();
        }
        // Scribble over a page in the middle of the file (not the header,
        // which SQLite would reject as "not a database" anyway).
        let path = d.path().join("keel.db");
        let mut bytes = std::fs::read(&path).unwrap();
        let page = 4096;
        let mid = (bytes.len() / page / 2) * page;
        for b in &mut bytes[mid..mid + page] {
            *b = 0x5a;
        }
        std::fs::write(&path, &bytes).unwrap();
        let e = Store::open(d.path())
            .err()
            .expect("a damaged database opened");
        assert!(matches!(e, StoreError::Corrupt { .. }), "{e:?}");
        let text = e.to_string();
        assert!(
            text.contains("damaged") && text.contains(".recover"),
            "{text}"
        );
    }
}
