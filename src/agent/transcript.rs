//! The transcript → the context a model sees: pure functions over stored
//! records, no store, no runtime, so every rule here is unit-tested.
//!
//! The rules, in the order [`context_from_records`] applies them:
//! - a run sees its session's transcript up to its own last message
//!   ([`seen_by`]); later runs' messages are not its conversation yet;
//! - the latest summary stands for everything up to its `covers_to`
//!   message in conversation order (not id order), and earlier summaries
//!   are dropped with what they cover ([`context_units`]);
//! - text cut mid-stream (an assistant row with the error flag) is context
//!   only when the user spoke right after it; otherwise a retry's answer
//!   supersedes it;
//! - every tool call gets a result: one the run never saw finish gets an
//!   error result, so the context pairs every call with a result whatever
//!   failed before; calls cut by the output limit are stored flagged
//!   `"cut"` ([`calls_to_json`]) and never sent back;
//! - names stay real tool names here; [`to_wire`] maps them to one
//!   request's wire names.
//!
//! [`covered_id`] maps a split point in the context back to the stored id a
//! summary covers; [`cap`] and [`summary`] shape tool results.

use std::collections::HashSet;

use serde_json::Value;

use super::context;
use super::prompt::ToolMap;
use crate::llm::{Message, ToolCall};
use crate::store::{MessageKind, MessageRecord};

/// Longest tool result given back to the model, in bytes.
pub(super) const MAX_RESULT_BYTES: usize = 64 * 1024;

/// The stored message id of context message `split - 1` (the last one a
/// summary would cover), or `None` if the split is inside a synthetic
/// message.
pub(super) fn covered_id(records: &[MessageRecord], split: usize) -> Option<i64> {
    let mut index = 0usize;
    let mut last = None;
    for (rec, count) in context_units(records) {
        if index + count > split {
            break;
        }
        index += count;
        last = Some(rec.id);
    }
    (index == split).then_some(last).flatten()
}

/// What a run sees of its session's transcript (in conversation order):
/// everything up to its own last message. Messages of runs accepted after
/// it — sent while it works, queued behind it in the session's lane — are
/// not part of its conversation yet.
pub(super) fn seen_by<'a>(records: &'a [MessageRecord], run_id: &str) -> &'a [MessageRecord] {
    match records
        .iter()
        .rposition(|r| r.run_id.as_deref() == Some(run_id))
    {
        Some(last) => &records[..=last],
        None => records,
    }
}

/// The records after the latest summary (and the summary itself), each
/// with how many context messages it becomes (0 for one left out).
pub(super) fn context_units(records: &[MessageRecord]) -> Vec<(&MessageRecord, usize)> {
    let start = records.iter().rposition(|r| r.kind == MessageKind::Summary);
    let summary = start.map(|i| &records[i]);
    let covers_to = summary.and_then(|s| s.covers_to).unwrap_or(0);
    // A summary stands for everything up to its `covers_to` message in
    // conversation order, which is not id order once a message was queued
    // behind a running run (see `Store::messages`).
    let covered_end = records.iter().position(|r| r.id == covers_to);
    let answered = answered_calls(records);
    let mut kept: Vec<&MessageRecord> = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let covered = match covered_end {
            Some(end) => i <= end,
            None => r.id <= covers_to,
        };
        if covered || r.kind == MessageKind::Summary {
            continue;
        }
        kept.push(r);
    }
    let mut out = Vec::new();
    if let Some(s) = summary {
        out.push((s, 1));
    }
    for (i, r) in kept.iter().enumerate() {
        let n = match r.kind {
            // Text cut mid-stream is context only for a user who answered
            // it; a retry's answer (or nothing) supersedes it otherwise.
            MessageKind::Assistant if is_cut(r) => usize::from(
                kept.get(i + 1)
                    .is_some_and(|next| next.kind == MessageKind::User),
            ),
            MessageKind::Assistant => 1 + missing_results(r, &answered),
            MessageKind::User | MessageKind::Tool | MessageKind::Summary => 1,
        };
        out.push((*r, n));
    }
    out
}

