//! `keel approve ID ANSWER` and `/approve`: answers an approval request
//! (yes, no or always; always also stores the grant). A run waiting in
//! another keel process sees the answer at once.

use serde_json::json;

use super::{CommandError, Ctx, Render, Text};
use crate::store::{ApprovalAnswer, ApprovalRecord};
use crate::text::escape_control as esc;

/// An answer taken (or the same answer given before).
pub struct Approved {
    pub id: String,
    pub answer: ApprovalAnswer,
    pub record: ApprovalRecord,
    /// False: the request already had this answer.
    pub changed: bool,
}

pub fn run(ctx: Ctx<'_>, id: &str, answer: &str) -> Result<Approved, CommandError> {
    let Some(a) = ApprovalAnswer::parse(answer) else {
        return Err(CommandError::NotAnAnswer(esc(answer).into_owned()));
    };
    let (record, changed) = ctx.kernel.store().answer_approval(id, a)??;
    Ok(Approved {
        id: id.to_string(),
        answer: a,
        record,
        changed,
    })
}

impl Render for Approved {
    fn text(&self) -> Text {
        let rec = &self.record;
        Text::plain(format!(
            "{} {}: {} `{}` on `{}` for {}{}\n",
            if self.changed {
                "answered"
            } else {
                "already answered"
            },
            esc(&self.id),
            self.answer.name(),
            esc(&rec.capability),
            esc(&rec.target),
            esc(&rec.skill),
            if self.answer == ApprovalAnswer::Always {
                format!(
                    " (granted {} in workspace {})",
                    esc(&rec.rule),
                    esc(&rec.workspace)
                )
            } else {
                String::new()
            }
        ))
    }

    fn json(&self) -> serde_json::Result<String> {
        serde_json::to_string_pretty(&json!({
            "id": self.id,
            "answer": self.answer.name(),
            "changed": self.changed,
            "request": self.record,
        }))
    }
}
