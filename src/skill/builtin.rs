//! The skills compiled into the binary (`skills/` in the source tree).
//!
//! They are listed here by hand, with `include_str!`, so that a built-in
//! skill is one folder plus one entry in [`SKILLS`].

/// A built-in skill: its manifest and script files.
#[derive(Debug)]
pub struct BuiltinSkill {
    pub name: &'static str,
    pub manifest: &'static str,
    pub files: &'static [(&'static str, &'static str)],
}

#[allow(unused_macros)] // used as skills are listed in SKILLS
macro_rules! builtin {
    ($name:literal, [$($file:literal),* $(,)?]) => {
        BuiltinSkill {
            name: $name,
            manifest: include_str!(concat!("../../skills/", $name, "/skill.toml")),
            files: &[$(($file, include_str!(concat!("../../skills/", $name, "/", $file)))),*],
        }
    };
}

/// Every built-in skill.
pub const SKILLS: &[BuiltinSkill] = &[];
