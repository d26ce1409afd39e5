//! Skills: finding them, resolving their dependencies, and the loaded set.
//!
//! A [`SkillSet`] is an immutable snapshot: every skill that resolved, every
//! one that failed (with its reason), and the tool table. The kernel holds the
//! current snapshot in an `ArcSwap`; a reload builds a new one on the side and
//! swaps it in whole, so a call sees either the old world or the new one.
//! Building reads manifests and script text only — engines start lazily, on a
//! skill's first call — so listing a hundred skills costs no engine start.
//!
//! A skill's identity is its name *and* its origin (folder, one-file script
//! or built-in). The origins found when a name is first seen in a
//! workspace are accepted for it; a copy from any other origin later is a
//! [`Claimant`]: not loaded, no tools, not a dependency, nothing inherited
//! (grants, baseline, policy section, kv data), until the operator runs
//! `keel skill accept NAME --origin PATH`. Two copies of one `name@version`
//! are never a silent pick.
//!
//! Sources are read into memory when a skill is found. A version that is
//! serving keeps its own copy of its text, so an edit on disk (even a broken,
//! half-written one) never changes what an existing version runs.

pub mod builtin;
pub mod checked_schemas;
pub mod files;
pub mod instructions;
pub mod manifest;
pub mod resolve;
pub mod watch;

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use semver::Version;

use crate::capability::{CapabilityRule, ScopeBase};
use crate::config::Limits;
use crate::script::InstancePool;
pub use checked_schemas::CheckedSchemas;
pub use instructions::Instructions;
pub use manifest::{Language, ManifestError, SkillManifest, ToolSpec};
pub use resolve::{NodeId, ResolveError};

/// Most script files one skill may hold.
pub const MAX_FILES: usize = 1000;
pub use files::{MAX_FILE_BYTES, SkillFileError};

/// Who a skill is, for the gate: the authority under which its tools run.
#[derive(Debug)]
pub struct SkillInfo {
    pub name: String,
    pub version: Version,
    /// Where it was loaded from: with the name, its identity. Grants,
    /// baseline and data belong to the origin accepted for the name.
    pub origin: Origin,
    /// Capabilities the manifest declares.
    pub declared: Vec<CapabilityRule>,
    /// Declared capabilities (as written) that were not there when the
    /// skill was first seen: they need an explicit grant.
    pub pending: Vec<String>,
}

/// Shared handle to a [`SkillInfo`].
pub type SkillIdentity = Arc<SkillInfo>;

/// Where a skill came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(tag = "kind", content = "path", rename_all = "lowercase")]
pub enum Origin {
    /// A folder with `skill.toml`.
    Folder(PathBuf),
    /// A one-file skill (a script with a leading manifest comment).
    File(PathBuf),
    /// Compiled into the binary.
    Builtin(String),
}

impl Origin {
    /// The origin as the store keys a skill's identity: the absolute,
    /// symlink-resolved path of its folder or file (so `./skills/x` and
    /// `/abs/skills/x` are one origin), or `<builtin>/name`.
    pub fn key(&self) -> String {
        match self {
            Origin::Folder(p) | Origin::File(p) => std::fs::canonicalize(p)
                .unwrap_or_else(|_| std::path::absolute(p).unwrap_or_else(|_| p.clone()))
                .to_string_lossy()
                .into_owned(),
            Origin::Builtin(_) => self.to_string(),
        }
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Folder(p) | Origin::File(p) => write!(f, "{}", p.display()),
            Origin::Builtin(n) => write!(f, "<builtin>/{n}"),
        }
    }
}

/// A skill's files, read into memory.
#[derive(Debug)]
pub struct SkillSource {
    pub origin: Origin,
    /// The manifest file (`skill.toml`, or the script itself), for errors.
    pub manifest_path: PathBuf,
    /// The folder script paths are relative to (for display).
    pub dir: PathBuf,
    /// Script files by relative path (`/`-separated).
    pub files: BTreeMap<String, Arc<str>>,
    /// A hash of the manifest and every file, to tell edits apart.
    pub fingerprint: u64,
    /// The skill's `SKILL.md` (Agent Skills format): its description is
    /// listed in the agent's prompt, its body given on activation.
    pub instructions: Option<Instructions>,
    /// What kind of skill this is.
    pub kind: SkillKind,
    /// The skill's other files (reference documents, `scripts/`, …) by
    /// relative path, `/`-separated, for the model to read on demand
    /// (`skills.read`). Listed when the skill is found; read when asked.
    pub resources: Vec<String>,
}

