//! Tool schemas are checked against the JSON Schema meta-schema once per
//! text, not at every start (`skill::checked_schemas`): an edited schema
//! is checked again and a broken one is still reported with `file:line`
//! and never served; `keel check` judges every schema afresh, whatever the
//! data directory's record says.

mod common;

use common::Ws;
use serde_json::json;

const GOOD: &str = r#"
[skill]
name = "notes"
version = "1.0.0"
description = "Keep notes"
entry = "main.luau"

[capabilities]
"fs.write" = ["./notes"]

[[tools]]
name = "add"
description = "Append a note"
parameters = { type = "object", properties = { text = { type = "string" } }, required = ["text"] }
"#;

const SRC: &str = r#"
local M = {}
function M.add(args)
  keel.fs.mkdir("./notes")
  keel.fs.append("./notes/all.md", tostring(args.text) .. "\n")
  return { ok = true }
end
return M
"#;

const POLICY: &str = "[policy]\ndefault = \"deny\"\nallow = [\"fs.write:./notes\"]\n";

/// `"string"` → `"strin"`: not a JSON Schema type.
fn broken() -> String {
    GOOD.replace("type = \"string\"", "type = \"strin\"")
}

/// The manifest line that declares tool `add` (what errors point at).
fn add_line(manifest: &str) -> usize {
    manifest
        .lines()
        .position(|l| l.contains("\"add\""))
        .expect("tool line")
        + 1
}

fn record(ws: &Ws) -> std::path::PathBuf {
    ws.data_dir().join("tool-schemas.checked")
}

#[test]
fn a_schema_edited_after_it_was_recorded_is_checked_again_and_never_served() {
    let ws = Ws::new()
        .skill("notes", GOOD, &[("main.luau", SRC)])
        .policy(POLICY);
    let out = ws.run(&["tools"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let kept = std::fs::read_to_string(record(&ws)).expect("the record is written");
    assert!(kept.contains("\"string\""), "{kept}");

    // One word changed in place: the recorded text no longer matches.
    ws.write("skills/notes/skill.toml", &broken());
    let out = ws.run(&["skills", "--json"]);
    let listed: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    let error = listed["failures"][0]["error"].as_str().unwrap_or_default();
    let at = format!("skill.toml:{}: tool `add`", add_line(&broken()));
    assert!(error.contains(&at), "{error}");
    assert!(error.contains("not a valid JSON Schema"), "{error}");
    ws.call("notes.add", json!({ "text": "x" }))
        .err_contains(&["not a valid JSON Schema"]);
    assert!(!ws.path("notes").exists(), "the broken skill's code ran");
    // The broken text was not recorded as checked.
    let kept = std::fs::read_to_string(record(&ws)).unwrap_or_default();
    assert!(!kept.contains("\"strin\""), "{kept}");

    // Mended: it loads again.
    ws.write("skills/notes/skill.toml", GOOD);
    assert_eq!(
        ws.call("notes.add", json!({ "text": "x" })).ok(),
        json!({ "ok": true })
    );
}

#[test]
fn keel_check_judges_the_schemas_not_the_record_of_them() {
    let ws = Ws::new()
        .skill("notes", &broken(), &[("main.luau", SRC)])
        .policy(POLICY);
    // A record that claims the broken schema was checked (someone with
    // write access to the data directory, or a bug).
    let schema = json!({
        "type": "object",
        "properties": { "text": { "type": "strin" } },
        "required": ["text"]
    });
    std::fs::create_dir_all(ws.data_dir()).expect("data dir");
    std::fs::write(
        record(&ws),
        format!(
            "keel {} checked tool schemas (one JSON text a line)\n{}\n",
            env!("CARGO_PKG_VERSION"),
            serde_json::to_string(&schema).expect("json")
        ),
    )
    .expect("forge");

    let out = ws.run(&["check"]);
    assert_ne!(out.status, 0, "{}\n{}", out.stdout, out.stderr);
    let all = format!("{}{}", out.stdout, out.stderr);
    let at = format!("skill.toml:{}: tool `add`", add_line(&broken()));
    assert!(all.contains(&at), "{all}");
    assert!(all.contains("not a valid JSON Schema"), "{all}");

    // Outside `keel check` the record is believed (that is its purpose),
    // but a call still compiles the schema, which refuses it: the script
    // never runs with arguments nothing checked.
    ws.call("notes.add", json!({ "text": "x" }))
        .err_contains(&["not a usable JSON Schema"]);
    assert!(!ws.path("notes").exists(), "the script ran");
}

#[test]
fn processes_starting_at_once_keep_a_whole_record() {
    let mut ws = Ws::new().policy(POLICY);
    for i in 0..8 {
        let manifest = GOOD
            .replace("name = \"notes\"", &format!("name = \"notes{i}\""))
            .replace("Append a note", &format!("Append note {i}"))
            .replace(
                "type = \"string\"",
                &format!("type = \"string\", maxLength = {i}"),
            );
        ws = ws.skill(&format!("notes{i}"), &manifest, &[("main.luau", SRC)]);
    }
    // Every process finds all eight schemas new and writes the record.
    let children: Vec<_> = (0..8)
        .map(|_| {
            ws.keel()
                .args(["tools"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = std::fs::read_to_string(record(&ws)).expect("record");
    let mut lines = text.lines();
    assert!(lines.next().is_some_and(|h| h.starts_with("keel ")));
    let mut n = 0;
    for l in lines {
        serde_json::from_str::<serde_json::Value>(l).expect("a whole JSON line");
        n += 1;
    }
    assert_eq!(n, 8, "{text}");
    let strays: Vec<_> = std::fs::read_dir(ws.data_dir())
        .expect("data dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tool-schemas"))
        .collect();
    assert!(strays.is_empty(), "temporary files left: {strays:?}");
}
