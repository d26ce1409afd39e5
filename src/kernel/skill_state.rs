//! Disabling and enabling skills.
//!
//! A disabled skill keeps its files, its grants, its baseline and its data;
//! it just offers nothing: its tools are not listed to the model, not in
//! `tools.search`, not activatable with `skills.activate`, and a call to one
//! of them — from the agent, the CLI, the console, the gateway or another
//! skill's `keel.tools.call` — fails with [`ToolError::SkillDisabled`],
//! which says how to enable it.
//!
//! # Where the state lives
//!
//! In the store, per workspace like grants (`skill_disabled`, by skill
//! name, so it holds for every version and survives restarts and hot
//! reloads of the skill). Every check reads the database, as grants do: a
//! `keel skill disable` in another terminal takes effect on a running
//! console's or gateway's next call and next model request. Calls check on
//! their engine thread; the agent reads the set through the store's thread
//! (`Store::call`), never blocking a runtime worker. If the state cannot be
//! read, a call fails closed (it is refused with the store's error); a
//! listing logs a warning and hides nothing (the calls still check).
//!
//! # Dependencies
//!
//! Disabling a skill that others depend on leaves the dependents enabled
//! and loaded. Their own tools keep working, including code they
//! `require`/`import` from the disabled skill: a library runs under its
//! caller's grants, so nothing the disabled skill was granted is used.
//! What stops is every call *into* the disabled skill as a tool
//! (`keel.tools.call`). The change reports the dependents so a front end
//! can say so.
//!
//! Only this process's front ends hear the [`KernelEvent::SkillState`]
//! event; another process sees the new state at its next check.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::Serialize;

use super::{Kernel, KernelEvent};
use crate::capability::did_you_mean;
use crate::skill::SkillSet;
use crate::store::StoreError;
use crate::tool::ToolError;

/// What [`Kernel::set_skill_enabled`] did.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SkillStateChange {
    pub skill: String,
    /// The state now.
    pub enabled: bool,
    /// False: it already was in that state (nothing changed).
    pub changed: bool,
    /// The workspace the state applies to.
    pub workspace: String,
    /// Whether a version of the skill is loaded right now (a skill that
    /// failed to load, is held back or whose files are gone can be
    /// disabled and enabled too; the state applies when it loads).
    pub loaded: bool,
    /// Loaded skills that depend on it: they stay enabled, and their
    /// `keel.tools.call`s into a disabled skill fail.
    pub dependents: Vec<String>,
}

/// Why a skill's state could not be changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SkillStateError {
    /// The argument cannot be a skill's name.
    #[error("`{0}` is not a skill name (see `keel skills`)")]
    NotASkillName(String),
    /// `skills` and `tools` are keel's own tools, not skills.
    #[error(
        "`{0}` names keel's own tools (skills.activate, tools.search), which cannot be disabled"
    )]
    Reserved(String),
    /// No skill of that name is known here.
    #[error("no skill `{name}`{}; see `keel skills`", suggestion.as_ref().map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default())]
    UnknownSkill {
        name: String,
        suggestion: Option<String>,
    },
    /// The database could not be read or written; nothing changed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The names of every skill `set` knows: loaded, failed (when the
/// manifest got as far as a name) or held back.
fn known_names(set: &SkillSet) -> BTreeSet<&str> {
    let mut names: BTreeSet<&str> = set
        .skills
        .keys()
        .map(|id| id.name.as_str())
        .chain(set.claimants.iter().map(|c| c.name.as_str()))
        .collect();
    for f in &set.failures {
        if let Some(s) = &f.skill {
            names.insert(s.split('@').next().unwrap_or(s));
        }
    }
    names
}

/// `set` without the skills named in `disabled`: what is offered. Shares
/// the loaded skills (engines and all); `candidates` is left empty, so the
/// view is for listing and calling, never for rebuilding a set.
pub fn without_disabled(set: &Arc<SkillSet>, disabled: &BTreeSet<String>) -> Arc<SkillSet> {
    let off = |name: &str| disabled.contains(name);
    if !set.skills.keys().any(|id| off(&id.name)) {
        return set.clone();
    }
    Arc::new(SkillSet {
        skills: set
            .skills
            .iter()
            .filter(|(id, _)| !off(&id.name))
            .map(|(id, s)| (id.clone(), s.clone()))
            .collect(),
        failures: set.failures.clone(),
        tools: set
            .tools
            .iter()
            .filter(|(_, e)| !off(&e.skill.manifest.name))
            .map(|(n, e)| (n.clone(), e.clone()))
            .collect(),
        candidates: Vec::new(),
        claimants: set.claimants.clone(),
    })
}

