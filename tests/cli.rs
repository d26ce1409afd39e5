//! The command line: list commands, check, grants, audit, scaffolding, the
//! console over a pipe, and clear errors for bad input that change nothing.

mod common;

use std::io::Write;

use common::Ws;
use serde_json::{Value, json};

const NOTES: &str = r#"
[skill]
name = "notes"
version = "1.2.0"
description = "Keep short notes in ./notes"
entry = "main.luau"

[capabilities]
"fs.read" = ["./notes"]
"fs.write" = ["./notes"]
"kv" = true

[[tools]]
name = "add"
description = "Append a note"
parameters = { type = "object", properties = { text = { type = "string" } }, required = ["text"] }
"#;

const NOTES_SRC: &str = r#"
local M = {}
function M.add(args)
  keel.fs.mkdir("./notes")
  keel.fs.append("./notes/all.md", args.text .. "\n")
  local n = (keel.kv.get("count") or 0) + 1
  keel.kv.set("count", n)
  return { count = n }
end
return M
"#;

const POLICY: &str = r#"
[policy]
default = "deny"
allow = ["fs.read:./notes", "fs.write:./notes", "kv"]
"#;

fn ws() -> Ws {
    Ws::new()
        .skill("notes", NOTES, &[("main.luau", NOTES_SRC)])
        .policy(POLICY)
}

