//! The agent: sessions, runs, and the model/tool loop.
//!
//! A session is a conversation; a run is one turn of work in it. This file
//! holds the run state machine — which states exist and which transitions
//! are legal — so the store can refuse an illegal transition inside the
//! same transaction that would write it. [`runner`] is the loop,
//! [`prompt`] what the model is offered, [`context`] the context guard,
//! [`owner`] which process owns a run.

pub mod context;
pub mod owner;
pub mod prompt;
pub mod runner;

pub use runner::{
    Agent, AgentError, NO_MODEL_HELP, RunEvent, RunHandle, RunOutcome, ToolCallOutcome,
};

use std::fmt;

/// Where a run is. Runs move `queued → running → (waiting_permission ⇄
/// running) → done | failed | cancelled`; the last three are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunState {
    Queued,
    Running,
    WaitingPermission,
    Done,
    Failed,
    Cancelled,
}

impl RunState {
    /// Every state, in lifecycle order.
    pub const ALL: [RunState; 6] = [
        Self::Queued,
        Self::Running,
        Self::WaitingPermission,
        Self::Done,
        Self::Failed,
        Self::Cancelled,
    ];

    /// The name stored in SQLite and shown to users.
    pub fn name(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::WaitingPermission => "waiting_permission",
            Self::Done => "done",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.name() == s)
    }

    /// Done, failed and cancelled runs never change again.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Done | Self::Failed | Self::Cancelled)
    }

    /// Whether a run may move from `self` to `to`.
    pub fn can_move_to(self, to: RunState) -> bool {
        use RunState::*;
        match (self, to) {
            (Queued, Running) => true,
            (Running, WaitingPermission) | (WaitingPermission, Running) => true,
            (Running, Done) => true,
            // Failing or cancelling is possible from any unfinished state
            // (a crash can interrupt a queued run too).
            (from, Failed | Cancelled) => !from.is_final(),
            _ => false,
        }
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lifecycle_is_the_documented_one() {
        use RunState::*;
        let legal = [
            (Queued, Running),
            (Running, WaitingPermission),
            (WaitingPermission, Running),
            (Running, Done),
            (Queued, Failed),
            (Queued, Cancelled),
            (Running, Failed),
            (Running, Cancelled),
            (WaitingPermission, Failed),
            (WaitingPermission, Cancelled),
        ];
        for from in RunState::ALL {
            for to in RunState::ALL {
                assert_eq!(
                    from.can_move_to(to),
                    legal.contains(&(from, to)),
                    "{from} -> {to}"
                );
            }
            assert_eq!(RunState::parse(from.name()), Some(from));
        }
        assert_eq!(RunState::parse("finished"), None);
    }
}
