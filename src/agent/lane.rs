//! A session's lane: its runs go one at a time, in the order their
//! messages came, across every keel process sharing the database.
//!
//! In this process a finished run wakes the next one at once through the
//! session's [`tokio::sync::Notify`]; runs owned by other processes are
//! polled for (100 ms), and a run ahead whose owner died is failed
//! (interrupted) through [`crate::store::Store::recover_interrupted_runs`]
//! rather than waited for, so a crash never blocks a session. All store
//! access goes through the store thread ([`Agent::db`]).

use std::sync::Arc;
use std::time::Duration;

use super::run::{Agent, RunControl, lock};

impl Agent {
    pub(super) fn lane(&self, session_id: &str) -> Arc<tokio::sync::Notify> {
        let mut lanes = lock(&self.0.lanes);
        // Forget idle lanes now and then so the map does not grow with
        // every session ever used.
        if lanes.len() > 1024 {
            lanes.retain(|_, l| Arc::strong_count(l) > 1);
        }
        lanes.entry(session_id.to_string()).or_default().clone()
    }

    /// Waits until every run accepted before this one in its session has
    /// finished — in this process or in another keel sharing the database —
    /// so a session's runs go one at a time, in the order their messages
    /// came. A run ahead whose process died is failed (interrupted) rather
    /// than waited for. Returns false if this run was cancelled meanwhile.
    pub(super) async fn wait_turn(
        &self,
        run_id: &str,
        ctl: &RunControl,
        lane: &tokio::sync::Notify,
    ) -> bool {
        let own = self.0.owner.id();
        let alive = |o: &str| self.0.owner.sees_alive(o);
        let mut cancel_rx = ctl.cancel_tx.subscribe();
        loop {
            let woken = lane.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let (session, run) = (ctl.session_id.clone(), run_id.to_string());
            let ahead = match self.db(move |s| s.runs_ahead(&session, &run)).await {
                Ok(a) => a,
                Err(e) => {
                    tracing::error!(run = run_id, error = %e, "cannot read the session's runs");
                    return true;
                }
            };
            if ahead.is_empty() {
                return true;
            }
            if ahead.iter().any(|(_, o)| !o.as_deref().is_some_and(alive)) {
                let agent = self.clone();
                let recovered = self
                    .db(move |s| s.recover_interrupted_runs(&|o| agent.0.owner.sees_alive(o)))
                    .await;
                if let Err(e) = recovered {
                    tracing::error!(error = %e, "cannot fail interrupted runs");
                    return true;
                }
                continue;
            }
            let others = ahead.iter().any(|(_, o)| o.as_deref() != Some(own));
            let poll = if others {
                Duration::from_millis(100)
            } else {
                Duration::from_secs(5)
            };
            tokio::select! {
                _ = &mut woken => {}
                _ = cancel_rx.wait_for(|c| *c) => return false,
                _ = tokio::time::sleep(poll) => {}
            }
        }
    }
}
