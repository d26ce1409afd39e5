//! Approvals: the gate's `ask` for a run's tool call, answered by a person.
//!
//! [`CallApprover`] is the [`Approver`] a run's tool calls carry. It stores
//! an approval request (so any front end can list and answer it), parks the
//! run in `waiting_permission` while any request is open, and waits on an
//! engine thread for the answer, the timeout or the run's cancellation
//! (both a no). Identical requests from one turn's parallel calls (same
//! skill, capability, target and rule: an [`ApprovalKey`]) coalesce into one
//! record and one [`Waiter`], so N parallel calls raise one question. An
//! answer given through [`Agent::answer`] wakes the waiter at once; one
//! written by another process is seen by polling the stored state.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::RunState;
use super::run::{Agent, Inner, RunControl, RunEvent, lock};
use crate::kernel::gate::{ApprovalRequest, Approver, AskOutcome};
use crate::store::{ApprovalState, NewApproval};

/// What makes two approval requests the same question.
pub(super) type ApprovalKey = (String, String, String, Option<String>);

/// An approval someone may answer.
#[derive(Default)]
pub(super) struct Waiter {
    pub(super) answer: Mutex<Option<bool>>,
    pub(super) ready: Condvar,
}

/// Answers the gate's `ask` for one tool call of a run: stores an approval
/// request, parks the run in `waiting_permission`, and waits for an answer
/// (or the timeout, or the run's cancellation — both a no).
pub(super) struct CallApprover {
    pub(super) agent: std::sync::Weak<Inner>,
    pub(super) run_id: String,
    pub(super) arguments: String,
    pub(super) ctl: Arc<RunControl>,
}

impl Approver for CallApprover {
    fn approve(&self, request: &ApprovalRequest) -> AskOutcome {
        let Some(inner) = self.agent.upgrade() else {
            return AskOutcome::Nobody;
        };
        let agent = Agent(inner);
        let store = agent.0.kernel.store();
        let key: ApprovalKey = (
            request.skill.clone(),
            request.capability.name().to_string(),
            request.target.clone(),
            request.rule.clone(),
        );
        // The same question from a parallel call of this turn waits on the
        // first one's record: N identical calls, one prompt, one answer.
        // Checked and created under one lock, so two calls cannot both ask.
        let (record, waiter, first) = {
            let mut asked = lock(&self.ctl.asked);
            match asked.get(&key) {
                Some((record, waiter)) => (record.clone(), waiter.clone(), false),
                None => {
                    let record = match store.create_approval(&NewApproval {
                        run_id: &self.run_id,
                        skill: &request.skill,
                        tool: &request.tool,
                        capability: request.capability.name(),
                        target: &request.target,
                        rule: request.rule.as_deref().unwrap_or(""),
                        workspace: agent.0.kernel.workspace(),
                        arguments: &self.arguments,
                    }) {
                        Ok(r) => r,
                        Err(e) => {
                            tracing::error!(error = %e, "cannot store an approval request");
                            return AskOutcome::Nobody;
                        }
                    };
                    let waiter = Arc::new(Waiter::default());
                    lock(&agent.0.waiters).insert(record.id.clone(), waiter.clone());
                    asked.insert(key, (record.clone(), waiter.clone()));
                    (record, waiter, true)
                }
            }
        };
        {
            let _s = lock(&self.ctl.state_lock);
            if self.ctl.waiting.fetch_add(1, Ordering::SeqCst) == 0 {
                agent.transition(&self.run_id, RunState::WaitingPermission, Some(&record.id));
                self.ctl.emit(RunEvent::State(RunState::WaitingPermission));
            }
        }
        if first {
            self.ctl.emit(RunEvent::Approval(record.clone()));
            let _ = agent.0.approvals.send(record.clone());
        }
        let until = Instant::now() + agent.settings().approval_timeout;
        let mut answer = lock(&waiter.answer);
        let decided = loop {
            if let Some(a) = *answer {
                break Some(a);
            }
            if self.ctl.cancelled.load(Ordering::Relaxed) {
                break Some(false);
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break None;
            }
            // Answers given here wake the wait at once; one given by
            // another keel process sharing the database (`keel approve`)
            // is seen within a quarter of a second.
            answer = waiter
                .ready
                .wait_timeout(answer, left.min(Duration::from_millis(250)))
                .unwrap_or_else(|p| p.into_inner())
                .0;
            if answer.is_none()
                && let Ok(Some(r)) = store.approval(&record.id)
            {
                match r.state {
                    ApprovalState::Approved => break Some(true),
                    ApprovalState::Denied | ApprovalState::Expired => break Some(false),
                    ApprovalState::Pending => {}
                }
            }
        };
        drop(answer);
        let cancelled = self.ctl.cancelled.load(Ordering::Relaxed);
        let outcome = match decided {
            Some(true) => AskOutcome::Approved,
            Some(false) if cancelled => AskOutcome::Cancelled,
            // A call sharing a request that expired sees a plain no.
            Some(false) => match store.approval(&record.id).ok().flatten().map(|r| r.state) {
                Some(ApprovalState::Expired) => AskOutcome::Expired,
                _ => AskOutcome::Denied,
            },
            // Timed out: expire it — unless an answer landed just now.
            None => match store.expire_approval(&record.id) {
                Ok(true) | Err(_) => AskOutcome::Expired,
                Ok(false) => match store.approval(&record.id).ok().flatten().map(|r| r.state) {
                    Some(ApprovalState::Approved) => AskOutcome::Approved,
                    Some(ApprovalState::Denied) => AskOutcome::Denied,
                    _ => AskOutcome::Expired,
                },
            },
        };
        let approved = outcome == AskOutcome::Approved;
        if self.ctl.cancelled.load(Ordering::Relaxed) {
            let _ = store.expire_approval(&record.id);
        }
        // Calls sharing this request see the outcome at once.
        {
            let mut a = lock(&waiter.answer);
            if a.is_none() {
                *a = Some(approved);
            }
            waiter.ready.notify_all();
        }
        lock(&agent.0.waiters).remove(&record.id);
        {
            let _s = lock(&self.ctl.state_lock);
            if self.ctl.waiting.fetch_sub(1, Ordering::SeqCst) == 1
                && !self.ctl.cancelled.load(Ordering::Relaxed)
            {
                agent.transition(&self.run_id, RunState::Running, None);
                self.ctl.emit(RunEvent::State(RunState::Running));
            }
        }
        outcome
    }
}
