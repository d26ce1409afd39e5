//! The transcript (every message of every session) and token usage.
//!
//! Messages are append-only: compaction adds a `summary` row that says which
//! earlier rows it stands for (`covers_to`), so the model sees the summary
//! while the full transcript stays here.

use rusqlite::params;

use super::types::MessageKind;
use super::{Store, StoreError, now_ms};

/// One stored message.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MessageRecord {
    pub id: i64,
    pub session_id: String,
    pub run_id: Option<String>,
    pub kind: MessageKind,
    pub content: String,
    /// For `assistant`: the tool calls, as a JSON array of
    /// `{id, name, arguments}`.
    pub tool_calls: Option<String>,
    /// For `tool`: the call this answers, and the tool's name.
    pub call_id: Option<String>,
    pub name: Option<String>,
    pub is_error: bool,
    /// For `tool`: how long the call took.
    pub elapsed_ms: Option<i64>,
    /// For `summary`: the last message id it stands for.
    pub covers_to: Option<i64>,
    pub created_ms: i64,
}

/// A message to append.
#[derive(Debug, Clone, Default)]
pub struct NewMessage<'a> {
    pub session_id: &'a str,
    pub run_id: Option<&'a str>,
    pub kind: MessageKind,
    pub content: &'a str,
    pub tool_calls: Option<&'a str>,
    pub call_id: Option<&'a str>,
    pub name: Option<&'a str>,
    pub is_error: bool,
    pub elapsed_ms: Option<i64>,
    pub covers_to: Option<i64>,
}

/// Token usage summed over some calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct UsageTotals {
    pub calls: u64,
    /// Tokens of the calls whose server reported them.
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Calls whose server reported no usage (unknown, not 0).
    pub unreported_calls: u64,
}

const MESSAGE_COLUMNS: &str = "id, session_id, run_id, kind, content, tool_calls, call_id, name, is_error, elapsed_ms, covers_to, created_ms";

fn message_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<MessageRecord> {
    Ok(MessageRecord {
        id: r.get(0)?,
        session_id: r.get(1)?,
        run_id: r.get(2)?,
        kind: r.get(3)?,
        content: r.get(4)?,
        tool_calls: r.get(5)?,
        call_id: r.get(6)?,
        name: r.get(7)?,
        is_error: r.get(8)?,
        elapsed_ms: r.get(9)?,
        covers_to: r.get(10)?,
        created_ms: r.get(11)?,
    })
}