/// What a skill is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SkillKind {
    /// A keel skill: `skill.toml`, scripts, tools (and maybe a `SKILL.md`).
    Keel,
    /// An Agent Skills folder with a `SKILL.md` and no `skill.toml`:
    /// instructions (and files) for the model, no tools, no engine.
    Instructions,
}

impl SkillKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Keel => "keel",
            Self::Instructions => "instructions",
        }
    }
}

impl SkillSource {
    /// A script's path for messages (`skills/notes/main.luau`).
    pub fn display_path(&self, rel: &str) -> String {
        match &self.origin {
            Origin::Builtin(n) => format!("<builtin>/{n}/{rel}"),
            _ => self.dir.join(rel).display().to_string(),
        }
    }
}

/// A skill found on disk whose manifest parsed.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub manifest: Arc<SkillManifest>,
    pub source: Arc<SkillSource>,
}

/// A skill that could not be loaded, and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SkillFailure {
    /// `name@version` when the manifest got that far.
    pub skill: Option<String>,
    pub origin: Origin,
    /// `file:line: message` where a file and line are known.
    pub error: String,
}

/// A skill held back because another origin owns its name here (or two
/// copies compete for a name nobody owns yet). Nothing of it runs and it
/// inherits nothing until the operator accepts its origin
/// (`keel skill accept NAME --origin PATH`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Claimant {
    /// `name@version`.
    pub skill: String,
    pub name: String,
    pub origin: Origin,
    /// The origins accepted for the name in this workspace (empty: none
    /// yet).
    pub owners: Vec<String>,
    /// Why it is held back, with what to do.
    pub reason: String,
}

/// One copy of a skill found on disk, for [`SightFn`]: its manifest, its
/// origin, and whether a first sighting may accept it.
pub type Copy<'a> = (&'a SkillManifest, &'a Origin, bool);

/// What the kernel's records say about every copy of one skill name found
/// on disk: each copy's standing in this workspace, in the same order (see
/// [`crate::store::Standing`]).
pub type SightFn<'a> = &'a dyn Fn(&str, &[Copy<'_>]) -> Vec<crate::store::Standing>;

/// A resolved skill version, ready to be called (its engines start lazily).
pub struct LoadedSkill {
    pub id: NodeId,
    pub identity: SkillIdentity,
    pub manifest: Arc<SkillManifest>,
    pub source: Arc<SkillSource>,
    /// The version each dependency resolved to.
    pub deps: BTreeMap<String, Arc<LoadedSkill>>,
    pub limits: Limits,
    pub pool: InstancePool,
}

impl std::fmt::Debug for LoadedSkill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedSkill").field("id", &self.id).finish()
    }
}

impl LoadedSkill {
    /// True when this version can stand in for `other` unchanged: same
    /// sources, same limits, and dependencies that are the very same loaded
    /// versions. Warm engines are kept across a reload only then.
    fn same_as(
        &self,
        c: &Candidate,
        deps: &BTreeMap<String, Arc<LoadedSkill>>,
        limits: &Limits,
    ) -> bool {
        self.source.fingerprint == c.source.fingerprint
            && self.source.origin == c.source.origin
            && &self.limits == limits
            && self.deps.len() == deps.len()
            && self
                .deps
                .iter()
                .zip(deps.iter())
                .all(|((n1, a), (n2, b))| n1 == n2 && Arc::ptr_eq(a, b))
    }

    /// An instructions skill: no code, no tools, no engine.
    pub fn is_instructions(&self) -> bool {
        self.source.kind == SkillKind::Instructions
    }

    /// What the agent's prompt lists for this skill: its `SKILL.md`'s
    /// description, else its manifest's.
    pub fn description(&self) -> &str {
        self.source
            .instructions
            .as_ref()
            .and_then(|i| i.description.as_deref())
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .unwrap_or(&self.manifest.description)
    }

    /// `name@version`, or the name alone for an instructions skill (the
    /// format has no versions).
    pub fn label(&self) -> String {
        if self.is_instructions() {
            self.manifest.name.clone()
        } else {
            self.id.to_string()
        }
    }