/// An assistant record holding text that was cut mid-stream (stored with
/// the error flag by `keep_shown`).
pub(super) fn is_cut(r: &MessageRecord) -> bool {
    r.kind == MessageKind::Assistant && r.is_error
}

/// Tool calls of an assistant record with no stored result.
pub(super) fn missing_results(assistant: &MessageRecord, answered: &HashSet<&str>) -> usize {
    parse_calls(assistant.tool_calls.as_deref())
        .iter()
        .filter(|c| !answered.contains(c.id.as_str()))
        .count()
}

/// The ids of the tool calls that have a stored result.
pub(super) fn answered_calls(records: &[MessageRecord]) -> HashSet<&str> {
    records
        .iter()
        .filter(|r| r.kind == MessageKind::Tool)
        .filter_map(|r| r.call_id.as_deref())
        .collect()
}

/// Stored messages → what the model sees (see `Agent::context`), with
/// real tool names; `to_wire` and [`context::well_formed`] make it a
/// request.
pub fn context_from_records(records: &[MessageRecord]) -> Vec<Message> {
    let answered = answered_calls(records);
    let mut out = Vec::new();
    for (r, n) in context_units(records) {
        if n == 0 {
            continue;
        }
        match r.kind {
            MessageKind::Summary => out.push(context::summary_message(&r.content)),
            // Too large for the model's context: a stand-in keeps the turn.
            MessageKind::User if r.is_error => {
                out.push(Message::User(context::left_out(r.content.chars().count())))
            }
            MessageKind::User => out.push(Message::User(r.content.clone())),
            MessageKind::Assistant => {
                let calls = parse_calls(r.tool_calls.as_deref());
                let missing: Vec<ToolCall> = calls
                    .iter()
                    .filter(|c| !answered.contains(c.id.as_str()))
                    .cloned()
                    .collect();
                out.push(Message::Assistant {
                    text: r.content.clone(),
                    tool_calls: calls,
                });
                for c in missing {
                    out.push(Message::ToolResult {
                        call_id: c.id,
                        name: c.name,
                        content: "no result: the run ended before this call finished".into(),
                        is_error: true,
                    });
                }
            }
            MessageKind::Tool => out.push(Message::ToolResult {
                call_id: r.call_id.clone().unwrap_or_default(),
                name: r.name.clone().unwrap_or_default(),
                content: r.content.clone(),
                is_error: r.is_error,
            }),
        }
    }
    out
}

/// Tool names of a conversation → this request's wire names.
pub(super) fn to_wire(messages: Vec<Message>, tools: &ToolMap) -> Vec<Message> {
    messages
        .into_iter()
        .map(|m| match m {
            Message::Assistant { text, tool_calls } => Message::Assistant {
                text,
                tool_calls: tool_calls
                    .into_iter()
                    .map(|mut c| {
                        c.name = tools.wire(&c.name);
                        c
                    })
                    .collect(),
            },
            Message::ToolResult {
                call_id,
                name,
                content,
                is_error,
            } => Message::ToolResult {
                call_id,
                name: tools.wire(&name),
                content,
                is_error,
            },
            other => other,
        })
        .collect()
}

/// Whole calls, then cut ones (flagged `"cut": true`; their partial
/// arguments are kept for the record, never sent back).
pub(super) fn calls_to_json(calls: &[ToolCall], cut: &[ToolCall]) -> String {
    let item = |c: &ToolCall, cut: bool| {
        let mut v = serde_json::json!({"id": c.id, "name": c.name, "arguments": c.arguments});
        if cut {
            v["cut"] = Value::Bool(true);
        }
        v
    };
    Value::Array(
        calls
            .iter()
            .map(|c| item(c, false))
            .chain(cut.iter().map(|c| item(c, true)))
            .collect(),
    )
    .to_string()
}

pub(super) fn parse_calls(json: Option<&str>) -> Vec<ToolCall> {
    let Some(Value::Array(items)) = json.and_then(|j| serde_json::from_str(j).ok()) else {
        return Vec::new();
    };
    items
        .iter()
        .map(|c| ToolCall {
            id: c["id"].as_str().unwrap_or_default().to_string(),
            name: c["name"].as_str().unwrap_or_default().to_string(),
            arguments: c["arguments"].as_str().unwrap_or_default().to_string(),
        })
        .collect()
}

