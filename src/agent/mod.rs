//! The agent: sessions, runs, and the model/tool loop.
//!
//! A session is a conversation; a run is one turn of work in it. The run
//! state machine ([`RunState`]) lives in the store, which refuses an illegal
//! transition inside the same transaction that would write it; it is
//! re-exported here. [`run`] is the loop (the [`Agent`], submitting and executing runs,
//! the turn loop), `lane` a session's runs one at a time, `approval` the
//! gate's `ask` answered by a person, [`transcript`] the pure transcript →
//! context rules,
//! [`prompt`] what the model is offered, [`context`] the context guard,
//! [`owner`] which process owns a run.

mod approval;
pub mod context;
mod lane;
pub mod owner;
pub mod prompt;
mod run;
pub mod transcript;

pub use run::{Agent, AgentError, NO_MODEL_HELP, RunEvent, RunHandle, RunOutcome, ToolCallOutcome};

/// Where a run is: owned by the store, which checks every transition.
pub use crate::store::RunState;