    /// The entry script's key in [`SkillSource::files`].
    pub fn entry_key(&self) -> String {
        rel_key(&self.manifest.entry)
    }

    /// What `require(name)` (Luau) or `import name` (Rhai) reaches from this
    /// skill's code: its own file for `"./path"` (with or without the
    /// language's extension, never leaving the folder), or a declared
    /// dependency's entry module. Nothing else — not the file system at
    /// large. The error completes "require(\"name\"): …".
    pub fn resolve_module(
        self: &Arc<Self>,
        name: &str,
        language: Language,
    ) -> Result<(Arc<LoadedSkill>, String), String> {
        let (word, tools_call) = match language {
            Language::Luau => ("require", "keel.tools.call"),
            Language::Rhai => ("import", "keel::tools::call"),
        };
        if let Some(path) = name.strip_prefix("./") {
            let inside = !path.is_empty()
                && path
                    .split('/')
                    .all(|c| !c.is_empty() && c != "." && c != "..");
            if !inside {
                return Err("a path must stay inside the skill's folder (no `..`)".into());
            }
            let extensions: &[&str] = match language {
                Language::Luau => &["", ".luau", ".lua"],
                Language::Rhai => &["", ".rhai"],
            };
            return extensions
                .iter()
                .map(|ext| format!("{path}{ext}"))
                .find(|c| {
                    self.source.files.contains_key(c)
                        && Language::from_path(Path::new(c)) == Some(language)
                })
                .map(|rel| (self.clone(), rel))
                .ok_or_else(|| {
                    format!(
                        "skill `{}` has no file `{path}{}`",
                        self.manifest.name, extensions[1]
                    )
                });
        }
        if let Some(dep) = self.deps.get(name) {
            if dep.is_instructions() {
                return Err(format!(
                    "`{}` is an instructions skill (a SKILL.md): it has no code to {word}",
                    dep.manifest.name
                ));
            }
            if dep.manifest.language != language {
                return Err(format!(
                    "`{}` is a {} skill; call its tools with {tools_call}",
                    dep.id,
                    dep.manifest.language.name()
                ));
            }
            return Ok((dep.clone(), dep.entry_key()));
        }
        let deps: Vec<&str> = self.deps.keys().map(String::as_str).collect();
        Err(format!(
            "not found; {word} reaches only this skill's own files (\"./name\") and its declared dependencies ({})",
            if deps.is_empty() {
                "none".to_string()
            } else {
                deps.join(", ")
            }
        ))
    }

    /// Every skill this one can reach through dependencies, itself included.
    pub fn closure(self: &Arc<Self>) -> Vec<Arc<LoadedSkill>> {
        let mut out: Vec<Arc<LoadedSkill>> = Vec::new();
        let mut stack = vec![self.clone()];
        while let Some(s) = stack.pop() {
            if out.iter().any(|o| Arc::ptr_eq(o, &s)) {
                continue;
            }
            stack.extend(s.deps.values().cloned());
            out.push(s);
        }
        out
    }
}

/// A tool in the tool table.
#[derive(Debug, Clone)]
pub struct ToolEntry {
    pub skill: Arc<LoadedSkill>,
    pub index: usize,
}

impl ToolEntry {
    pub fn spec(&self) -> &ToolSpec {
        &self.skill.manifest.tools[self.index]
    }
}

/// An immutable snapshot of every skill keel knows.
#[derive(Debug, Default)]
pub struct SkillSet {
    pub skills: BTreeMap<NodeId, Arc<LoadedSkill>>,
    pub failures: Vec<SkillFailure>,
    /// `skill.tool` → the tool of the highest loaded version of that skill.
    pub tools: BTreeMap<String, ToolEntry>,
    /// What the set was built from, to rebuild after a reload.
    pub candidates: Vec<Candidate>,
    /// Skills held back because their name belongs to another origin here.
    pub claimants: Vec<Claimant>,
}