#[test]
fn list_commands_print_one_json_document() {
    let ws = ws();
    let out = ws.run(&["tools", "--json"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let tools: Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(tools[0]["name"], "notes.add");
    assert_eq!(tools[0]["parameters"]["required"], json!(["text"]));
    let skills: Value = serde_json::from_str(&ws.run(&["skills", "--json"]).stdout).expect("JSON");
    assert_eq!(skills["skills"][0]["name"], "notes");
    assert_eq!(
        skills["skills"][0]["capabilities"],
        json!(["fs.read:./notes", "fs.write:./notes", "kv"])
    );
    assert_eq!(skills["failures"], json!([]));
}

#[test]
fn call_prints_json_and_persists_state() {
    let ws = ws();
    assert_eq!(
        ws.call("notes.add", json!({"text": "a"})).ok(),
        json!({"count": 1})
    );
    assert_eq!(
        ws.call("notes.add", json!({"text": "b"})).ok(),
        json!({"count": 2})
    );
    assert_eq!(
        std::fs::read_to_string(ws.path("notes/all.md")).unwrap(),
        "a\nb\n"
    );
    // Default arguments are {}.
    ws.run(&["call", "notes.add"]).err_contains(&[
        "invalid arguments for `notes.add`",
        "\"text\" is a required property",
    ]);
}

#[test]
fn the_audit_log_records_allowed_and_denied_effects() {
    let ws = ws().policy(
        "[policy]\ndefault = \"deny\"\nallow = [\"fs.read:./notes\", \"fs.write:./notes\"]\n",
    );
    ws.call("notes.add", json!({"text": "a"})).err_contains(&[
        "`kv`",
        "denied for skill `notes`",
        "policy default `deny`",
    ]);
    let out = ws.run(&["audit", "--json", "--limit", "10"]);
    let log: Vec<Value> = serde_json::from_str(&out.stdout).expect("JSON");
    let decisions: Vec<(String, String)> = log
        .iter()
        .map(|r| {
            (
                r["capability"].as_str().unwrap().into(),
                r["decision"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(
        decisions.contains(&("kv".into(), "deny".into())),
        "{decisions:?}"
    );
    assert!(
        decisions.contains(&("fs.write".into(), "allow".into())),
        "{decisions:?}"
    );
    assert!(
        log.iter()
            .all(|r| r["skill"] == "notes" && r["tool"] == "notes.add")
    );
    assert_eq!(
        ws.run(&["audit", "--json", "--limit", "1"])
            .stdout
            .matches("\"id\"")
            .count(),
        1
    );
}

#[test]
fn grant_and_revoke_answer_ask_and_persist() {
    let ws = ws().policy(
        "[policy]\ndefault = \"ask\"\nallow = [\"fs.read:./notes\", \"fs.write:./notes\"]\n",
    );
    ws.call("notes.add", json!({"text": "a"})).err_contains(&[
        "needs approval",
        "nobody can answer here",
        "keel grant notes kv",
    ]);
    assert_eq!(ws.run(&["grant", "notes", "kv"]).status, 0);
    assert_eq!(
        ws.call("notes.add", json!({"text": "a"})).ok(),
        json!({"count": 1})
    );
    let grants: Value = serde_json::from_str(&ws.run(&["grants", "--json"]).stdout).unwrap();
    assert_eq!(grants[0]["capability"], "kv");
    assert_eq!(ws.run(&["revoke", "notes", "kv"]).status, 0);
    ws.call("notes.add", json!({"text": "a"}))
        .err_contains(&["needs approval"]);
    ws.run(&["revoke", "notes", "kv"])
        .err_contains(&["has no grant `kv`"]);
    ws.run(&["grant", "notes", "fs.raed:./x"])
        .err_contains(&["did you mean `fs.read`"]);
    // A deny in policy beats a grant.
    let ws2 = ws
        .policy("[policy]\ndeny = [\"kv\"]\nallow = [\"fs.read:./notes\", \"fs.write:./notes\"]\n");
    assert_eq!(ws2.run(&["grant", "notes", "kv"]).status, 0);
    ws2.call("notes.add", json!({"text": "a"}))
        .err_contains(&["policy deny `kv`"]);
}

#[test]
fn check_compiles_and_reports_file_and_line() {
    let ws = ws();
    let out = ws.run(&["check"]);
    assert_eq!(out.status, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("ok notes@1.2.0 (luau, 1 tool)"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("kv") && out.stdout.contains("allow (policy allow `kv`)"),
        "{}",
        out.stdout
    );
    ws.write(
        "skills/notes/main.luau",
        "local M = {}\nfunction M.add(\nreturn M\n",
    );
    let out = ws.run(&["check"]);
    assert_eq!(out.status, 1);
    assert!(
        out.stdout.contains("skills/notes/main.luau:3:"),
        "{}",
        out.stdout
    );
    ws.write(
        "skills/broken/skill.toml",
        "[skill]\nname = \"broken\"\nversion = \"x\"\nentry = \"m.luau\"\n",
    );
    let out = ws.run(&["check", "skills/broken"]);
    assert_eq!(out.status, 1);
    assert!(
        out.stdout
            .contains("skills/broken/skill.toml:3: invalid version `x`"),
        "{}",
        out.stdout
    );
}

#[test]
fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let ws = ws();
    assert_eq!(
        ws.call("notes.add", json!({"text": "keep"})).ok(),
        json!({"count": 1})
    );
    // Malformed JSON arguments.
    ws.run(&["call", "notes.add", "{text:"])
        .err_contains(&["not valid JSON"]);
    // Schema violation.
    ws.call("notes.add", json!({"text": 5}))
        .err_contains(&["/text: 5 is not of type \"string\""]);
    // Unknown tool, with a suggestion.
    ws.call("notes.ad", json!({}))
        .err_contains(&["no tool `notes.ad`", "did you mean `notes.add`"]);
    // Malformed keel.toml, unknown capability in policy.
    std::fs::write(ws.path("keel.toml"), "[policy\n").unwrap();
    ws.call("notes.add", json!({"text": "x"}))
        .err_contains(&["keel.toml:1"]);
    std::fs::write(
        ws.path("keel.toml"),
        "[policy]\nallow = [\"fs.wirte:./notes\"]\n",
    )
    .unwrap();
    ws.call("notes.add", json!({"text": "x"}))
        .err_contains(&["fs.wirte", "did you mean `fs.write`"]);
    // A broken manifest, an unknown capability, invalid semver: the skill
    // fails alone, with file and line.
    let ws = ws.policy(POLICY);
    ws.write("skills/bad1/skill.toml", "[skill]\nname = \"bad1\"\nversion = \"1.0.0\"\nentry = \"m.luau\"\n[capabilities]\n\"fs.reed\" = [\"./x\"]\n");
    ws.write("skills/bad1/m.luau", "return {}");
    ws.write(
        "skills/bad2/skill.toml",
        "[skill]\nname = \"bad2\"\nversion = \"1.0\"\nentry = \"m.luau\"\n",
    );
    ws.write("skills/bad3/skill.toml", "[skill\nname = \"bad3\"\n");
    let out = ws.run(&["skills"]);
    assert_eq!(out.status, 1);
    assert!(
        out.stdout
            .contains("bad1/skill.toml:6: unknown capability `fs.reed` (did you mean `fs.read`?)"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("bad2/skill.toml:3: invalid version `1.0`"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("bad3/skill.toml:1:"), "{}", out.stdout);
    // Nothing else changed: the good skill still serves, with its data.
    assert_eq!(
        ws.call("notes.add", json!({"text": "again"})).ok(),
        json!({"count": 2})
    );
    assert_eq!(
        std::fs::read_to_string(ws.path("notes/all.md")).unwrap(),
        "keep\nagain\n"
    );
}

#[test]
fn skill_new_scaffolds_a_working_skill_in_each_language() {
    let ws = Ws::new().policy("");
    for (name, lang) in [("hello-lua", "luau"), ("hello-rhai", "rhai")] {
        let out = ws.run(&["skill", "new", name, "--lang", lang]);
        assert_eq!(out.status, 0, "{}", out.stderr);
        let r = ws
            .call(&format!("{name}.hello"), json!({"name": "world"}))
            .ok();
        assert_eq!(r, json!({"greeting": "Hello, world!"}));
        // The agent is told about it: the scaffold's SKILL.md is listed in
        // the prompt and given on activation.
        let md = std::fs::read_to_string(ws.path(&format!("skills/{name}/SKILL.md"))).unwrap();
        assert!(md.starts_with(&format!("---\nname: {name}\n")), "{md}");
    }
    let rt = common::runtime();
    let set = ws.kernel(&rt).skills();
    let prompt = keel::agent::prompt::system_prompt(None, "/ws", &set);
    assert!(
        prompt.contains("- hello-rhai: Describe when the agent should use hello-rhai."),
        "{prompt}"
    );
    let body = keel::tool::native::activate(&set, "hello-rhai").unwrap();
    assert!(
        body.contains("`hello-rhai.hello {name}` greets someone"),
        "{body}"
    );
    ws.run(&["skill", "new", "hello-lua"])
        .err_contains(&["already exists"]);
    ws.run(&["skill", "new", "Bad Name"])
        .err_contains(&["not a valid skill name"]);
}

#[test]
fn the_console_runs_commands_from_a_pipe() {
    let ws = ws();
    let out = piped_console(
        &ws,
        "/tools\n/call notes.add {\"text\": \"from console\"}\n/call notes.add {bad\n/skils\n\
         /grant notes exec:git\n/grants\n/audit 2\n/help\n/quit\n",
    );
    // Two commands failed: said on standard error, and exit status 1.
    assert_eq!(out.status.code(), Some(1));
    let errors = String::from_utf8_lossy(&out.stderr);
    for want in ["arguments are not valid JSON", "did you mean /skills?"] {
        assert!(errors.contains(want), "stderr lacks {want:?}:\n{errors}");
    }
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "notes.add",
        "\"count\": 1",
        "granted notes exec:git",
        "exec:git",
        "allow",
        "/reload",
    ] {
        assert!(
            text.contains(want),
            "console output lacks {want:?}:\n{text}"
        );
    }
}

#[test]
fn version_and_help() {
    let ws = Ws::new();
    let out = ws.run(&["--version"]);
    assert!(out.stdout.starts_with("keel "), "{}", out.stdout);
    let out = ws.run(&["help"]);
    assert!(
        out.stdout.contains("call") && out.stdout.contains("skills"),
        "{}",
        out.stdout
    );
}

#[test]
fn one_file_skills_in_scripts_carry_their_manifest_in_a_comment() {
    let ws = Ws::new()
        .file(
            "scripts/shout.luau",
            "-- [skill]\n-- name = \"shout\"\n-- version = \"0.1.0\"\n-- description = \"Upper-cases\"\n-- [[tools]]\n-- name = \"up\"\n-- description = \"Upper-case a text\"\n-- parameters = { type = \"object\", properties = { s = { type = \"string\" } }, required = [\"s\"] }\nlocal M = {}\nfunction M.up(a) return string.upper(a.s) end\nreturn M\n",
        )
        .file(
            "scripts/twice.rhai",
            "// [skill]\n// name = \"twice\"\n// version = \"0.1.0\"\n// [[tools]]\n// name = \"double\"\n// description = \"Doubles a number\"\nfn double(a) { a.n * 2 }\n",
        )
        // A helper script without a manifest is not a skill.
        .file("scripts/helper.luau", "return {}\n")
        .policy("");
    assert_eq!(ws.call("shout.up", json!({"s": "hi"})).ok(), json!("HI"));
    assert_eq!(ws.call("twice.double", json!({"n": 21})).ok(), json!(42));
    let out = ws.run(&["skills"]);
    assert_eq!(out.status, 0, "{}", out.stdout);
    assert!(!out.stdout.contains("helper"), "{}", out.stdout);
    // A broken comment manifest names the script's own line.
    ws.write(
        "scripts/bad.luau",
        "-- [skill]\n-- name = \"bad\"\n-- version = \"one\"\nreturn {}\n",
    );
    let out = ws.run(&["skills"]);
    assert!(
        out.stdout
            .contains("scripts/bad.luau:3: invalid version `one`"),
        "{}",
        out.stdout
    );
}

#[test]
fn skills_shows_scripts_that_do_not_compile_with_file_and_line() {
    let ws = ws();
    ws.write(
        "skills/notes/main.luau",
        "local M = {}\nfunction M.add(a)\n  return a +\nend\nreturn M\n",
    );
    let out = ws.run(&["skills"]);
    assert_eq!(out.status, 1, "{}", out.stdout);
    assert!(
        out.stdout.contains("FAILED notes@1.2.0")
            && out.stdout.contains("skills/notes/main.luau:4"),
        "{}",
        out.stdout
    );
    let json: Value = serde_json::from_str(&ws.run(&["skills", "--json"]).stdout).unwrap();
    assert_eq!(json["skills"], json!([]));
    assert!(
        json["failures"][0]["error"]
            .as_str()
            .unwrap()
            .contains("main.luau:4"),
        "{json}"
    );
}

/// With no model configured, `keel ask` says how to configure one and
/// points out a local OpenAI-compatible server on Ollama's usual port,
/// with the models it serves.
#[test]
fn without_a_model_keel_finds_a_local_server_and_says_how_to_use_it() {
    let Ok(listener) = std::net::TcpListener::bind("127.0.0.1:11434") else {
        eprintln!("port 11434 is taken here (a real Ollama?); nothing to prove");
        return;
    };
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        // Bounded: the probe connects twice (port check, then /v1/models).
        listener.set_nonblocking(true).unwrap();
        let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut served = 0;
        while served < 2 && std::time::Instant::now() < until {
            let Ok((mut s, _)) = listener.accept() else {
                std::thread::sleep(std::time::Duration::from_millis(10));
                continue;
            };
            served += 1;
            s.set_nonblocking(false).unwrap();
            s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
                .unwrap();
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).unwrap_or(0);
            if n > 0 {
                let body = r#"{"object":"list","data":[{"id":"qwen2.5:7b","object":"model"}]}"#;
                let _ = write!(
                    s,
                    "HTTP/1.0 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
            }
        }
    });
    let ws = Ws::new().policy("");
    let out = ws.keel().args(["ask", "hello"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("no model is configured"), "{err}");
    assert!(
        err.contains("found Ollama at http://127.0.0.1:11434/v1 (models: qwen2.5:7b)")
            && err.contains("OPENAI_BASE_URL=http://127.0.0.1:11434/v1 OPENAI_MODEL=qwen2.5:7b"),
        "{err}"
    );
    server.join().unwrap();
}

/// Run from a subfolder, keel finds the nearest keel.toml upward (as cargo
/// does): its policy, its skills, its workspace. `keel skill new` from
/// anywhere in the workspace, `skills/` included, scaffolds into the
/// workspace's skill folder, never `skills/skills/…`.
#[test]
fn keel_finds_its_workspace_from_a_subfolder() {
    let ws = ws();
    std::fs::create_dir_all(ws.path("deep/er")).unwrap();
    let in_dir = |dir: &str, args: &[&str]| {
        let out = ws
            .keel()
            .current_dir(ws.path(dir))
            .args(args)
            .output()
            .expect("run keel");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // The policy (fs.write:./notes) and the notes skill are the workspace's;
    // `./notes` is the workspace's too, not `deep/er/notes`.
    let (code, out, err) = in_dir("deep/er", &["call", "notes.add", r#"{"text":"hi"}"#]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        std::fs::read_to_string(ws.path("notes/all.md")).unwrap(),
        "hi\n"
    );
    assert!(!ws.path("deep/er/notes").exists());

    let (code, out, err) = in_dir("deep/er", &["skill", "new", "from-deep"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(ws.path("skills/from-deep/skill.toml").is_file(), "{out}");
    let (code, out, err) = in_dir("skills", &["skill", "new", "from-skills"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(ws.path("skills/from-skills/skill.toml").is_file(), "{out}");
    assert!(!ws.path("skills/skills").exists());
    let (code, out, _) = in_dir("deep", &["skills"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("from-deep") && out.contains("from-skills"),
        "{out}"
    );
}

/// Without a keel.toml anywhere above, a run inside `ws/skills/x` is a run
/// in `ws`: `keel skill new` there does not nest `skills/skills/…`.
#[test]
fn without_a_keel_toml_the_skills_folder_s_parent_is_the_workspace() {
    let ws = Ws::new();
    std::fs::create_dir_all(ws.path("skills/inner")).unwrap();
    let out = ws
        .keel()
        .current_dir(ws.path("skills/inner"))
        .args(["skill", "new", "nested"])
        .output()
        .expect("run keel");
    assert!(out.status.success(), "{out:?}");
    assert!(ws.path("skills/nested/skill.toml").is_file());
}

/// A keel.toml above the workspace that another user owns (anyone can put
/// one in /tmp) is refused, with what to do; one of the user's own, nearer,
/// wins without looking further. Needs root to make a file another user
/// owns: CI runs as root.
#[test]
fn a_keel_toml_someone_else_owns_is_refused() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "not root: cannot create a file another user owns; this test runs under CI (root)"
        );
        return;
    }
    let top = tempfile::tempdir().unwrap();
    let theirs = top.path().join("keel.toml");
    std::fs::write(&theirs, "[policy]\nallow = [\"exec:*\"]\n").unwrap();
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
    let below = top.path().join("project");
    std::fs::create_dir_all(&below).unwrap();
    let run = |dir: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_keel"))
            .current_dir(dir)
            .env("KEEL_DATA_DIR", top.path().join(".data"))
            .arg("skills")
            .output()
            .expect("run keel")
    };
    let out = run(&below);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("owned by another user (uid 65534)") && err.contains("--config"),
        "{err}"
    );
    std::fs::write(below.join("keel.toml"), "").unwrap();
    let out = run(&below);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `keel help COMMAND` and `keel COMMAND --help` show the command with an
/// example; `keel --help` says that bare `keel` opens the console and where
/// the data dir is; a mistyped command gets "did you mean" and exit 2;
/// `keel call TOOL -` reads the arguments from standard input.
#[test]
fn help_examples_suggestions_and_arguments_from_stdin() {
    let ws = ws();
    for args in [&["help", "call"][..], &["call", "--help"]] {
        let out = ws.run(args);
        assert_eq!(out.status, 0, "{}", out.stderr);
        assert!(
            out.stdout.contains("Usage: keel call") && out.stdout.contains("Example:\n  keel call"),
            "{}",
            out.stdout
        );
    }
    let out = ws.run(&["--help"]);
    assert!(
        out.stdout.contains("`keel` alone opens the console")
            && out.stdout.contains(&ws.data_dir().display().to_string()),
        "{}",
        out.stdout
    );
    let out = ws.run(&["skils"]);
    assert_eq!(out.status, 2);
    assert!(out.stderr.contains("'skills'"), "{}", out.stderr);

    let mut child = ws
        .keel()
        .args(["call", "notes.add", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"text": "from stdin"}"#)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        std::fs::read_to_string(ws.path("notes/all.md")).unwrap(),
        "from stdin\n"
    );
}

/// `keel tools` shows each tool's parameters (`?` for optional ones), with
/// control characters in a description escaped.
#[test]
fn tools_show_their_parameters() {
    let out = ws().run(&["tools"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("notes.add(text: string)  Append a note"),
        "{}",
        out.stdout
    );
    // The built-ins (on by default) have optional parameters.
    let out = Ws::new().run(&["tools"]);
    assert!(
        out.stdout
            .contains("files.read(max_bytes?: integer, path: string)"),
        "{}",
        out.stdout
    );
}

/// Fed from a pipe, the console writes a failed command's error to
/// standard error and exits 1 at the end; advice names the console's own
/// commands (`/tools`, `/grant`), not the CLI's.
#[test]
fn the_piped_console_reports_failures_on_stderr_and_in_its_status() {
    let ws = ws();
    let out = piped_console(&ws, "/call notes.nope {}\n/tools\n/bogus\n");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("no tool `notes.nope`") && stderr.contains("see `/tools`"),
        "{stderr}"
    );
    assert!(stderr.contains("unknown command /bogus"), "{stderr}");
    assert!(stdout.contains("notes.add(text: string)"), "{stdout}");
    assert!(!stdout.contains("no tool"), "{stdout}");
    // All good: exit 0.
    assert!(piped_console(&ws, "/tools\n").status.success());
}

/// The console fed `input` on standard input, to its end.
fn piped_console(ws: &Ws, input: &str) -> std::process::Output {
    let mut child = ws
        .keel()
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn console");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write");
    child.wait_with_output().expect("console exits")
}

/// `keel check PATH` checks a skill folder, a one-file skill or a folder of
/// skills outside the workspace's skill folders too, without accepting
/// anything in this workspace; a path with no skills fails (exit 1).
#[test]
fn check_takes_a_path_outside_the_search_path_and_fails_on_nothing() {
    let ws = ws();
    let outside = tempfile::tempdir().unwrap();
    let good = outside.path().join("good");
    std::fs::create_dir_all(&good).unwrap();
    std::fs::write(
        good.join("skill.toml"),
        "[skill]\nname = \"good\"\nversion = \"1.0.0\"\nentry = \"main.luau\"\n[[tools]]\nname = \"t\"\ndescription = \"d\"\n",
    )
    .unwrap();
    std::fs::write(
        good.join("main.luau"),
        "return { t = function() return 1 end }\n",
    )
    .unwrap();
    let bad = outside.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(
        bad.join("skill.toml"),
        "[skill]\nname = \"bad\"\nversion = \"1.0.0\"\nentry = \"main.luau\"\n[[tools]]\nname = \"t\"\ndescription = \"d\"\n",
    )
    .unwrap();
    std::fs::write(bad.join("main.luau"), "return {\n").unwrap();
    let empty = outside.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();

    let out = ws.run(&["check", &good.display().to_string()]);
    assert_eq!(out.status, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("ok good@1.0.0 (luau, 1 tool)"),
        "{}",
        out.stdout
    );
    assert!(
        !out.stdout.contains("bad"),
        "only the path asked: {}",
        out.stdout
    );

    let out = ws.run(&["check", &outside.path().display().to_string()]);
    assert_eq!(out.status, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("ok good@1.0.0") && out.stdout.contains("main.luau:2"),
        "{}",
        out.stdout
    );

    ws.run(&["check", &empty.display().to_string()])
        .err_contains(&["no skills found in", "skill.toml or SKILL.md"]);
    // Nothing was accepted here: the workspace's skills are as before.
    let skills = ws.run(&["skills"]);
    assert!(!skills.stdout.contains("good"), "{}", skills.stdout);
}

/// The console cuts a long `/call` result (40 lines, 8 KiB) and says how to
/// see it whole; `/last` shows it whole.
#[test]
fn the_console_cuts_long_results_and_last_shows_them_whole() {
    let ws = Ws::new()
        .skill(
            "big",
            "[skill]\nname = \"big\"\nversion = \"1.0.0\"\nentry = \"main.luau\"\n[[tools]]\nname = \"list\"\ndescription = \"many\"\n",
            &[(
                "main.luau",
                "return { list = function() local t = {} for i = 1, 100 do t[i] = 'item' .. i end return t end }\n",
            )],
        )
        .policy("");
    let out = piped_console(&ws, "/call big.list\n/last\n");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let (first, last) = text.split_once("ms)\n").expect("the call's time line");
    // The opening bracket is the first of the 40 lines.
    assert!(
        first.contains("\"item39\"") && !first.contains("\"item40\""),
        "{first}"
    );
    assert!(first.contains("/last shows it whole"), "{first}");
    assert!(last.contains("\"item100\""), "{last}");
}
