//! A tool called by a person at the console (`/call`): the person is
//! there, so an `ask` decision is put to them, as in an agent run; and
//! Ctrl-C stops the call and leaves them in the console.
//!
//! The call runs on the runtime; the gate's question reaches the console
//! thread through a channel ([`ConsoleApprover`]), which shows it and reads
//! the answer with the console's own reader (the terminal, or the next line
//! of a pipe). Nothing is stored as an approval request: there is no run to
//! park; the audit log records how the ask ended.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use serde_json::Value;

use crate::host::RunLink;
use crate::kernel::Kernel;
use crate::kernel::gate::{ApprovalRequest, Approver, AskOutcome};
use crate::store::{ApprovalAnswer, ApprovalRecord, ApprovalState};
use crate::tool::ToolError;

/// The `/call` in flight, for the Ctrl-C handler: its cancel flag.
pub type CurrentCall = Arc<Mutex<Option<Arc<AtomicBool>>>>;

type Question = (ApprovalRequest, mpsc::Sender<AskOutcome>);

/// Hands the gate's questions to the console thread and waits for the
/// person's answer (or the call's cancellation).
struct ConsoleApprover {
    questions: Mutex<mpsc::Sender<Question>>,
    cancelled: Arc<AtomicBool>,
}

impl Approver for ConsoleApprover {
    fn approve(&self, request: &ApprovalRequest) -> AskOutcome {
        let (tx, rx) = mpsc::channel();
        let sent = self
            .questions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send((request.clone(), tx));
        if sent.is_err() {
            return AskOutcome::Nobody;
        }
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(outcome) => return outcome,
                Err(mpsc::RecvTimeoutError::Disconnected) => return AskOutcome::Nobody,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if self.cancelled.load(Ordering::Relaxed) {
                        return AskOutcome::Cancelled;
                    }
                }
            }
        }
    }
}

/// Calls `tool` for a person at the console. `ask` reads their answer to
/// an approval (`None`: nobody can answer); `notes` shows the question.
/// Ctrl-C sets the flag registered in `current`.
pub fn call(
    kernel: &Kernel,
    rt: &tokio::runtime::Runtime,
    tool: &str,
    args: Value,
    current: &CurrentCall,
    notes: &mut dyn std::io::Write,
    ask: super::chat::AskPerson<'_>,
) -> Result<Value, ToolError> {
    let shown_args = args.to_string();
    let cancelled = Arc::new(AtomicBool::new(false));
    let (questions, incoming) = mpsc::channel::<Question>();
    let link = Arc::new(RunLink {
        run_id: None,
        cancelled: cancelled.clone(),
        approver: Arc::new(ConsoleApprover {
            questions: Mutex::new(questions),
            cancelled: cancelled.clone(),
        }),
    });
    *current.lock().unwrap_or_else(|p| p.into_inner()) = Some(cancelled.clone());
    let task = {
        let (kernel, tool) = (kernel.clone(), tool.to_string());
        rt.spawn(async move { kernel.call_tool_for(&tool, args, Some(link)).await })
    };
    // Answer questions until the call ends.
    while !task.is_finished() {
        match incoming.recv_timeout(Duration::from_millis(20)) {
            Ok((request, reply)) => {
                let outcome = put_to_person(kernel, &request, &shown_args, &cancelled, notes, ask);
                let _ = reply.send(outcome);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let result = rt.block_on(task);
    *current.lock().unwrap_or_else(|p| p.into_inner()) = None;
    result.unwrap_or_else(|e| Err(ToolError::Internal(format!("tool call task failed: {e}"))))
}

/// Shows one question and reads the answer: yes, no, or always (which
/// stores a grant of the exact rule shown).
fn put_to_person(
    kernel: &Kernel,
    request: &ApprovalRequest,
    arguments: &str,
    cancelled: &AtomicBool,
    notes: &mut dyn std::io::Write,
    ask: super::chat::AskPerson<'_>,
) -> AskOutcome {
    // The prompt's words are the agent's: the same record shape, not
    // stored.
    let rec = ApprovalRecord {
        id: "call".into(),
        run_id: String::new(),
        skill: request.skill.clone(),
        tool: request.tool.clone(),
        capability: request.capability.name().to_string(),
        target: request.target.clone(),
        rule: request.rule.clone().unwrap_or_default(),
        workspace: kernel.workspace().display().to_string(),
        arguments: arguments.to_string(),
        state: ApprovalState::Pending,
        answer: None,
        created_ms: 0,
        answered_ms: None,
    };
    let _ = writeln!(notes, "{}", super::chat::approval_prompt(&rec));
    loop {
        let _ = write!(notes, "{}", super::chat::answer_prompt(&rec));
        let _ = notes.flush();
        let still_wanted = || !cancelled.load(Ordering::Relaxed);
        let Some(line) = ask(&rec, &still_wanted) else {
            if cancelled.load(Ordering::Relaxed) {
                return AskOutcome::Cancelled;
            }
            let _ = writeln!(notes, "\nnobody can answer here, so no");
            return AskOutcome::Nobody;
        };
        match ApprovalAnswer::parse(&line) {
            Some(ApprovalAnswer::Yes) => return AskOutcome::Approved,
            Some(ApprovalAnswer::No) => return AskOutcome::Denied,
            Some(ApprovalAnswer::Always) if !rec.rule.is_empty() => {
                return match kernel
                    .store()
                    .grant(kernel.workspace(), &rec.skill, &rec.rule)
                {
                    Ok(_) => {
                        let _ = writeln!(
                            notes,
                            "granted {} {} for good",
                            crate::text::escape_control(&rec.skill),
                            crate::text::escape_control(&rec.rule)
                        );
                        AskOutcome::Approved
                    }
                    Err(e) => {
                        let _ = writeln!(notes, "could not store the grant ({e}), so no");
                        AskOutcome::Denied
                    }
                };
            }
            Some(ApprovalAnswer::Always) => {
                let _ = writeln!(
                    notes,
                    "`always` is not offered here: no rule names this target alone"
                );
            }
            None => {
                let _ = writeln!(notes, "please answer y, n or always");
            }
        }
    }
}
