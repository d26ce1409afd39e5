//! Sessions and runs.
//!
//! Every run transition is checked against [`RunState::can_move_to`] and
//! written with its timestamp and reason in one transaction, so the history
//! in `run_transitions` is exactly how the run got where it is. After a crash
//! (`kill -9`), [`Store::recover_interrupted_runs`] marks what was in flight
//! as failed, so no run stays "running" forever and the session can go on;
//! a run records the process that owns it so that recovery in one keel
//! process never fails a run another live process is working on.

use rusqlite::{Connection, OptionalExtension, params};

use super::types::{ApprovalState, MessageKind, RunState};
use super::{Store, StoreError, now_ms};

/// A stored session.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SessionRecord {
    pub id: String,
    pub title: String,
    pub created_ms: i64,
}

/// A session as listings show it: with its runs' count, the state of its
/// latest run and when it was last active.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SessionSummary {
    pub id: String,
    pub title: String,
    pub created_ms: i64,
    /// The latest change to any of its runs (its creation, if none).
    pub last_active_ms: i64,
    pub runs: i64,
    /// The latest run's state (`None` for a session with no runs).
    pub last_state: Option<String>,
}

/// A stored run.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RunRecord {
    pub id: String,
    pub session_id: String,
    pub state: RunState,
    pub created_ms: i64,
    pub updated_ms: i64,
    /// Why it failed or was cancelled.
    pub reason: Option<String>,
    /// The chain model that answered last.
    pub model: Option<String>,
    /// Tokens of the model calls whose server reported them.
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Model calls whose server reported no usage: their tokens are
    /// unknown, not 0.
    pub unreported_calls: u64,
    /// Tools offered to the run's latest model call.
    pub offered_tools: u64,
    /// Bytes of that call's system prompt and tool definitions (JSON).
    pub offered_bytes: u64,
}

const RUN_COLUMNS: &str = "id, session_id, state, created_ms, updated_ms, reason, model, input_tokens, output_tokens, unreported_calls, offered_tools, offered_bytes";

fn run_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRecord> {
    Ok(RunRecord {
        id: r.get(0)?,
        session_id: r.get(1)?,
        state: r.get(2)?,
        created_ms: r.get(3)?,
        updated_ms: r.get(4)?,
        reason: r.get(5)?,
        model: r.get(6)?,
        input_tokens: r.get::<_, i64>(7)? as u64,
        output_tokens: r.get::<_, i64>(8)? as u64,
        unreported_calls: r.get::<_, i64>(9)? as u64,
        offered_tools: r.get::<_, i64>(10)? as u64,
        offered_bytes: r.get::<_, i64>(11)? as u64,
    })
}

/// Why a run could not move.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    #[error("no run `{0}`")]
    NoRun(String),
    #[error("no session `{0}` (see `keel sessions`)")]
    NoSession(String),
    #[error("run `{run}` cannot move from {from} to {to}")]
    IllegalTransition {
        run: String,
        from: RunState,
        to: RunState,
    },
}

/// The reason written on runs a crash interrupted.
pub const INTERRUPTED: &str = "interrupted: keel stopped while the run was in flight";

impl Store {
    /// Creates a session with a fresh random id.
    pub fn create_session(&self, title: &str) -> Result<SessionRecord, StoreError> {
        let created_ms = now_ms();
        // In a transaction committed explicitly: an autocommit `RETURNING`
        // read with `query_row` hands back the id even when the commit then
        // fails (a full disk), and the caller would go on with a session
        // that does not exist.
        let id: String = self.with(|c| {
            let tx = c.transaction()?;
            let id = tx.query_row(
                "INSERT INTO sessions (id, title, created_ms)
                 VALUES ('s_' || lower(hex(randomblob(8))), ?1, ?2) RETURNING id",
                params![title, created_ms],
                |r| r.get(0),
            )?;
            tx.commit()?;
            Ok(id)
        })?;
        Ok(SessionRecord {
            id,
            title: title.to_string(),
            created_ms,
        })
    }