/// A model's argument text → a JSON object, or an error the model can act
/// on.
pub(super) fn parse_arguments(text: &str) -> Result<Value, String> {
    if text.trim().is_empty() {
        return Ok(Value::Object(Default::default()));
    }
    match serde_json::from_str::<Value>(text) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(other) => Err(format!(
            "the arguments must be a JSON object matching the tool's schema, got {}; call the tool again with an object",
            crate::host::json_type(&other)
        )),
        Err(e) => Err(format!(
            "the arguments are not valid JSON ({e}); call the tool again with a JSON object matching its schema"
        )),
    }
}

pub(super) fn cap(mut s: String) -> String {
    if s.len() > MAX_RESULT_BYTES {
        let mut end = MAX_RESULT_BYTES;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        let cut = s.len() - end;
        s.truncate(end);
        s.push_str(&format!("\n[… {cut} more bytes cut]"));
    }
    s
}

/// The first line of a result, short.
pub(super) fn summary(s: &str) -> String {
    let line = s.lines().next().unwrap_or("");
    let mut out: String = line.chars().take(80).collect();
    if out.len() < line.len() || s.lines().nth(1).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: i64, kind: MessageKind, content: &str) -> MessageRecord {
        MessageRecord {
            id,
            session_id: "s".into(),
            run_id: None,
            kind,
            content: content.into(),
            tool_calls: None,
            call_id: None,
            name: None,
            is_error: false,
            elapsed_ms: None,
            covers_to: None,
            created_ms: 0,
        }
    }

    fn in_run(mut r: MessageRecord, run: &str) -> MessageRecord {
        r.run_id = Some(run.into());
        r
    }

    /// A message queued behind a running run is not that run's
    /// conversation: the run sees up to its own last message only.
    #[test]
    fn a_run_does_not_see_messages_queued_after_it() {
        let records = vec![
            in_run(rec(1, MessageKind::User, "first"), "r1"),
            in_run(rec(3, MessageKind::Assistant, "answer one"), "r1"),
            in_run(
                rec(2, MessageKind::User, "second, sent while r1 worked"),
                "r2",
            ),
        ];
        let seen = seen_by(&records, "r1");
        assert_eq!(seen.len(), 2);
        assert!(seen.iter().all(|r| r.run_id.as_deref() == Some("r1")));
        // A run with nothing stored yet sees everything.
        assert_eq!(seen_by(&records, "r9").len(), 3);
        // The later run sees it all, in conversation order.
        let ctx = context_from_records(seen_by(&records, "r2"));
        assert_eq!(ctx.len(), 3, "{ctx:?}");
        assert_eq!(ctx[2], Message::User("second, sent while r1 worked".into()));
    }

    /// Text cut mid-stream is superseded by the retry's answer, unless the
    /// user already spoke after it (then it is what they answered).
    #[test]
    fn cut_text_is_context_only_when_the_user_answered_it() {
        let mut cut = rec(2, MessageKind::Assistant, "half an ans");
        cut.is_error = true;
        let retried = vec![
            rec(1, MessageKind::User, "q"),
            cut.clone(),
            rec(3, MessageKind::Assistant, "the whole answer"),
        ];
        let ctx = context_from_records(&retried);
        assert_eq!(ctx.len(), 2, "{ctx:?}");
        assert!(matches!(&ctx[1], Message::Assistant { text, .. } if text == "the whole answer"));
        let answered = vec![
            rec(1, MessageKind::User, "q"),
            cut,
            rec(3, MessageKind::User, "go on"),
        ];
        let ctx = context_from_records(&answered);
        assert_eq!(ctx.len(), 3, "{ctx:?}");
        assert!(matches!(&ctx[1], Message::Assistant { text, .. } if text == "half an ans"));
    }

    /// A split point maps back to the stored message a summary would
    /// cover, and a split inside a synthetic result maps to none.
    #[test]
    fn covered_id_never_splits_a_call_from_its_synthetic_result() {
        let mut asst = rec(2, MessageKind::Assistant, "");
        asst.tool_calls = Some(r#"[{"id":"c9","name":"a__b","arguments":"{}"}]"#.into());
        let records = vec![
            rec(1, MessageKind::User, "hi"),
            asst,
            rec(3, MessageKind::User, "next"),
        ];
        // Context: user, assistant, synthetic result, user.
        assert_eq!(context_from_records(&records).len(), 4);
        assert_eq!(covered_id(&records, 0), None);
        assert_eq!(covered_id(&records, 1), Some(1));
        assert_eq!(covered_id(&records, 2), None, "inside the call's pair");
        assert_eq!(covered_id(&records, 3), Some(2));
        assert_eq!(covered_id(&records, 4), Some(3));
    }

    /// Cut calls are stored flagged, after the whole ones; reading them
    /// back gives every call (the flag is for the record and the console).
    #[test]
    fn calls_round_trip_with_cut_ones_flagged() {
        let call = |id: &str, args: &str| ToolCall {
            id: id.into(),
            name: "notes__add".into(),
            arguments: args.into(),
        };
        let json = calls_to_json(&[call("c1", "{}")], &[call("c2", "{")]);
        let v: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v[0].get("cut"), None);
        assert_eq!(v[1]["cut"], true);
        let back = parse_calls(Some(&json));
        assert_eq!(back, vec![call("c1", "{}"), call("c2", "{")]);
        assert!(parse_calls(Some("not json")).is_empty());
        assert!(parse_calls(None).is_empty());
    }

    #[test]
    fn a_call_without_a_result_gets_one_and_summaries_replace_what_they_cover() {
        let mut asst = rec(2, MessageKind::Assistant, "");
        asst.tool_calls = Some(r#"[{"id":"c1","name":"a__b","arguments":"{}"},{"id":"c2","name":"a__b","arguments":"{}"}]"#.into());
        let mut result = rec(3, MessageKind::Tool, "ok");
        result.call_id = Some("c1".into());
        let records = vec![
            rec(1, MessageKind::User, "hi"),
            asst,
            result,
            rec(4, MessageKind::User, "next"),
        ];
        let ctx = context_from_records(&records);
        assert_eq!(ctx.len(), 5, "{ctx:?}");
        assert!(
            matches!(&ctx[2], Message::ToolResult { call_id, is_error: true, .. } if call_id == "c2")
        );
        assert!(
            matches!(&ctx[3], Message::ToolResult { call_id, is_error: false, .. } if call_id == "c1")
        );
        // A summary covering the first three stored messages (four context
        // messages, counting the synthetic result).
        assert_eq!(covered_id(&records, 4), Some(3));
        assert_eq!(covered_id(&records, 2), None, "inside the synthetic result");
        let mut s = rec(5, MessageKind::Summary, "they said hi");
        s.covers_to = Some(3);
        let mut with_summary = records.clone();
        with_summary.push(s);
        let ctx = context_from_records(&with_summary);
        assert_eq!(ctx.len(), 2);
        assert!(matches!(&ctx[0], Message::User(t) if t.contains("they said hi")));
        assert_eq!(ctx[1], Message::User("next".into()));
    }

    #[test]
    fn malformed_arguments_become_a_correctable_error() {
        assert_eq!(parse_arguments("").unwrap(), serde_json::json!({}));
        assert!(
            parse_arguments("{\"a\":")
                .unwrap_err()
                .contains("not valid JSON")
        );
        assert!(
            parse_arguments("[1]")
                .unwrap_err()
                .contains("must be a JSON object")
        );
        assert_eq!(parse_arguments("{\"a\":1}").unwrap()["a"], 1);
    }

    #[test]
    fn long_results_are_cut_on_a_char_boundary() {
        let s = "é".repeat(MAX_RESULT_BYTES);
        let c = cap(s);
        assert!(c.len() < MAX_RESULT_BYTES + 64);
        assert!(c.ends_with("more bytes cut]"));
        assert_eq!(summary("one\ntwo"), "one…");
        assert_eq!(summary("short"), "short");
    }
}
