//! Approval requests: a run parked on an `ask` decision, waiting for a
//! person. Stored so that any front end (console, HTTP gateway, chat
//! adapter) can list and answer them; answering is idempotent.

use rusqlite::{OptionalExtension, params};

use super::types::{ApprovalAnswer, ApprovalState};
use super::{Store, StoreError, now_ms};

/// A stored approval request.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ApprovalRecord {
    pub id: String,
    pub run_id: String,
    pub skill: String,
    pub tool: String,
    pub capability: String,
    pub target: String,
    /// The rule `always` grants: exactly the target shown, never a wider
    /// declaration. Empty when no rule names the target alone; `always` is
    /// then refused.
    pub rule: String,
    /// The workspace the run works in: where an `always` grant applies.
    pub workspace: String,
    /// The tool call's arguments, as JSON text.
    pub arguments: String,
    pub state: ApprovalState,
    /// Once answered.
    pub answer: Option<ApprovalAnswer>,
    pub created_ms: i64,
    pub answered_ms: Option<i64>,
}

/// A new approval request.
#[derive(Debug, Clone)]
pub struct NewApproval<'a> {
    pub run_id: &'a str,
    pub skill: &'a str,
    pub tool: &'a str,
    pub capability: &'a str,
    pub target: &'a str,
    /// The exact rule `always` would grant, or `""` for none.
    pub rule: &'a str,
    /// The run's workspace, where an `always` grant will apply.
    pub workspace: &'a std::path::Path,
    pub arguments: &'a str,
}

/// Why an answer was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AnswerError {
    #[error("no approval request `{0}`")]
    NoApproval(String),
    #[error("approval request `{id}` was already answered `{answer}`")]
    AlreadyAnswered { id: String, answer: String },
    #[error("approval request `{0}` expired (nobody answered in time, which counts as no)")]
    Expired(String),
    /// `always` for a request whose target no single rule can name.
    #[error(
        "approval request `{0}` cannot be answered `always`: no rule names its target alone (a name or path with `*`, spaces or control characters); answer yes or no"
    )]
    NoExactRule(String),
}

const COLUMNS: &str = "id, run_id, skill, tool, capability, target, rule, arguments, state, answer, created_ms, answered_ms, workspace";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ApprovalRecord> {
    Ok(ApprovalRecord {
        id: r.get(0)?,
        // NULL for a direct tool call's request (no run).
        run_id: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
        skill: r.get(2)?,
        tool: r.get(3)?,
        capability: r.get(4)?,
        target: r.get(5)?,
        rule: r.get(6)?,
        arguments: r.get(7)?,
        state: r.get(8)?,
        answer: r.get(9)?,
        created_ms: r.get(10)?,
        answered_ms: r.get(11)?,
        workspace: r.get(12)?,
    })
}