    /// The newest session with exactly this title, if any.
    pub fn latest_session_titled(&self, title: &str) -> Result<Option<String>, StoreError> {
        self.with(|c| {
            c.query_row(
                "SELECT id FROM sessions WHERE title = ?1 ORDER BY created_ms DESC, id DESC LIMIT 1",
                params![title],
                |r| r.get(0),
            )
            .optional()
        })
    }

    pub fn sessions(&self) -> Result<Vec<SessionRecord>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT id, title, created_ms FROM sessions ORDER BY created_ms, id",
            )?;
            let rows = st.query_map([], |r| {
                Ok(SessionRecord {
                    id: r.get(0)?,
                    title: r.get(1)?,
                    created_ms: r.get(2)?,
                })
            })?;
            rows.collect()
        })
    }

    /// Every session, most recently active first.
    pub fn session_summaries(&self) -> Result<Vec<SessionSummary>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT s.id, s.title, s.created_ms,
                        COALESCE((SELECT MAX(updated_ms) FROM runs WHERE session_id = s.id), s.created_ms),
                        (SELECT COUNT(*) FROM runs WHERE session_id = s.id),
                        (SELECT state FROM runs WHERE session_id = s.id
                         ORDER BY created_ms DESC, rowid DESC LIMIT 1)
                 FROM sessions s
                 ORDER BY 4 DESC, s.created_ms DESC, s.id",
            )?;
            let rows = st.query_map([], |r| {
                Ok(SessionSummary {
                    id: r.get(0)?,
                    title: r.get(1)?,
                    created_ms: r.get(2)?,
                    last_active_ms: r.get(3)?,
                    runs: r.get(4)?,
                    last_state: r.get(5)?,
                })
            })?;
            rows.collect()
        })
    }

    pub fn session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        self.with(|c| {
            c.query_row(
                "SELECT id, title, created_ms FROM sessions WHERE id = ?1",
                params![id],
                |r| {
                    Ok(SessionRecord {
                        id: r.get(0)?,
                        title: r.get(1)?,
                        created_ms: r.get(2)?,
                    })
                },
            )
            .optional()
        })
    }

    /// Queues a run in a session. `Ok(Err(..))` when the session does not
    /// exist.
    pub fn create_run(&self, session_id: &str) -> Result<Result<RunRecord, RunError>, StoreError> {
        self.accept_message(session_id, None, None)
    }

    /// Accepts a user message: queues a run owned by `owner` and stores the
    /// message with it, in one transaction — once this returns, neither is
    /// lost to a crash. `Ok(Err(..))` when the session does not exist.
    pub fn accept_message(
        &self,
        session_id: &str,
        owner: Option<&str>,
        text: Option<&str>,
    ) -> Result<Result<RunRecord, RunError>, StoreError> {
        let now = now_ms();
        self.with(|c| {
            let tx = c.transaction()?;
            let exists: Option<i64> = tx
                .query_row(
                    "SELECT 1 FROM sessions WHERE id = ?1",
                    params![session_id],
                    |r| r.get(0),
                )
                .optional()?;
            if exists.is_none() {
                return Ok(Err(RunError::NoSession(session_id.to_string())));
            }
            let id: String = tx.query_row(
                "INSERT INTO runs (id, session_id, state, created_ms, updated_ms, owner)
                 VALUES ('r_' || lower(hex(randomblob(8))), ?1, ?4, ?2, ?2, ?3) RETURNING id",
                params![session_id, now, owner, RunState::Queued],
                |r| r.get(0),
            )?;
            tx.execute(
                "INSERT INTO run_transitions (run_id, from_state, to_state, at_ms, reason)
                 VALUES (?1, NULL, ?3, ?2, NULL)",
                params![id, now, RunState::Queued],
            )?;
            if let Some(text) = text {
                tx.execute(
                    "INSERT INTO messages (session_id, run_id, kind, content, created_ms)
                     VALUES (?1, ?2, ?5, ?3, ?4)",
                    params![session_id, id, text, now, MessageKind::User],
                )?;
            }
            tx.commit()?;
            Ok(Ok(RunRecord {
                id,
                session_id: session_id.to_string(),
                state: RunState::Queued,
                created_ms: now,
                updated_ms: now,
                reason: None,
                model: None,
                input_tokens: 0,
                output_tokens: 0,
                unreported_calls: 0,
                offered_tools: 0,
                offered_bytes: 0,
            }))
        })
    }

    pub fn run(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
        self.with(|c| {
            c.query_row(
                &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"),
                params![run_id],
                run_row,
            )
            .optional()
        })
    }

    /// Moves a run, if the state machine allows it, recording when and why.
    pub fn transition_run(
        &self,
        run_id: &str,
        to: RunState,
        reason: Option<&str>,
    ) -> Result<Result<(), RunError>, StoreError> {
        let now = now_ms();
        self.with(|c| {
            let tx = c.transaction()?;
            let from: Option<RunState> = tx
                .query_row("SELECT state FROM runs WHERE id = ?1", params![run_id], |r| r.get(0))
                .optional()?;
            let Some(from) = from else {
                return Ok(Err(RunError::NoRun(run_id.to_string())));
            };
            if !from.can_move_to(to) {
                return Ok(Err(RunError::IllegalTransition {
                    run: run_id.to_string(),
                    from,
                    to,
                }));
            }
            tx.execute(
                "UPDATE runs SET state = ?2, updated_ms = ?3, reason = COALESCE(?4, reason) WHERE id = ?1",
                params![run_id, to, now, reason],
            )?;
            tx.execute(
                "INSERT INTO run_transitions (run_id, from_state, to_state, at_ms, reason)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![run_id, from, to, now, reason],
            )?;
            tx.commit()?;
            Ok(Ok(()))
        })
    }

    pub fn runs(&self, session_id: &str) -> Result<Vec<RunRecord>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE session_id = ?1 ORDER BY created_ms, rowid"
            ))?;
            let rows = st.query_map(params![session_id], run_row)?;
            rows.collect()
        })
    }

    /// Unfinished runs of a session accepted before `run_id`, with the
    /// processes that own them: the runs it must wait for.
    pub fn runs_ahead(
        &self,
        session_id: &str,
        run_id: &str,
    ) -> Result<Vec<(String, Option<String>)>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT id, owner FROM runs
                 WHERE session_id = ?1
                   AND state IN ({})
                   AND rowid < (SELECT rowid FROM runs WHERE id = ?2)
                 ORDER BY rowid",
                RunState::UNFINISHED_SQL
            ))?;
            let rows = st.query_map(params![session_id, run_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
    }

    /// The states a run went through, in order, with their reasons.
    pub fn run_history(&self, run_id: &str) -> Result<Vec<(RunState, Option<String>)>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT to_state, reason FROM run_transitions WHERE run_id = ?1 ORDER BY rowid",
            )?;
            let rows = st.query_map(params![run_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
    }

    /// Marks every unfinished run failed with [`INTERRUPTED`] unless its
    /// owner (the keel process running it) is still alive, and expires the
    /// approvals those runs were waiting on; returns how many runs.
    ///
    /// Cheap when there is nothing to do, so listings can call it every
    /// time: the unfinished runs are read without a write lock, and only
    /// when one of them has a dead owner does it take the write lock and
    /// look again (a run may have finished in between; it is left alone).
    pub fn recover_interrupted_runs(
        &self,
        alive: &dyn Fn(&str) -> bool,
    ) -> Result<usize, StoreError> {
        let unfinished = |c: &Connection| -> rusqlite::Result<Vec<(String, RunState)>> {
            let mut st = c.prepare_cached(&format!(
                "SELECT id, state, owner FROM runs WHERE state IN ({})",
                RunState::UNFINISHED_SQL
            ))?;
            let rows = st.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, RunState>(1)?,
                    r.get::<_, Option<String>>(2)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (id, state, owner) = row?;
                if !owner.as_deref().is_some_and(alive) {
                    out.push((id, state));
                }
            }
            Ok(out)
        };
        if self.with(|c| unfinished(c))?.is_empty() {
            return Ok(0);
        }
        let now = now_ms();
        self.with(|c| {
            let tx = c.transaction()?;
            let stale = unfinished(&tx)?;
            for (id, state) in &stale {
                tx.execute(
                    "INSERT INTO run_transitions (run_id, from_state, to_state, at_ms, reason)
                     VALUES (?1, ?2, ?5, ?3, ?4)",
                    params![id, state, now, INTERRUPTED, RunState::Failed],
                )?;
                tx.execute(
                    "UPDATE runs SET state = ?4, updated_ms = ?2, reason = ?3 WHERE id = ?1",
                    params![id, now, INTERRUPTED, RunState::Failed],
                )?;
                tx.execute(
                    "UPDATE approvals SET state = ?3, answered_ms = ?2
                     WHERE run_id = ?1 AND state = ?4",
                    params![id, now, ApprovalState::Expired, ApprovalState::Pending],
                )?;
            }
            tx.commit()?;
            Ok(stale.len())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_follow_the_state_machine_and_keep_their_history() {
        let s = Store::in_memory().unwrap();
        let session = s.create_session("first").unwrap();
        let run = s.create_run(&session.id).unwrap().unwrap();
        assert!(run.id.starts_with("r_") && session.id.starts_with("s_"));
        assert_eq!(
            s.transition_run(&run.id, RunState::Running, None).unwrap(),
            Ok(())
        );
        assert_eq!(
            s.transition_run(&run.id, RunState::Queued, None).unwrap(),
            Err(RunError::IllegalTransition {
                run: run.id.clone(),
                from: RunState::Running,
                to: RunState::Queued
            })
        );
        s.transition_run(&run.id, RunState::WaitingPermission, Some("exec:git"))
            .unwrap()
            .unwrap();
        s.transition_run(&run.id, RunState::Running, None)
            .unwrap()
            .unwrap();
        s.transition_run(&run.id, RunState::Done, None)
            .unwrap()
            .unwrap();
        assert!(
            s.transition_run(&run.id, RunState::Failed, None)
                .unwrap()
                .is_err()
        );
        let states: Vec<RunState> = s
            .run_history(&run.id)
            .unwrap()
            .into_iter()
            .map(|h| h.0)
            .collect();
        assert_eq!(
            states,
            ["queued", "running", "waiting_permission", "running", "done"]
        );
        assert_eq!(
            s.create_run("s_nope").unwrap(),
            Err(RunError::NoSession("s_nope".into()))
        );
        assert_eq!(
            s.transition_run("r_nope", RunState::Running, None).unwrap(),
            Err(RunError::NoRun("r_nope".into()))
        );
    }

    #[test]
    fn a_crash_leaves_no_run_in_flight_after_restart() {
        let d = tempfile::tempdir().unwrap();
        let (session, in_flight, finished) = {
            let s = Store::open(d.path()).unwrap();
            let session = s.create_session("t").unwrap();
            let a = s.create_run(&session.id).unwrap().unwrap();
            s.transition_run(&a.id, RunState::Running, None)
                .unwrap()
                .unwrap();
            let b = s.create_run(&session.id).unwrap().unwrap();
            s.transition_run(&b.id, RunState::Running, None)
                .unwrap()
                .unwrap();
            s.transition_run(&b.id, RunState::Done, None)
                .unwrap()
                .unwrap();
            (session, a, b)
            // Dropped without any shutdown: the process "died" here.
        };
        let s = Store::open(d.path()).unwrap();
        assert_eq!(s.recover_interrupted_runs(&|_| false).unwrap(), 1);
        let runs = s.runs(&session.id).unwrap();
        let a = runs.iter().find(|r| r.id == in_flight.id).unwrap();
        assert_eq!(
            (a.state, a.reason.as_deref()),
            (RunState::Failed, Some(INTERRUPTED))
        );
        let b = runs.iter().find(|r| r.id == finished.id).unwrap();
        assert_eq!(b.state, "done");
        // The session goes on.
        assert!(s.create_run(&session.id).unwrap().is_ok());
        let live = s
            .accept_message(&session.id, Some("me"), Some("hello"))
            .unwrap()
            .unwrap();
        assert_eq!(
            s.recover_interrupted_runs(&|owner| owner == "me").unwrap(),
            1,
            "the new queued run without an owner, not the one a live process owns"
        );
        assert_eq!(s.run(&live.id).unwrap().unwrap().state, "queued");
    }
}
