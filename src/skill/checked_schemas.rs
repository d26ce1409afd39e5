//! Tool schemas already found valid, so that a start does not check them
//! against the JSON Schema meta-schema again.
//!
//! Every `[[tools]]` `parameters` of a user skill is checked against the
//! meta-schema when its manifest is parsed, and a schema that fails makes
//! the skill fail with `file:line` at load and reload. Building the
//! meta-schema's validator is the costly part — about 1.5 ms and 1.5 MB
//! of a one-shot `keel ask` that offers no tool of the skill — and the
//! answer only changes when the schema does. So discovery keeps, in the
//! data directory, the exact text of each schema it found valid, and a
//! later start takes a schema whose text is there as checked. A schema
//! that is new or edited (any byte) is not there and is checked as before,
//! with the same error; `keel check` checks every schema again regardless
//! ([`crate::skill::SkillManifest::check_schemas`]).
//!
//! Invariants:
//! - the key is the schema's whole text, compared exactly: no hash, so no
//!   collision can make a broken schema pass for a checked one;
//! - only a schema this binary's validator accepted is ever written, and
//!   the file names the keel version that wrote it (another version's
//!   file is ignored: its validator may judge differently);
//! - the file is read as skill files are (never blocking on a FIFO, at
//!   most [`crate::skill::MAX_FILE_BYTES`]), and written to a fresh
//!   temporary file renamed over it, so readers see the old file or the
//!   new one, never a torn one; two processes writing at once lose at most
//!   an entry, which the next start checks again;
//! - anything wrong with the file (missing, unreadable, another version,
//!   a line that is not JSON) only means more checking, never an error.
//!
//! The file is trusted like the rest of the data directory (the grants
//! live there too): skills cannot write it (the data directory is a
//! protected path), and whoever can could grant themselves anything.

use std::collections::HashSet;
use std::io::Write as _;
use std::path::Path;

use serde_json::Value;

use super::MAX_FILE_BYTES;

/// The file's first line; a file with another is ignored.
fn header() -> String {
    format!(
        "keel {} checked tool schemas (one JSON text a line)",
        env!("CARGO_PKG_VERSION")
    )
}

/// The schemas known to be valid, and those met during this discovery.
#[derive(Debug, Default)]
pub struct CheckedSchemas {
    /// Texts read from the file.
    known: HashSet<String>,
    /// Texts met now (checked or known), in the order met: written first,
    /// so what the skills use now survives the size limit.
    met: Vec<String>,
    met_set: HashSet<String>,
    /// How many texts were checked now, not found in the file.
    fresh: usize,
}

impl CheckedSchemas {
    /// Nothing known: every schema is checked.
    pub fn new() -> Self {
        Self::default()
    }

    /// What the file at `path` holds. A missing or unusable file is an
    /// empty set (everything is checked, and the file is rewritten).
    pub fn load(path: &Path) -> Self {
        let mut set = Self::new();
        let Ok(text) = super::files::read_file(path) else {
            return set;
        };
        let mut lines = text.lines();
        if lines.next() != Some(header().as_str()) {
            return set;
        }
        set.known = lines
            .filter(|l| serde_json::from_str::<Value>(l).is_ok())
            .map(str::to_string)
            .collect();
        set
    }

    /// Checks `schema` against the JSON Schema meta-schema, unless its
    /// exact text is known to pass. The error is the validator's message.
    pub fn check(&mut self, schema: &Value) -> Result<(), String> {
        let Ok(text) = serde_json::to_string(schema) else {
            // Not expected for a `Value`; check it, remember nothing.
            return jsonschema::meta::validate(schema).map_err(|e| e.to_string());
        };
        if !self.known.contains(&text) && !self.met_set.contains(&text) {
            jsonschema::meta::validate(schema).map_err(|e| e.to_string())?;
            self.fresh += 1;
        }
        if self.met_set.insert(text.clone()) {
            self.met.push(text);
        }
        Ok(())
    }

    /// How many schemas were checked now rather than found in the file.
    pub fn fresh(&self) -> usize {
        self.fresh
    }