impl Store {
    pub fn create_approval(&self, a: &NewApproval<'_>) -> Result<ApprovalRecord, StoreError> {
        let now = now_ms();
        self.with(|c| {
            c.query_row(
                &format!(
                    "INSERT INTO approvals (id, run_id, skill, tool, capability, target, rule,
                        arguments, state, created_ms, workspace)
                     VALUES ('a_' || lower(hex(randomblob(6))), ?1, ?2, ?3, ?4, ?5, ?6, ?7,
                        ?10, ?8, ?9)
                     RETURNING {COLUMNS}"
                ),
                params![
                    // An empty run id: a direct call's request, no run.
                    (!a.run_id.is_empty()).then_some(a.run_id),
                    a.skill,
                    a.tool,
                    a.capability,
                    a.target,
                    a.rule,
                    a.arguments,
                    now,
                    a.workspace.to_string_lossy(),
                    ApprovalState::Pending
                ],
                row,
            )
        })
    }

    pub fn approval(&self, id: &str) -> Result<Option<ApprovalRecord>, StoreError> {
        self.with(|c| {
            c.query_row(
                &format!("SELECT {COLUMNS} FROM approvals WHERE id = ?1"),
                params![id],
                row,
            )
            .optional()
        })
    }

    /// Approval requests, oldest first: only pending ones, or all.
    pub fn approvals(&self, pending_only: bool) -> Result<Vec<ApprovalRecord>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM approvals WHERE ?1 = 0 OR state = ?2
                 ORDER BY created_ms, rowid"
            ))?;
            let rows = st.query_map(params![pending_only, ApprovalState::Pending], row)?;
            rows.collect()
        })
    }

    /// How many approval requests are waiting for an answer (the
    /// `keel_approvals_pending` gauge).
    pub fn pending_approval_count(&self) -> Result<u64, StoreError> {
        self.with(|c| {
            c.prepare_cached("SELECT count(*) FROM approvals WHERE state = ?1")?
                .query_row(params![ApprovalState::Pending], |r| r.get::<_, i64>(0))
                .map(|n| n.max(0) as u64)
        })
    }

    /// Answers a pending request; `always` also stores the grant, in the
    /// same transaction. Answering again with the same answer changes
    /// nothing and succeeds (`Ok((record, false))`); a different answer to
    /// an answered request is refused.
    pub fn answer_approval(
        &self,
        id: &str,
        answer: ApprovalAnswer,
    ) -> Result<Result<(ApprovalRecord, bool), AnswerError>, StoreError> {
        let now = now_ms();
        self.with(|c| {
            let tx = c.transaction()?;
            let found = tx
                .query_row(
                    &format!("SELECT {COLUMNS} FROM approvals WHERE id = ?1"),
                    params![id],
                    row,
                )
                .optional()?;
            let Some(mut rec) = found else {
                return Ok(Err(AnswerError::NoApproval(id.to_string())));
            };
            match rec.state {
                ApprovalState::Pending => {}
                ApprovalState::Expired => return Ok(Err(AnswerError::Expired(id.to_string()))),
                ApprovalState::Approved | ApprovalState::Denied => {
                    return Ok(if rec.answer == Some(answer) {
                        Ok((rec, false))
                    } else {
                        Err(AnswerError::AlreadyAnswered {
                            id: id.to_string(),
                            answer: rec.answer.map(|a| a.name()).unwrap_or_default().to_string(),
                        })
                    });
                }
            }
            if answer == ApprovalAnswer::Always && rec.rule.is_empty() {
                return Ok(Err(AnswerError::NoExactRule(id.to_string())));
            }
            let state = answer.state();
            tx.execute(
                "UPDATE approvals SET state = ?2, answer = ?3, answered_ms = ?4 WHERE id = ?1",
                params![id, state, answer, now],
            )?;
            if answer == ApprovalAnswer::Always {
                tx.execute(
                    "INSERT OR IGNORE INTO grants (workspace, skill, capability, created_ms)
                     VALUES (?1, ?2, ?3, ?4)",
                    params![rec.workspace, rec.skill, rec.rule, now],
                )?;
            }
            tx.commit()?;
            rec.state = state;
            rec.answer = Some(answer);
            rec.answered_ms = Some(now);
            Ok(Ok((rec, true)))
        })
    }

    /// Marks a still-pending request expired (nobody answered in time).
    /// Returns whether it was pending.
    pub fn expire_approval(&self, id: &str) -> Result<bool, StoreError> {
        self.with(|c| {
            let n = c.execute(
                "UPDATE approvals SET state = ?3, answered_ms = ?2
                 WHERE id = ?1 AND state = ?4",
                params![id, now_ms(), ApprovalState::Expired, ApprovalState::Pending],
            )?;
            Ok(n > 0)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(s: &Store) -> ApprovalRecord {
        let session = s.create_session("t").unwrap();
        let run = s.create_run(&session.id).unwrap().unwrap();
        s.create_approval(&NewApproval {
            run_id: &run.id,
            skill: "notes",
            tool: "notes.fetch",
            capability: "net.http",
            target: "https://example.com/",
            rule: "net.http:example.com:443",
            workspace: std::path::Path::new("/ws/a"),
            arguments: "{}",
        })
        .unwrap()
    }

    #[test]
    fn answers_are_idempotent_and_always_grants() {
        let s = Store::in_memory().unwrap();
        let a = request(&s);
        assert_eq!(a.state, "pending");
        assert_eq!(s.approvals(true).unwrap().len(), 1);
        let (rec, changed) = s
            .answer_approval(&a.id, ApprovalAnswer::Always)
            .unwrap()
            .unwrap();
        assert!(changed);
        assert_eq!(
            (rec.state, rec.answer),
            (ApprovalState::Approved, Some(ApprovalAnswer::Always))
        );
        // The grant is the exact rule, in the run's workspace only.
        let ws = std::path::Path::new("/ws/a");
        assert_eq!(
            s.grants(ws, Some("notes")).unwrap()[0].capability,
            "net.http:example.com:443"
        );
        assert!(
            s.grants(std::path::Path::new("/ws/b"), None)
                .unwrap()
                .is_empty()
        );
        // The same answer again: fine, nothing changes.
        let (_, changed) = s
            .answer_approval(&a.id, ApprovalAnswer::Always)
            .unwrap()
            .unwrap();
        assert!(!changed);
        // A different answer: refused.
        assert_eq!(
            s.answer_approval(&a.id, ApprovalAnswer::No).unwrap(),
            Err(AnswerError::AlreadyAnswered {
                id: a.id.clone(),
                answer: "always".into()
            })
        );
        assert!(s.approvals(true).unwrap().is_empty());
        assert_eq!(
            s.answer_approval("a_nope", ApprovalAnswer::Yes).unwrap(),
            Err(AnswerError::NoApproval("a_nope".into()))
        );
    }

    #[test]
    fn an_expired_request_cannot_be_answered_later() {
        let s = Store::in_memory().unwrap();
        let a = request(&s);
        assert!(s.expire_approval(&a.id).unwrap());
        assert!(!s.expire_approval(&a.id).unwrap());
        assert_eq!(
            s.answer_approval(&a.id, ApprovalAnswer::Yes).unwrap(),
            Err(AnswerError::Expired(a.id.clone()))
        );
        assert!(s.all_grants().unwrap().is_empty());
    }

    #[test]
    fn always_without_an_exact_rule_is_refused_and_grants_nothing() {
        let s = Store::in_memory().unwrap();
        let session = s.create_session("t").unwrap();
        let run = s.create_run(&session.id).unwrap().unwrap();
        let a = s
            .create_approval(&NewApproval {
                run_id: &run.id,
                skill: "x",
                tool: "x.run",
                capability: "exec",
                target: "*",
                rule: "",
                workspace: std::path::Path::new("/ws/a"),
                arguments: "{}",
            })
            .unwrap();
        assert_eq!(
            s.answer_approval(&a.id, ApprovalAnswer::Always).unwrap(),
            Err(AnswerError::NoExactRule(a.id.clone()))
        );
        assert!(s.all_grants().unwrap().is_empty());
        // Still pending: yes or no are taken.
        assert!(
            s.answer_approval(&a.id, ApprovalAnswer::Yes)
                .unwrap()
                .is_ok()
        );
    }

    #[test]
    fn answers_parse_from_what_people_type() {
        assert_eq!(ApprovalAnswer::parse(" Y "), Some(ApprovalAnswer::Yes));
        assert_eq!(ApprovalAnswer::parse("no"), Some(ApprovalAnswer::No));
        assert_eq!(
            ApprovalAnswer::parse("always"),
            Some(ApprovalAnswer::Always)
        );
        assert_eq!(ApprovalAnswer::parse("maybe"), None);
    }
}