impl Kernel {
    /// Disables (`enabled = false`) or enables skill `name` in this
    /// workspace (see the module docs). Idempotent: the same state again
    /// succeeds with `changed: false`. A change is announced as
    /// [`KernelEvent::SkillState`].
    pub fn set_skill_enabled(
        &self,
        name: &str,
        enabled: bool,
    ) -> Result<SkillStateChange, SkillStateError> {
        if crate::tool::native::RESERVED_SKILL_NAMES.contains(&name) {
            return Err(SkillStateError::Reserved(name.to_string()));
        }
        if !crate::skill::manifest::valid_skill_name(name) {
            return Err(SkillStateError::NotASkillName(
                crate::text::escape_control(name).into_owned(),
            ));
        }
        let set = self.skills();
        let known = known_names(&set);
        let store = self.store();
        let workspace = self.workspace();
        // A name keel no longer finds can still be enabled: its files may
        // be gone, and the state should not outlive them unseen.
        if !known.contains(name) && !store.skill_disabled(workspace, name)? {
            return Err(SkillStateError::UnknownSkill {
                name: name.to_string(),
                suggestion: did_you_mean(name, known.iter().copied()),
            });
        }
        let changed = store.set_skill_enabled(workspace, name, enabled)?;
        let dependents: BTreeSet<String> = set
            .skills
            .values()
            .filter(|s| s.deps.contains_key(name))
            .map(|s| s.manifest.name.clone())
            .collect();
        let change = SkillStateChange {
            skill: name.to_string(),
            enabled,
            changed,
            workspace: workspace.display().to_string(),
            loaded: set.latest(name).is_some(),
            dependents: dependents.into_iter().collect(),
        };
        if changed {
            tracing::info!(
                skill = name,
                "skill {}",
                if enabled { "enabled" } else { "disabled" }
            );
            let _ = self.0.events.send(KernelEvent::SkillState(change.clone()));
        }
        Ok(change)
    }

    /// The skills disabled in this workspace, read from the store. Blocks
    /// on SQLite: async code reads them with
    /// `store().call(|s| s.disabled_skills(ws))` instead.
    pub fn disabled_skills(&self) -> Result<BTreeSet<String>, StoreError> {
        self.store().disabled_skills(self.workspace())
    }

    /// Whether skill `name` is enabled here (blocks on SQLite).
    pub fn skill_enabled(&self, name: &str) -> Result<bool, StoreError> {
        Ok(!self.store().skill_disabled(self.workspace(), name)?)
    }

    /// The current skill set without the disabled skills: what the model
    /// is offered and `tools.search` finds. Blocks on SQLite; when the
    /// state cannot be read this logs a warning and hides nothing (calls
    /// still check, and fail closed).
    pub fn offered_skills(&self) -> Arc<SkillSet> {
        let disabled = self.disabled_skills().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read which skills are disabled; listing all");
            BTreeSet::new()
        });
        self.offered_skills_given(&disabled)
    }

    /// The current skill set without the skills in `disabled` (read by
    /// the caller, e.g. on the store's thread).
    pub fn offered_skills_given(&self, disabled: &BTreeSet<String>) -> Arc<SkillSet> {
        without_disabled(&self.skills(), disabled)
    }

    /// Refuses a call into a disabled skill; fails closed when the state
    /// cannot be read. Runs on the calling (engine) thread.
    pub(super) fn check_enabled(&self, tool: &str, skill: &str) -> Result<(), ToolError> {
        match self.store().skill_disabled(self.workspace(), skill) {
            Ok(false) => Ok(()),
            Ok(true) => Err(ToolError::SkillDisabled {
                name: tool.to_string(),
                skill: skill.to_string(),
            }),
            Err(e) => Err(ToolError::Internal(format!(
                "cannot read whether skill `{skill}` is disabled, so `{tool}` was not run: {e}"
            ))),
        }
    }
}