    /// Writes the set to `path` when something was checked now: the
    /// schemas met now, then those known before, up to the size limit.
    /// Written to a new file in the same folder and renamed over `path`.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        if self.fresh == 0 {
            return Ok(());
        }
        let mut out = header();
        out.push('\n');
        let older = self.known.iter().filter(|t| !self.met_set.contains(*t));
        for text in self.met.iter().chain(older) {
            if (out.len() + text.len() + 1) as u64 > MAX_FILE_BYTES {
                continue;
            }
            out.push_str(text);
            out.push('\n');
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // A new name each try, created exclusively: a file or link already
        // there is never written through.
        let mut attempt = 0u32;
        let (tmp, mut file) = loop {
            let tmp = dir.join(format!(
                ".{name}.{}.{}.{attempt}",
                std::process::id(),
                nanos()
            ));
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
            {
                Ok(f) => break (tmp, f),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 16 => {
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        };
        let written = file
            .write_all(out.as_bytes())
            .and_then(|()| std::fs::rename(&tmp, path));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }
}

fn nanos() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn good() -> Value {
        json!({ "type": "object", "properties": { "text": { "type": "string" } } })
    }

    #[test]
    fn a_known_text_is_taken_and_any_other_text_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("schemas");
        let mut s = CheckedSchemas::load(&path);
        s.check(&good()).unwrap();
        assert_eq!(s.fresh(), 1);
        s.save(&path).unwrap();

        let mut s = CheckedSchemas::load(&path);
        s.check(&good()).unwrap();
        assert_eq!(s.fresh(), 0, "the saved schema is known");
        // One byte different, and broken: checked, and refused.
        let bad = json!({ "type": "object", "properties": { "text": { "type": "strin" } } });
        let e = s.check(&bad).unwrap_err();
        assert!(e.contains("strin"), "{e}");
        assert_eq!(s.fresh(), 0);
    }

    #[test]
    fn a_broken_schema_is_never_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("schemas");
        let mut s = CheckedSchemas::new();
        let bad = json!({ "type": "object", "required": "text" });
        assert!(s.check(&bad).is_err());
        s.check(&good()).unwrap();
        s.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("required"), "{text}");
        let mut again = CheckedSchemas::load(&path);
        assert!(again.check(&bad).is_err(), "still checked, still refused");
    }

    #[test]
    fn a_file_from_another_version_or_with_a_forged_header_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("schemas");
        let bad = json!({ "type": "object", "required": "text" });
        let line = serde_json::to_string(&bad).unwrap();
        std::fs::write(
            &path,
            format!("keel 0.0.0-other checked tool schemas (one JSON text a line)\n{line}\n"),
        )
        .unwrap();
        assert!(CheckedSchemas::load(&path).check(&bad).is_err());
    }

    #[test]
    fn a_fifo_in_place_of_the_file_does_not_block_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("schemas");
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid C string; mkfifo only creates the node.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let mut s = CheckedSchemas::load(&path);
        s.check(&good()).unwrap();
        assert_eq!(s.fresh(), 1);
        // Saving replaces the FIFO with a file (rename), never writing into it.
        s.save(&path).unwrap();
        assert!(std::fs::symlink_metadata(&path).unwrap().is_file());
    }

    #[test]
    fn a_link_planted_at_the_file_is_replaced_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("victim");
        std::fs::write(&target, "precious").unwrap();
        let path = dir.path().join("schemas");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let mut s = CheckedSchemas::new();
        s.check(&good()).unwrap();
        s.save(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");
        assert!(std::fs::symlink_metadata(&path).unwrap().is_file());
    }

    #[test]
    fn the_file_stays_within_the_size_limit_and_keeps_what_is_used_now() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("schemas");
        // Old entries that fill the file: 200 schemas of ~8 KiB each.
        let pad = "x".repeat(8 * 1024);
        let mut s = CheckedSchemas::new();
        for i in 0..200 {
            s.check(&json!({ "type": "object", "description": format!("{i}{pad}") }))
                .unwrap();
        }
        s.save(&path).unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() <= MAX_FILE_BYTES);
        let mut s = CheckedSchemas::load(&path);
        s.check(&good()).unwrap();
        assert_eq!(s.fresh(), 1);
        s.save(&path).unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() <= MAX_FILE_BYTES);
        let mut s = CheckedSchemas::load(&path);
        s.check(&good()).unwrap();
        assert_eq!(s.fresh(), 0, "what is used now is kept first");
    }

    #[test]
    fn many_threads_saving_at_once_never_leave_a_torn_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("schemas");
        std::thread::scope(|scope| {
            for t in 0..8 {
                let path = &path;
                scope.spawn(move || {
                    for i in 0..20 {
                        let mut s = CheckedSchemas::load(path);
                        s.check(&json!({ "type": "object", "description": format!("{t}-{i}") }))
                            .unwrap();
                        s.save(path).unwrap();
                        // Whatever another thread wrote, the file is whole.
                        let text = std::fs::read_to_string(path).unwrap();
                        let mut lines = text.lines();
                        assert_eq!(lines.next(), Some(header().as_str()));
                        for l in lines {
                            serde_json::from_str::<Value>(l).unwrap();
                        }
                    }
                });
            }
        });
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name() != "schemas")
            .collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    }
}