impl Store {
    /// Appends messages in one transaction; returns their ids.
    pub fn add_messages(&self, messages: &[NewMessage<'_>]) -> Result<Vec<i64>, StoreError> {
        let now = now_ms();
        self.with(|c| {
            let tx = c.transaction()?;
            let mut ids = Vec::with_capacity(messages.len());
            {
                let mut st = tx.prepare_cached(
                    "INSERT INTO messages (session_id, run_id, kind, content, tool_calls, call_id,
                        name, is_error, elapsed_ms, covers_to, created_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                )?;
                for m in messages {
                    st.execute(params![
                        m.session_id,
                        m.run_id,
                        m.kind,
                        m.content,
                        m.tool_calls,
                        m.call_id,
                        m.name,
                        m.is_error,
                        m.elapsed_ms,
                        m.covers_to,
                        now
                    ])?;
                    ids.push(tx.last_insert_rowid());
                }
            }
            tx.commit()?;
            Ok(ids)
        })
    }

    /// Flags the user message of `run_id` as too large for the model's
    /// context: it stays in the transcript (and in listings) but later
    /// contexts send a short stand-in for it (see
    /// `agent::transcript::context_units`). Returns whether a message was
    /// flagged.
    pub fn leave_out_user_message(&self, run_id: &str) -> Result<bool, StoreError> {
        self.with(|c| {
            let n = c
                .prepare_cached("UPDATE messages SET is_error = 1 WHERE run_id = ?1 AND kind = ?2")?
                .execute(params![run_id, MessageKind::User])?;
            Ok(n > 0)
        })
    }

    /// Every message of a session in conversation order: run by run in
    /// the order the runs were accepted, each run's messages oldest first.
    ///
    /// Not simply by id: a message sent while an earlier run of the session
    /// is still working is stored at once (so it survives a crash) but is
    /// answered after that run, so its turn comes after everything that run
    /// writes later. (Messages without a run come first; none are written.)
    pub fn messages(&self, session_id: &str) -> Result<Vec<MessageRecord>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE session_id = ?1
                 ORDER BY (SELECT rowid FROM runs WHERE runs.id = messages.run_id), id"
            ))?;
            let rows = st.query_map(params![session_id], message_row)?;
            rows.collect()
        })
    }

    /// The messages one run added, oldest first.
    pub fn run_messages(&self, run_id: &str) -> Result<Vec<MessageRecord>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE run_id = ?1 ORDER BY id"
            ))?;
            let rows = st.query_map(params![run_id], message_row)?;
            rows.collect()
        })
    }

    /// Records the tokens one model call used: for a run (added to the
    /// run's totals, and the run remembers the model) and/or for a skill's
    /// `keel.llm.complete`. `tokens` is `(input, output)`, or `None` when
    /// the server reported none: stored as unknown (NULL) and counted as an
    /// unreported call, never as 0 tokens.
    pub fn record_usage(
        &self,
        run_id: Option<&str>,
        skill: Option<&str>,
        model: &str,
        tokens: Option<(u64, u64)>,
    ) -> Result<(), StoreError> {
        let input_tokens = tokens.map(|(i, _)| i as i64);
        let output_tokens = tokens.map(|(_, o)| o as i64);
        let now = now_ms();
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT INTO usage (at_ms, run_id, skill, model, input_tokens, output_tokens)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![now, run_id, skill, model, input_tokens, output_tokens],
            )?;
            if let Some(run) = run_id {
                tx.execute(
                    "UPDATE runs SET input_tokens = input_tokens + COALESCE(?2, 0),
                        output_tokens = output_tokens + COALESCE(?3, 0),
                        unreported_calls = unreported_calls + (?2 IS NULL), model = ?4
                     WHERE id = ?1",
                    params![run, input_tokens, output_tokens, model],
                )?;
            }
            tx.commit()
        })
    }

    /// Records what a run's model call is offered: how many tools, and
    /// the bytes of its system prompt and tool definitions.
    pub fn record_offered(&self, run_id: &str, tools: u64, bytes: u64) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "UPDATE runs SET offered_tools = ?2, offered_bytes = ?3 WHERE id = ?1",
                params![run_id, tools as i64, bytes as i64],
            )
            .map(|_| ())
        })
    }

    /// Usage recorded for a skill's own model calls.
    pub fn skill_usage(&self, skill: &str) -> Result<UsageTotals, StoreError> {
        self.with(|c| {
            c.query_row(
                "SELECT COUNT(*), COALESCE(SUM(input_tokens), 0), COALESCE(SUM(output_tokens), 0),
                    COUNT(*) - COUNT(input_tokens)
                 FROM usage WHERE skill = ?1",
                params![skill],
                |r| {
                    Ok(UsageTotals {
                        calls: r.get::<_, i64>(0)? as u64,
                        input_tokens: r.get::<_, i64>(1)? as u64,
                        output_tokens: r.get::<_, i64>(2)? as u64,
                        unreported_calls: r.get::<_, i64>(3)? as u64,
                    })
                },
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_usage_are_kept_per_session_and_run() {
        let s = Store::in_memory().unwrap();
        let a = s.create_session("a").unwrap();
        let b = s.create_session("b").unwrap();
        let run = s
            .accept_message(&a.id, Some("me"), Some("hi"))
            .unwrap()
            .unwrap();
        s.accept_message(&b.id, None, Some("other"))
            .unwrap()
            .unwrap();
        let ids = s
            .add_messages(&[
                NewMessage {
                    session_id: &a.id,
                    run_id: Some(&run.id),
                    kind: MessageKind::Assistant,
                    content: "",
                    tool_calls: Some(r#"[{"id":"c1","name":"x.y","arguments":"{}"}]"#),
                    ..Default::default()
                },
                NewMessage {
                    session_id: &a.id,
                    run_id: Some(&run.id),
                    kind: MessageKind::Tool,
                    content: "42",
                    call_id: Some("c1"),
                    name: Some("x.y"),
                    elapsed_ms: Some(3),
                    ..Default::default()
                },
            ])
            .unwrap();
        assert!(ids[0] < ids[1]);
        let all = s.messages(&a.id).unwrap();
        let kinds: Vec<MessageKind> = all.iter().map(|m| m.kind).collect();
        assert_eq!(
            kinds,
            [MessageKind::User, MessageKind::Assistant, MessageKind::Tool]
        );
        assert_eq!(all[0].content, "hi");
        assert_eq!(all[2].call_id.as_deref(), Some("c1"));
        assert_eq!(s.run_messages(&run.id).unwrap().len(), 3);

        s.record_usage(Some(&run.id), None, "main", Some((100, 7)))
            .unwrap();
        s.record_usage(Some(&run.id), None, "backup", Some((50, 3)))
            .unwrap();
        s.record_usage(None, Some("notes"), "main", Some((9, 1)))
            .unwrap();
        let r = s.run(&run.id).unwrap().unwrap();
        assert_eq!(
            (r.input_tokens, r.output_tokens, r.model.as_deref()),
            (150, 10, Some("backup"))
        );
        assert_eq!(r.unreported_calls, 0);
        assert_eq!(
            s.skill_usage("notes").unwrap(),
            UsageTotals {
                calls: 1,
                input_tokens: 9,
                output_tokens: 1,
                unreported_calls: 0
            }
        );
    }

    /// A server that reports no usage is recorded as unknown (NULL) and
    /// counted, never as 0 tokens: totals stay what was reported.
    #[test]
    fn usage_nobody_reported_is_unknown_not_zero() {
        let s = Store::in_memory().unwrap();
        let session = s.create_session("t").unwrap();
        let run = s
            .accept_message(&session.id, None, Some("hi"))
            .unwrap()
            .unwrap();
        s.record_usage(Some(&run.id), None, "main", Some((40, 2)))
            .unwrap();
        s.record_usage(Some(&run.id), None, "local", None).unwrap();
        s.record_usage(None, Some("notes"), "local", None).unwrap();
        let r = s.run(&run.id).unwrap().unwrap();
        assert_eq!(
            (
                r.input_tokens,
                r.output_tokens,
                r.unreported_calls,
                r.model.as_deref()
            ),
            (40, 2, 1, Some("local"))
        );
        let nulls: i64 = s
            .with(|c| {
                c.query_row(
                    "SELECT COUNT(*) FROM usage WHERE input_tokens IS NULL AND output_tokens IS NULL",
                    [],
                    |r| r.get(0),
                )
            })
            .unwrap();
        assert_eq!(
            nulls, 2,
            "unreported usage stored as something other than NULL"
        );
        assert_eq!(
            s.skill_usage("notes").unwrap(),
            UsageTotals {
                calls: 1,
                input_tokens: 0,
                output_tokens: 0,
                unreported_calls: 1
            }
        );
    }
}