impl SkillSet {
    /// Resolves candidates into a set. Loaded versions from `previous` that
    /// are unchanged are reused, engines and all.
    ///
    /// A skill's identity is its name *and* origin: `sight(manifest,
    /// origin, may_accept)` says whether this origin owns the name in the
    /// workspace (accepting a never-seen name from it when `may_accept`),
    /// and which declared capabilities are newer than its baseline. A
    /// candidate whose name another origin owns is held back as a
    /// [`Claimant`]: not loaded, no tools, not a dependency of anything.
    /// Two copies of one `name@version` are never a silent pick: the
    /// owner's copy loads and the other is a claimant; if neither owns the
    /// name yet, neither loads and the error names both.
    pub fn build(
        candidates: Vec<Candidate>,
        mut failures: Vec<SkillFailure>,
        previous: Option<&SkillSet>,
        limits_for: &dyn Fn(&str) -> Limits,
        sight: SightFn<'_>,
    ) -> SkillSet {
        use crate::store::Standing;
        let id_of =
            |c: &Candidate| NodeId::new(c.manifest.name.clone(), c.manifest.version.clone());
        let mut copies: BTreeMap<NodeId, Vec<Origin>> = BTreeMap::new();
        let mut names: Vec<&str> = Vec::new();
        for c in &candidates {
            copies
                .entry(id_of(c))
                .or_default()
                .push(c.source.origin.clone());
            if !names.contains(&c.manifest.name.as_str()) {
                names.push(&c.manifest.name);
            }
        }
        let mut by_id: BTreeMap<NodeId, Candidate> = BTreeMap::new();
        let mut pending: BTreeMap<NodeId, Vec<String>> = BTreeMap::new();
        let mut claimants = Vec::new();
        // Every copy of a name is sighted together, so a name seen for the
        // first time accepts all the copies (versions) found now.
        for name in names {
            let group: Vec<&Candidate> = candidates
                .iter()
                .filter(|c| c.manifest.name == name)
                .collect();
            let asked: Vec<Copy<'_>> = group
                .iter()
                .map(|c| {
                    let twins = copies[&id_of(c)].len();
                    (&*c.manifest, &c.source.origin, twins == 1)
                })
                .collect();
            let standings = sight(name, &asked);
            for (i, c) in group.into_iter().enumerate() {
                let id = id_of(c);
                let same = &copies[&id];
                // A short answer (a bug in `sight`) holds copies back.
                let standing = standings
                    .get(i)
                    .cloned()
                    .unwrap_or(Standing::Claimant { owners: vec![] });
                match standing {
                    Standing::Owner { pending: p } if !by_id.contains_key(&id) => {
                        pending.insert(id.clone(), p);
                        by_id.insert(id, c.clone());
                    }
                    Standing::Owner { .. } | Standing::Claimant { .. } => {
                        let owners = match standing {
                            Standing::Claimant { owners } => owners,
                            Standing::Owner { .. } => Vec::new(),
                        };
                        let reason = if same.len() > 1 {
                            format!(
                                "`{id}` is defined twice: {}; remove or rename one (or give it another version){}",
                                same.iter()
                                    .map(|o| o.to_string())
                                    .collect::<Vec<_>>()
                                    .join(" and "),
                                if by_id.contains_key(&id) {
                                    ", the accepted copy is loaded"
                                } else {
                                    ", neither is loaded"
                                }
                            )
                        } else if owners.is_empty() {
                            format!(
                                "`{id}` from {} could not be checked against keel's records of the name's origins (see the log); it is not loaded",
                                c.source.origin
                            )
                        } else {
                            format!(
                                "`{id}` from {} claims the name `{}`, which in this workspace belongs to {}; it is not loaded and inherits nothing (grants, policy section, data) until you accept it: keel skill accept {} --origin {}",
                                c.source.origin,
                                id.name,
                                owners.join(", "),
                                id.name,
                                c.source.origin.key()
                            )
                        };
                        claimants.push(Claimant {
                            skill: id.to_string(),
                            name: id.name.clone(),
                            origin: c.source.origin.clone(),
                            owners,
                            reason,
                        });
                    }
                }
            }
        }
        // What the set was built from: the accepted copies (claimants are
        // rediscovered, and sighted again, on every build).
        let kept: Vec<Candidate> = candidates
            .into_iter()
            .filter(|c| {
                by_id
                    .get(&id_of(c))
                    .is_some_and(|k| k.source.origin == c.source.origin)
            })
            .collect();
        let nodes: Vec<resolve::SkillNode> = by_id
            .values()
            .map(|c| resolve::SkillNode {
                name: c.manifest.name.clone(),
                version: c.manifest.version.clone(),
                dependencies: c.manifest.dependencies.clone(),
            })
            .collect();
        let resolution = resolve::resolve(&nodes);
        for (id, err) in &resolution.failed {
            failures.push(SkillFailure {
                skill: Some(id.to_string()),
                origin: by_id[id].source.origin.clone(),
                error: format!("{}: {err}", by_id[id].source.manifest_path.display()),
            });
        }
        let mut skills: BTreeMap<NodeId, Arc<LoadedSkill>> = BTreeMap::new();
        for id in &resolution.load_order {
            let c = &by_id[id];
            let deps: BTreeMap<String, Arc<LoadedSkill>> = resolution.resolved[id]
                .iter()
                .filter_map(|(name, dep)| skills.get(dep).map(|s| (name.clone(), s.clone())))
                .collect();
            let limits = limits_for(&c.manifest.name);
            let reused = previous
                .and_then(|p| p.skills.get(id))
                .filter(|old| old.same_as(c, &deps, &limits));
            let loaded = match reused {
                Some(old) => old.clone(),
                None => Arc::new(LoadedSkill {
                    id: id.clone(),
                    identity: Arc::new(SkillInfo {
                        name: c.manifest.name.clone(),
                        version: c.manifest.version.clone(),
                        declared: c.manifest.capabilities.clone(),
                        origin: c.source.origin.clone(),
                        pending: pending.get(id).cloned().unwrap_or_default(),
                    }),
                    manifest: c.manifest.clone(),
                    source: c.source.clone(),
                    deps,
                    pool: InstancePool::new(limits.max_instances),
                    limits,
                }),
            };
            skills.insert(id.clone(), loaded);
        }
        // The highest loaded version of each name offers its tools.
        let mut tools = BTreeMap::new();
        for s in skills.values() {
            for (index, t) in s.manifest.tools.iter().enumerate() {
                // BTreeMap iterates versions ascending, so later wins.
                tools.insert(
                    format!("{}.{}", s.manifest.name, t.name),
                    ToolEntry {
                        skill: s.clone(),
                        index,
                    },
                );
            }
        }
        SkillSet {
            skills,
            failures,
            tools,
            candidates: kept,
            claimants,
        }
    }

