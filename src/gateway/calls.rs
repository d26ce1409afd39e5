//! `POST /v1/tools/{name}/call`: a tool called over HTTP, under its own
//! skill's grants, whose `ask` decisions park as approval requests.
//!
//! The request is stored like a run's (`run_id` empty: a direct call has
//! no run), announced on `/v1/events` as `approval.requested`, and answered
//! like any other — `POST /v1/approvals/{id}`, the web console, `keel
//! approve` from another terminal (the wait reads the stored state, so an
//! answer from any process counts). No answer within `[agent]
//! approval_timeout_seconds` is no. A client that goes away cancels its
//! call: the wait ends and the script stops at its next check.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::Gw;
use crate::kernel::gate::{ApprovalRequest, Approver, AskOutcome};
use crate::store::{ApprovalState, NewApproval};

/// How often a waiting call looks at its request's stored state.
const POLL: Duration = Duration::from_millis(50);

/// Answers a direct call's `ask` through a stored approval request.
pub struct HttpApprover {
    pub gw: Gw,
    /// The call's arguments, shown with the request.
    pub arguments: String,
    pub cancelled: Arc<AtomicBool>,
    /// Answers given during this call, by what was asked (skill,
    /// capability, target, rule): the same effect again within the call
    /// (a script reading `kv` twice) is not asked twice, as identical
    /// requests of one model turn share one answer in a run.
    pub answered: std::sync::Mutex<std::collections::HashMap<String, AskOutcome>>,
}

impl HttpApprover {
    pub fn new(gw: Gw, arguments: String, cancelled: Arc<AtomicBool>) -> Self {
        Self {
            gw,
            arguments,
            cancelled,
            answered: Default::default(),
        }
    }
}

impl Approver for HttpApprover {
    fn approve(&self, request: &ApprovalRequest) -> AskOutcome {
        let key = format!(
            "{}\0{}\0{}\0{}",
            request.skill,
            request.capability.name(),
            request.target,
            request.rule.as_deref().unwrap_or("")
        );
        if let Some(o) = self
            .answered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return *o;
        }
        let outcome = self.ask(request);
        if matches!(outcome, AskOutcome::Approved | AskOutcome::Denied) {
            self.answered
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key, outcome);
        }
        outcome
    }
}

impl HttpApprover {
    fn ask(&self, request: &ApprovalRequest) -> AskOutcome {
        let kernel = &self.gw.kernel;
        let store = kernel.store();
        let record = match store.create_approval(&NewApproval {
            run_id: "",
            skill: &request.skill,
            tool: &request.tool,
            capability: request.capability.name(),
            target: &request.target,
            rule: request.rule.as_deref().unwrap_or(""),
            workspace: kernel.workspace(),
            arguments: &self.arguments,
        }) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot store an approval request");
                return AskOutcome::Nobody;
            }
        };
        super::announce_approval(&self.gw, &record);
        let until = Instant::now() + kernel.config().agent.approval_timeout;
        loop {
            match store.approval(&record.id) {
                Ok(Some(r)) => match r.state {
                    ApprovalState::Approved => return AskOutcome::Approved,
                    ApprovalState::Denied => return AskOutcome::Denied,
                    ApprovalState::Expired => return AskOutcome::Expired,
                    ApprovalState::Pending => {}
                },
                Ok(None) => return AskOutcome::Nobody,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read an approval request; waiting on");
                }
            }
            if self.cancelled.load(Ordering::Relaxed) {
                let _ = store.expire_approval(&record.id);
                return AskOutcome::Cancelled;
            }
            if Instant::now() >= until {
                // Unless an answer landed just now.
                return match store.expire_approval(&record.id) {
                    Ok(false) => match store.approval(&record.id).ok().flatten().map(|r| r.state) {
                        Some(ApprovalState::Approved) => AskOutcome::Approved,
                        Some(ApprovalState::Denied) => AskOutcome::Denied,
                        _ => AskOutcome::Expired,
                    },
                    _ => AskOutcome::Expired,
                };
            }
            std::thread::sleep(POLL);
        }
    }
}

/// Sets the flag when dropped: a handler whose client went away is
/// dropped, and its call stops.
pub struct CancelOnDrop(pub Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}
