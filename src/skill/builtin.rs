//! The skills compiled into the binary (`skills/` in the source tree).
//!
//! They are listed here by hand, with `include_str!`, so that a built-in
//! skill is one folder plus one entry in [`SKILLS`].

/// A built-in skill: its manifest and script files.
#[derive(Debug)]
pub struct BuiltinSkill {
    pub name: &'static str,
    pub manifest: &'static str,
    /// `SKILL.md`: what the agent is told about the skill.
    pub instructions: &'static str,
    pub files: &'static [(&'static str, &'static str)],
}

macro_rules! builtin {
    ($name:literal, [$($file:literal),* $(,)?]) => {
        BuiltinSkill {
            name: $name,
            manifest: include_str!(concat!("../../skills/", $name, "/skill.toml")),
            instructions: include_str!(concat!("../../skills/", $name, "/SKILL.md")),
            files: &[$(($file, include_str!(concat!("../../skills/", $name, "/", $file)))),*],
        }
    };
}

/// Every built-in skill.
pub const SKILLS: &[BuiltinSkill] = &[
    builtin!("calc", ["main.rhai"]),
    builtin!("files", ["main.luau"]),
    builtin!("git", ["main.luau"]),
    builtin!("shell", ["main.rhai"]),
    builtin!("web", ["main.luau"]),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_manifest_parses_and_names_its_folder() {
        let ws = std::env::temp_dir();
        for b in SKILLS {
            let m = crate::skill::SkillManifest::parse(
                b.manifest,
                std::path::Path::new(b.name),
                None,
                &crate::paths::scope_base(&ws),
            )
            .unwrap_or_else(|e| panic!("{}: {e}", b.name));
            assert_eq!(m.name, b.name);
            assert!(
                b.files
                    .iter()
                    .any(|(f, _)| std::path::Path::new(f) == m.entry)
            );
        }
    }
}