    /// The highest loaded version of a skill.
    pub fn latest(&self, name: &str) -> Option<&Arc<LoadedSkill>> {
        self.skills
            .iter()
            .rev()
            .find(|(id, _)| id.name == name)
            .map(|(_, s)| s)
    }
}

/// Where skills are looked for, in order of precedence.
#[derive(Debug, Clone)]
pub struct SearchPath {
    pub dirs: Vec<PathBuf>,
    pub builtin: bool,
    /// The file that keeps the tool schemas already found valid (see
    /// [`checked_schemas`]); `None` checks every schema at every discovery.
    pub checked_schemas: Option<PathBuf>,
}

/// Finds every skill in the search path. Each bad one is a failure; every
/// good one is a candidate.
pub fn discover(search: &SearchPath, base: &ScopeBase<'_>) -> (Vec<Candidate>, Vec<SkillFailure>) {
    let mut candidates = Vec::new();
    let mut failures = Vec::new();
    let mut schemas = search
        .checked_schemas
        .as_deref()
        .map(CheckedSchemas::load)
        .unwrap_or_default();
    let mut push = |r: Result<Candidate, SkillFailure>| {
        match r {
        Ok(c) if crate::tool::native::RESERVED_SKILL_NAMES.contains(&c.manifest.name.as_str()) => {
            failures.push(SkillFailure {
                skill: Some(c.manifest.name.clone()),
                origin: c.source.origin.clone(),
                error: format!(
                    "{}: the skill name `{}` is reserved for keel's own tools ({}); rename the skill",
                    c.source.manifest_path.display(),
                    c.manifest.name,
                    crate::tool::native::specs()
                        .iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })
        }
        Ok(c) => candidates.push(c),
        Err(f) => failures.push(f),
    }
    };
    for dir in &search.dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut entries: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        entries.sort();
        for path in entries {
            let hidden = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'));
            if hidden {
                continue;
            }
            if path.is_dir() {
                // Any `skill.toml` makes a skill folder, even one that is a
                // link or a FIFO: loading it then says what is wrong.
                if std::fs::symlink_metadata(path.join("skill.toml")).is_ok() {
                    push(load_folder(&path, base, &mut schemas));
                } else if std::fs::symlink_metadata(path.join("SKILL.md")).is_ok() {
                    // An Agent Skills folder: instructions, no code.
                    push(load_instructions(&path));
                }
            } else if Language::from_path(&path).is_some()
                && let Some(r) = load_file(&path, base, &mut schemas)
            {
                push(r);
            }
        }
    }
    if search.builtin {
        for b in builtin::SKILLS {
            push(load_builtin(b, base));
        }
    }
    if let Some(path) = &search.checked_schemas
        && let Err(e) = schemas.save(path)
    {
        // Only the next start's speed depends on it.
        tracing::debug!(path = %path.display(), error = %e, "could not keep the checked tool schemas");
    }
    (candidates, failures)
}

fn fingerprint(
    manifest: &str,
    files: &BTreeMap<String, Arc<str>>,
    md: Option<&str>,
    resources: &[String],
) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    manifest.hash(&mut h);
    md.hash(&mut h);
    resources.hash(&mut h);
    for (k, v) in files {
        k.hash(&mut h);
        v.hash(&mut h);
    }
    h.finish()
}

/// Loads a folder skill: its manifest and every script file beneath it,
/// each read beneath the folder (see [`files`]). Tool schemas whose text
/// is in `schemas` are taken as checked.
pub fn load_folder(
    dir: &Path,
    base: &ScopeBase<'_>,
    schemas: &mut CheckedSchemas,
) -> Result<Candidate, SkillFailure> {
    let origin = Origin::Folder(dir.to_path_buf());
    let fail = |skill: Option<String>, error: String| SkillFailure {
        skill,
        origin: origin.clone(),
        error,
    };
    let folder = files::SkillDir::open(dir).map_err(|e| fail(None, e.to_string()))?;
    let manifest_path = dir.join("skill.toml");
    let text = folder
        .read(Path::new("skill.toml"))
        .map_err(|e| fail(None, e.to_string()))?;
    let manifest = SkillManifest::parse_with(&text, &manifest_path, None, base, schemas)
        .map_err(|e| fail(None, e.to_string()))?;
    let id = format!("{}@{}", manifest.name, manifest.version);
    let mut files = BTreeMap::new();
    let mut skipped = BTreeMap::new();
    collect_scripts(&folder, dir, Path::new(""), 0, &mut files, &mut skipped)
        .map_err(|e| fail(Some(id.clone()), e))?;
    let entry = rel_key(&manifest.entry);
    if let Some(reason) = skipped.get(&entry) {
        return Err(fail(Some(id), format!("entry script: {reason}")));
    }
    for reason in skipped.values() {
        tracing::warn!(skill = %id, "script left out: {reason}");
    }
    if !files.contains_key(&entry) {
        return Err(fail(
            Some(id),
            format!(
                "{}: entry script `{entry}` does not exist in {}",
                manifest_path.display(),
                dir.display()
            ),
        ));
    }
    // SKILL.md is optional. One that is there but cannot be read safely (a
    // link out of the folder, a FIFO, too large) fails the skill with the
    // reason: what the model is told must come from the skill itself.
    let md = match folder.read(Path::new("SKILL.md")) {
        Ok(t) => Some(t),
        Err(e) if e.is_not_found() => None,
        Err(e) => return Err(fail(Some(id), e.to_string())),
    };
    let md_path = dir.join("SKILL.md");
    let instructions = md
        .as_deref()
        .map(|t| keel_skill_md(t, &manifest.name, &md_path))
        .transpose()
        .map_err(|e| fail(Some(id.clone()), e))?;
    let resources = list_resources(&folder).map_err(|e| fail(Some(id), e))?;
    Ok(Candidate {
        source: Arc::new(SkillSource {
            origin,
            fingerprint: fingerprint(&text, &files, md.as_deref(), &resources),
            manifest_path,
            dir: dir.to_path_buf(),
            files,
            instructions,
            kind: SkillKind::Keel,
            resources,
        }),
        manifest: Arc::new(manifest),
    })
}

/// A keel skill's `SKILL.md`: it must parse (front matter and all), and a
/// `name` in it must be the manifest's. Its description, if any, is what
/// the agent's prompt lists; the manifest's otherwise.
fn keel_skill_md(text: &str, name: &str, path: &Path) -> Result<Instructions, String> {
    let at = |line: usize, message: &str| format!("{}:{line}: {message}", path.display());
    let i = Instructions::parse(text).map_err(|e| at(e.line, &e.message))?;
    if let Some(n) = &i.name
        && n != name
    {
        return Err(at(
            i.line_of("name"),
            &format!("`name: {n}` does not match the skill's name `{name}` in skill.toml"),
        ));
    }
    let problems: Vec<String> = i
        .problems_beside_manifest()
        .into_iter()
        .map(|p| at(p.line, &p.message))
        .collect();
    if !problems.is_empty() {
        return Err(problems.join("\n"));
    }
    Ok(i)
}

/// Loads an instructions skill: a folder with a `SKILL.md` and no
/// `skill.toml`. Its `SKILL.md` must follow the Agent Skills format (each
/// problem is reported as `SKILL.md:LINE: message`); its other files are
/// listed, not read.
pub fn load_instructions(dir: &Path) -> Result<Candidate, SkillFailure> {
    let origin = Origin::Folder(dir.to_path_buf());
    let md_path = dir.join("SKILL.md");
    let fail = |skill: Option<String>, error: String| SkillFailure {
        skill,
        origin: origin.clone(),
        error,
    };
    let folder_name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let folder = files::SkillDir::open(dir).map_err(|e| fail(None, e.to_string()))?;
    let text = folder
        .read(Path::new("SKILL.md"))
        .map_err(|e| fail(None, e.to_string()))?;
    let at = |line: usize, message: &str| format!("{}:{line}: {message}", md_path.display());
    let doc = Instructions::parse(&text).map_err(|e| fail(None, at(e.line, &e.message)))?;
    let problems = doc.problems(&folder_name);
    if !problems.is_empty() {
        let all: Vec<String> = problems.iter().map(|p| at(p.line, &p.message)).collect();
        return Err(fail(doc.name.clone(), all.join("\n")));
    }
    let (Some(name), Some(description)) = (doc.name.clone(), doc.description.clone()) else {
        return Err(fail(None, at(2, "missing `name` or `description`")));
    };
    let resources = list_resources(&folder).map_err(|e| fail(Some(name.clone()), e))?;
    let manifest = SkillManifest::instructions_only(name, description.trim().to_string());
    let files = BTreeMap::new();
    Ok(Candidate {
        source: Arc::new(SkillSource {
            origin,
            fingerprint: fingerprint("", &files, Some(&text), &resources),
            manifest_path: md_path,
            dir: dir.to_path_buf(),
            files,
            instructions: Some(doc),
            kind: SkillKind::Instructions,
            resources,
        }),
        manifest: Arc::new(manifest),
    })
}

/// Every file beneath a skill folder except `SKILL.md` and `skill.toml`,
/// by relative path: what `skills.read` may be asked for. Hidden entries
/// are left out and links are not followed into folders; at most
/// [`MAX_FILES`] entries, 8 folders deep.
fn list_resources(folder: &files::SkillDir) -> Result<Vec<String>, String> {
    fn walk(
        folder: &files::SkillDir,
        rel: &Path,
        depth: usize,
        out: &mut Vec<String>,
    ) -> Result<(), String> {
        if depth > 8 {
            return Ok(());
        }
        let entries = folder
            .read_dir(rel)
            .map_err(|e| format!("{}: {e}", rel.display()))?;
        for (name, ft) in entries {
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            let child = rel.join(&name);
            if ft.is_dir() {
                walk(folder, &child, depth + 1, out)?;
            } else {
                let key = rel_key(&child);
                if key != "SKILL.md" && key != "skill.toml" {
                    if out.len() >= MAX_FILES {
                        return Err(format!("more than {MAX_FILES} files in the skill folder"));
                    }
                    out.push(key);
                }
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(folder, Path::new(""), 0, &mut out)?;
    Ok(out)
}

fn rel_key(p: &Path) -> String {
    p.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// Reads every script beneath `rel` in the skill folder. Folders are
/// entered only when they are real folders (never through a link). A
/// script-named entry that is a link out of the folder, a FIFO, a device
/// or too large is left out, its reason kept in `skipped` (a `require` of
/// it then finds nothing; as the entry script it fails the skill).
fn collect_scripts(
    folder: &files::SkillDir,
    root: &Path,
    rel: &Path,
    depth: usize,
    out: &mut BTreeMap<String, Arc<str>>,
    skipped: &mut BTreeMap<String, String>,
) -> Result<(), String> {
    if depth > 8 {
        return Ok(());
    }
    let entries = folder
        .read_dir(rel)
        .map_err(|e| format!("{}: {e}", root.join(rel).display()))?;
    for (name, ft) in entries {
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let child = rel.join(&name);
        if ft.is_dir() {
            collect_scripts(folder, root, &child, depth + 1, out, skipped)?;
        } else if Language::from_path(&child).is_some() {
            if out.len() + skipped.len() >= MAX_FILES {
                return Err(format!(
                    "{}: more than {MAX_FILES} script files",
                    root.display()
                ));
            }
            match folder.read(&child) {
                Ok(text) => {
                    out.insert(rel_key(&child), Arc::from(text));
                }
                Err(e) => {
                    skipped.insert(rel_key(&child), e.to_string());
                }
            }
        }
    }
    Ok(())
}

/// Loads a one-file skill; `None` when the script has no manifest comment
/// (a helper file, not a skill).
pub fn load_file(
    path: &Path,
    base: &ScopeBase<'_>,
    schemas: &mut CheckedSchemas,
) -> Option<Result<Candidate, SkillFailure>> {
    let origin = Origin::File(path.to_path_buf());
    let text = match files::read_file(path) {
        Ok(t) => t,
        Err(e) => {
            return Some(Err(SkillFailure {
                skill: None,
                origin,
                error: e.to_string(),
            }));
        }
    };
    let language = Language::from_path(path)?;
    let manifest_text = manifest::extract_comment_manifest(&text, language)?;
    let file_name = PathBuf::from(path.file_name()?);
    Some(
        SkillManifest::parse_with(&manifest_text, path, Some(&file_name), base, schemas)
            .map_err(|e| SkillFailure {
                skill: None,
                origin: origin.clone(),
                error: e.to_string(),
            })
            .and_then(|m| {
                if m.entry != file_name {
                    return Err(SkillFailure {
                        skill: Some(format!("{}@{}", m.name, m.version)),
                        origin: origin.clone(),
                        error: format!(
                            "{}: a one-file skill's entry is the file itself; remove `entry`",
                            path.display()
                        ),
                    });
                }
                let mut files = BTreeMap::new();
                files.insert(rel_key(&file_name), Arc::from(text.as_str()));
                Ok(Candidate {
                    source: Arc::new(SkillSource {
                        fingerprint: fingerprint(&manifest_text, &files, None, &[]),
                        origin: origin.clone(),
                        manifest_path: path.to_path_buf(),
                        dir: path.parent().unwrap_or(Path::new(".")).to_path_buf(),
                        files,
                        instructions: None,
                        kind: SkillKind::Keel,
                        resources: Vec::new(),
                    }),
                    manifest: Arc::new(m),
                })
            }),
    )
}

fn load_builtin(
    b: &builtin::BuiltinSkill,
    base: &ScopeBase<'_>,
) -> Result<Candidate, SkillFailure> {
    let origin = Origin::Builtin(b.name.to_string());
    let manifest_path = PathBuf::from(format!("<builtin>/{}/skill.toml", b.name));
    let manifest = SkillManifest::parse_builtin(b.manifest, &manifest_path, base).map_err(|e| {
        SkillFailure {
            skill: None,
            origin: origin.clone(),
            error: e.to_string(),
        }
    })?;
    let files: BTreeMap<String, Arc<str>> = b
        .files
        .iter()
        .map(|(k, v)| (k.to_string(), Arc::from(*v)))
        .collect();
    let instructions = keel_skill_md(
        b.instructions,
        b.name,
        Path::new(&format!("<builtin>/{}/SKILL.md", b.name)),
    )
    .map_err(|error| SkillFailure {
        skill: Some(b.name.to_string()),
        origin: origin.clone(),
        error,
    })?;
    let resources: Vec<String> = files.keys().cloned().collect();
    Ok(Candidate {
        source: Arc::new(SkillSource {
            fingerprint: fingerprint(b.manifest, &files, Some(b.instructions), &resources),
            origin,
            manifest_path,
            dir: PathBuf::from(format!("<builtin>/{}", b.name)),
            files,
            instructions: Some(instructions),
            kind: SkillKind::Keel,
            resources,
        }),
        manifest: Arc::new(manifest),
    })
}
