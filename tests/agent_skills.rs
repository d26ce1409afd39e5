//! Agent Skills (the open `SKILL.md` format) through the real binary and
//! the real agent: a collection in the shape of anthropics/skills is
//! listed, checked and hot-reloaded; malformed ones are reported with file
//! and line; the model sees names and descriptions only, activates a skill
//! to get its body, reads its files on demand and nothing outside it.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::agent::{Harness, model_table};
use common::model::{FakeModel, Reply, Wire};
use common::{Ws, runtime};
use keel::kernel::{KernelEvent, ReloadOutcome};
use serde_json::{Value, json};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/agent-skills");

/// Copies a folder recursively (files keep their bytes and modes).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// A workspace with the fixtures' `which` folder (`skills` or
/// `malformed`) copied into `./skills`, built-ins on.
fn collection(which: &str, toml: &str) -> Ws {
    let ws = Ws::new().policy(&format!("[skills]\n{toml}"));
    copy_dir(&Path::new(FIXTURES).join(which), &ws.path("skills"));
    ws
}

fn skills_json(ws: &Ws) -> (i32, Value) {
    let out = ws.run(&["skills", "--json"]);
    let v = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    (out.status, v)
}

fn skill<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["skills"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("{name} not listed: {v:#}"))
}

#[test]
fn a_collection_is_listed_with_its_kind_and_checked() {
    let ws = collection("skills", "");
    let (status, v) = skills_json(&ws);
    assert_eq!(status, 0, "{v:#}");
    let pdf = skill(&v, "pdf");
    assert_eq!(pdf["kind"], "instructions");
    assert_eq!(
        pdf["license"],
        "Proprietary. LICENSE.txt has complete terms"
    );
    assert!(
        pdf["description"]
            .as_str()
            .unwrap()
            .starts_with("Comprehensive PDF")
    );
    let files: Vec<&str> = pdf["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert_eq!(
        files,
        [
            "LICENSE.txt",
            "forms.md",
            "reference.md",
            "scripts/check_fillable_fields.sh",
            "scripts/fill_form.py"
        ]
    );
    let brand = skill(&v, "brand-guidelines");
    assert_eq!(
        brand["metadata"],
        json!({"author": "example-org", "version": "1.0"})
    );
    let web = skill(&v, "webapp-testing");
    assert_eq!(web["allowed_tools"], json!(["Bash(python3:*)", "Read"]));
    assert_eq!(
        web["compatibility"],
        "Requires python3 and a local web server"
    );
    // A folded description is one paragraph.
    assert!(web["description"].as_str().unwrap().starts_with(
        "Toolkit for interacting with and testing local web applications: start a server"
    ));
    // CRLF line ends and a byte-order mark are read.
    assert_eq!(skill(&v, "windows-notes")["kind"], "instructions");
    // keel's own skills are the other kind.
    assert_eq!(skill(&v, "calc")["kind"], "keel");
    assert_eq!(v["failures"], json!([]));

    let text = ws.run(&["skills"]);
    assert_eq!(text.status, 0, "{}", text.stderr);
    let line = text
        .stdout
        .lines()
        .find(|l| l.starts_with("webapp-testing "))
        .unwrap_or_else(|| panic!("{}", text.stdout));
    assert!(line.contains(" md ") && line.contains("3 files"), "{line}");
    assert!(
        line.contains("allowed-tools, shown only, grants nothing: Bash(python3:*) Read"),
        "{line}"
    );

    let check = ws.run(&["check"]);
    assert_eq!(check.status, 0, "{}\n{}", check.stdout, check.stderr);
    assert!(
        check.stdout.contains("ok pdf (instructions, 5 files)"),
        "{}",
        check.stdout
    );
    assert!(
        check
            .stdout
            .contains("allowed-tools: Bash(python3:*) Read (shown only: keel grants nothing"),
        "{}",
        check.stdout
    );
    // `keel check PATH` narrows to one skill folder.
    let one = ws.run(&["check", "skills/pdf"]);
    assert_eq!(one.status, 0);
    assert!(
        one.stdout.contains("ok pdf") && !one.stdout.contains("brand"),
        "{}",
        one.stdout
    );
}

#[test]
fn malformed_skills_are_reported_with_file_and_line_never_dropped() {
    let ws = collection("malformed", "");
    let (status, v) = skills_json(&ws);
    assert_eq!(status, 1, "{v:#}");
    let failures = v["failures"].as_array().unwrap();
    let error_of = |folder: &str| -> String {
        failures
            .iter()
            .find(|f| {
                f["origin"]["path"]
                    .as_str()
                    .is_some_and(|p| p.ends_with(&format!("skills/{folder}")))
            })
            .unwrap_or_else(|| panic!("{folder} not reported: {v:#}"))["error"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let md = |folder: &str, line: usize| format!("skills/{folder}/SKILL.md:{line}: ");
    let cases = [
        ("Bad_Name", 2, "invalid name `Bad_Name`"),
        (
            "wrong-folder",
            3,
            "`name: other-name` does not match its folder `wrong-folder`",
        ),
        ("no-description", 2, "missing `description`"),
        (
            "long-description",
            3,
            "1099 characters; the format allows at most 1024",
        ),
        ("bad-yaml", 4, "not valid YAML"),
        ("no-front-matter", 1, "no front matter"),
        ("tabs", 5, "not valid YAML"),
        ("long-compat", 4, "`compatibility` is 501 characters"),
    ];
    for (folder, line, message) in cases {
        let e = error_of(folder);
        assert!(
            e.contains(&md(folder, line)) && e.contains(message),
            "{folder}: want line {line} and {message:?}: {e}"
        );
    }
    assert_eq!(failures.len(), cases.len(), "{v:#}");
    // Nothing malformed became a skill.
    assert!(
        v["skills"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["kind"] == "keel"),
        "{v:#}"
    );

    let text = ws.run(&["skills"]);
    assert_eq!(text.status, 1);
    for (folder, _, message) in cases {
        assert!(
            text.stdout
                .lines()
                .any(|l| l.starts_with("FAILED") && l.contains(folder) && l.contains(message)),
            "{folder}: {}",
            text.stdout
        );
    }
    let check = ws.run(&["check"]);
    assert_eq!(check.status, 1);
    for (folder, line, message) in cases {
        assert!(
            check
                .stdout
                .lines()
                .any(|l| l.contains(&md(folder, line)) && l.contains(message)),
            "{folder}: {}",
            check.stdout
        );
    }
    assert!(
        check.stdout.contains(&format!("{} problems", cases.len())),
        "{}",
        check.stdout
    );
}

#[test]
fn an_instructions_skill_is_added_edited_and_removed_while_running() {
    let ws = Ws::new().policy("");
    let rt = runtime();
    let k = ws.kernel(&rt);
    let mut events = k.subscribe();
    let _watcher = keel::skill::watch::watch(&k).expect("watch");
    let mut wait_for = |what: &str, f: &dyn Fn(&ReloadOutcome) -> bool| {
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            while let Ok(e) = events.try_recv() {
                if let KernelEvent::Reloaded(r) = e
                    && r.outcomes.iter().any(f)
                {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no reload event for: {what}");
    };
    let md = |desc: &str| format!("---\nname: notes-howto\ndescription: {desc}\n---\nBODY\n");
    ws.write("skills/notes-howto/SKILL.md", &md("First."));
    wait_for(
        "added",
        &|o| matches!(o, ReloadOutcome::Added { skill } if skill == "notes-howto"),
    );
    let prompt = |k: &keel::Kernel| keel::agent::prompt::system_prompt(None, "/ws", &k.skills());
    assert!(
        prompt(&k).contains("- notes-howto: First.\n"),
        "{}",
        prompt(&k)
    );

    ws.write("skills/notes-howto/SKILL.md", &md("Second."));
    wait_for(
        "reloaded",
        &|o| matches!(o, ReloadOutcome::Reloaded { skill } if skill == "notes-howto"),
    );
    assert!(prompt(&k).contains("- notes-howto: Second.\n"));

    // A broken edit is reported and the working version keeps serving.
    ws.write(
        "skills/notes-howto/SKILL.md",
        "---\nname: notes-howto\n---\n",
    );
    wait_for("failed", &|o| {
        matches!(o, ReloadOutcome::Failed { error, kept: Some(kept), .. }
            if kept == "notes-howto" && error.contains("SKILL.md:2: missing `description`"))
    });
    assert!(prompt(&k).contains("- notes-howto: Second.\n"));

    std::fs::remove_dir_all(ws.path("skills/notes-howto")).unwrap();
    wait_for(
        "removed",
        &|o| matches!(o, ReloadOutcome::Removed { skill } if skill == "notes-howto"),
    );
    assert!(!prompt(&k).contains("notes-howto"));
}

/// The content of the tool result answering the latest call of an OpenAI
/// request.
fn last_tool_result(body: &Value) -> String {
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|m| m["role"] == "tool")
        .map(|m| m["content"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default()
}

fn system_of(body: &Value) -> String {
    body["messages"][0]["content"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn tool_names(body: &Value) -> Vec<String> {
    body["tools"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|t| t["function"]["name"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_model_activates_a_skill_reads_its_files_and_nothing_outside() {
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret.md");
    std::fs::write(&secret, "OUTSIDE-SECRET").unwrap();
    // Each request is answered by the next step; the handler sees what
    // the previous step's call returned.
    let steps: Vec<Reply> = vec![
        Reply::tool("skills__activate", json!({"name": "pdf"})),
        Reply::tool(
            "skills__read",
            json!({"skill": "pdf", "path": "reference.md"}),
        ),
        Reply::tool(
            "skills__read",
            json!({"skill": "pdf", "path": "../brand-guidelines/SKILL.md"}),
        ),
        Reply::tool(
            "skills__read",
            json!({"skill": "pdf", "path": secret.to_str().unwrap()}),
        ),
        Reply::tool("skills__read", json!({"skill": "pdf", "path": "linked.md"})),
        Reply::text("Done."),
    ];
    let n = std::sync::atomic::AtomicUsize::new(0);
    let model = FakeModel::with_handler(Wire::OpenAi, move |_| {
        let i = n.fetch_add(1, Ordering::SeqCst);
        steps
            .get(i)
            .cloned()
            .unwrap_or_else(|| Reply::text("out of steps"))
    });
    let ws = collection("skills", &model_table("main", &model));
    std::os::unix::fs::symlink(&secret, ws.path("skills/pdf/linked.md")).unwrap();
    let h = Harness::new(ws);
    let session = h.session();
    let outcome = h.ask(&session, "fill in this PDF form");
    assert_eq!(outcome.state, "done", "{outcome:?}");
    let reqs = model.requests();
    assert_eq!(reqs.len(), 6);
    // 1: names and descriptions only, for both kinds; no body.
    let system = system_of(&reqs[0].body);
    assert!(
        system.contains("\n- pdf: Comprehensive PDF manipulation toolkit"),
        "{system}"
    );
    assert!(system.contains("\n- calc: Evaluate arithmetic"), "{system}");
    assert!(!system.contains("PDF-SKILL-BODY-MARKER"), "{system}");
    assert!(
        !system.contains("# calc"),
        "built-in bodies stay out: {system}"
    );
    for line in system.lines().filter(|l| l.starts_with("- ")) {
        assert!(line.len() < 150, "{line}");
    }
    let offered = tool_names(&reqs[0].body);
    assert!(
        offered.contains(&"skills__activate".to_string()),
        "{offered:?}"
    );
    assert!(offered.contains(&"skills__read".to_string()), "{offered:?}");
    // 2: the body and the list of files.
    let activated = last_tool_result(&reqs[1].body);
    assert!(activated.contains("PDF-SKILL-BODY-MARKER"), "{activated}");
    assert!(
        activated.contains("- reference.md\n") && activated.contains("- scripts/fill_form.py\n"),
        "{activated}"
    );
    assert!(
        activated.contains("run only through a tool that runs programs (exec)"),
        "{activated}"
    );
    // 3: a reference file.
    assert!(last_tool_result(&reqs[2].body).contains("REFERENCE-MARKER"));
    // 4-6: refused: `..`, an absolute path, a link out of the folder.
    let up = last_tool_result(&reqs[3].body);
    assert!(up.contains("`..` is refused"), "{up}");
    let abs = last_tool_result(&reqs[4].body);
    assert!(abs.contains("absolute paths are refused"), "{abs}");
    let link = last_tool_result(&reqs[5].body);
    assert!(link.contains("leads out of the skill folder"), "{link}");
    for r in &reqs {
        assert!(!r.body.to_string().contains("OUTSIDE-SECRET"));
    }
    // Recorded like any tool call.
    let names: Vec<(&str, bool)> = outcome
        .tool_calls
        .iter()
        .map(|c| (c.name.as_str(), c.is_error))
        .collect();
    assert_eq!(
        names,
        [
            ("skills.activate", false),
            ("skills.read", false),
            ("skills.read", true),
            ("skills.read", true),
            ("skills.read", true)
        ]
    );
    assert!(
        outcome.offered_tools >= 2 && outcome.offered_bytes > 0,
        "{outcome:?}"
    );
}

/// A thread swaps a file of the skill between a regular file and a link
/// to a secret outside, as fast as it can, while the other reads it
/// through `skills.read`: never a byte of the secret.
#[test]
fn a_symlink_swapped_in_during_reads_never_leaks() {
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret.md");
    std::fs::write(&secret, "OUTSIDE-SECRET").unwrap();
    let ws = collection("skills", "");
    let rt = runtime();
    let k = ws.kernel(&rt);
    let target = ws.path("skills/pdf/swap.md");
    std::fs::write(&target, "INSIDE").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (stop, target, secret) = (stop.clone(), target.clone(), secret.clone());
        let real = target.with_extension("real");
        let link = target.with_extension("link");
        std::thread::spawn(move || {
            let mut swaps = 0u64;
            while !stop.load(Ordering::Relaxed) {
                std::fs::write(&real, "INSIDE").unwrap();
                std::fs::rename(&real, &target).unwrap();
                let _ = std::fs::remove_file(&link);
                std::os::unix::fs::symlink(&secret, &link).unwrap();
                std::fs::rename(&link, &target).unwrap();
                swaps += 1;
            }
            swaps
        })
    };
    let (mut inside, mut refused) = (0, 0);
    for _ in 0..400 {
        match rt.block_on(k.call_tool("skills.read", json!({"skill": "pdf", "path": "swap.md"}))) {
            Ok(v) => {
                assert_eq!(v, json!("INSIDE"));
                inside += 1;
            }
            Err(e) => {
                let e = e.to_string();
                assert!(!e.contains("OUTSIDE-SECRET"), "{e}");
                assert!(
                    e.contains("leads out of the skill folder") || e.contains("no file"),
                    "{e}"
                );
                refused += 1;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    assert!(swaps > 0);
    assert_eq!(inside + refused, 400);

    // A FIFO is refused at once (nothing blocks), a huge file too.
    let fifo = ws.path("skills/pdf/pipe.md");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let e = rt
        .block_on(k.call_tool("skills.read", json!({"skill": "pdf", "path": "pipe.md"})))
        .unwrap_err()
        .to_string();
    assert!(e.contains("FIFO"), "{e}");
    let big = std::fs::File::create(ws.path("skills/pdf/big.md")).unwrap();
    big.set_len(keel::skill::MAX_FILE_BYTES + 1).unwrap();
    let e = rt
        .block_on(k.call_tool("skills.read", json!({"skill": "pdf", "path": "big.md"})))
        .unwrap_err()
        .to_string();
    assert!(e.contains("1024 KiB limit"), "{e}");
    // A built-in skill's files are the embedded ones.
    let md = rt
        .block_on(k.call_tool("skills.read", json!({"skill": "calc", "path": "SKILL.md"})))
        .unwrap();
    assert!(md.as_str().unwrap().contains("name: calc"));
    let e = rt
        .block_on(k.call_tool(
            "skills.read",
            json!({"skill": "calc", "path": "../files/SKILL.md"}),
        ))
        .unwrap_err()
        .to_string();
    assert!(e.contains("`..` is refused"), "{e}");
}

/// `allowed-tools: Bash` is shown, never granted: after activating such a
/// skill, the model's attempt to run bash through the shell skill is
/// still decided by the policy alone (here: not allowed).
#[test]
fn allowed_tools_grants_nothing() {
    let steps: Vec<Reply> = vec![
        Reply::tool("skills__activate", json!({"name": "bashful"})),
        Reply::tool(
            "shell__run",
            json!({"program": "bash", "args": ["-c", "echo PWNED"]}),
        ),
        Reply::text("Done."),
    ];
    let n = std::sync::atomic::AtomicUsize::new(0);
    let model = FakeModel::with_handler(Wire::OpenAi, move |_| {
        let i = n.fetch_add(1, Ordering::SeqCst);
        steps
            .get(i)
            .cloned()
            .unwrap_or_else(|| Reply::text("out of steps"))
    });
    let ws = Ws::new()
        .file(
            "skills/bashful/SKILL.md",
            "---\nname: bashful\ndescription: Runs things.\nallowed-tools: Bash\n---\nRun `bash -c 'echo hi'`.\n",
        )
        .policy(&format!(
            "[skills]\n[policy]\ndefault = \"deny\"\n{}",
            model_table("main", &model)
        ));
    let h = Harness::new(ws);
    let outcome = h.ask(&h.session(), "run it");
    assert_eq!(outcome.state, "done", "{outcome:?}");
    let run = &outcome.tool_calls[1];
    assert_eq!(run.name, "shell.run");
    assert!(run.is_error, "{run:?}");
    let result = run.result.clone().unwrap_or_default();
    assert!(!result.contains("PWNED"), "{result}");
    assert!(result.contains("exec"), "{result}");
    // Nothing was granted to anyone.
    assert!(h.store().all_grants().unwrap().is_empty());
}

/// The first request's bytes (system prompt + tool definitions as sent).
fn first_request(ws_setup: impl FnOnce(&FakeModel) -> Ws) -> (usize, usize, Vec<String>) {
    let model = FakeModel::scripted(Wire::OpenAi, vec![Reply::text("ok")]);
    let h = Harness::with_wait(ws_setup(&model), Duration::from_secs(60));
    let outcome = h.ask(&h.session(), "hello");
    assert_eq!(outcome.state, "done", "{outcome:?}");
    let body = &model.requests()[0].body;
    let system = system_of(body).len();
    let tools = body["tools"].to_string().len();
    assert_eq!(outcome.offered_tools as usize, tool_names(body).len());
    (system, tools, tool_names(body))
}

fn instructions_skill(ws: &Ws, i: usize) {
    ws.write(
        &format!("skills/howto-{i:04}/SKILL.md"),
        &format!(
            "---\nname: howto-{i:04}\ndescription: How to do task number {i} well, step by step, with the checks that catch the usual mistakes before they reach anyone else.\n---\nSteps for {i}.\n"
        ),
    );
}

fn keel_skill(ws: &Ws, i: usize) {
    ws.write(
        &format!("skills/s{i:04}/skill.toml"),
        &format!(
            "[skill]\nname = \"s{i:04}\"\nversion = \"1.0.0\"\ndescription = \"Skill number {i}: does its one job\"\nentry = \"main.luau\"\n[[tools]]\nname = \"run\"\ndescription = \"Run job {i} of skill s{i:04}\"\nparameters = {{ type = \"object\", properties = {{ input = {{ type = \"string\" }} }} }}\n"
        ),
    );
    ws.write(
        &format!("skills/s{i:04}/main.luau"),
        &format!("local M = {{}}\nfunction M.run(args) return \"ran {i}\" end\nreturn M\n"),
    );
}

#[test]
fn the_first_request_stays_lean_at_any_number_of_skills() {
    let (sys0, tools0, names0) =
        first_request(|m| Ws::new().policy(&format!("[skills]\n{}", model_table("main", m))));
    let total0 = sys0 + tools0;
    println!(
        "default install: system {sys0} B + tools {tools0} B = {total0} B, {} tools",
        names0.len()
    );
    assert!(total0 <= 4096, "default install: {total0} bytes");
    assert_eq!(names0, ["skills__activate", "skills__read"]);

    let (sys20, tools20, _) = first_request(|m| {
        let ws = Ws::new().policy(&format!("[skills]\n{}", model_table("main", m)));
        for i in 0..20 {
            instructions_skill(&ws, i);
        }
        ws
    });
    println!(
        "+20 instructions skills: system {sys20} B + tools {tools20} B = {} B",
        sys20 + tools20
    );
    assert_eq!(tools20, tools0, "instructions skills add no tools");
    assert!(
        sys20 - sys0 <= 20 * 150,
        "{} bytes for 20 skills",
        sys20 - sys0
    );

    let (sys1k, tools1k, names1k) = first_request(|m| {
        let ws = Ws::new().policy(&format!("[skills]\n{}", model_table("main", m)));
        for i in 0..1000 {
            keel_skill(&ws, i);
        }
        ws
    });
    println!(
        "1,000 skills (1,009 tools): system {sys1k} B + tools {tools1k} B = {} B, {} tools offered",
        sys1k + tools1k,
        names1k.len()
    );
    assert!(sys1k + tools1k < 32 * 1024, "{} bytes", sys1k + tools1k);
    assert_eq!(
        names1k,
        ["skills__activate", "skills__read", "tools__search"]
    );
}

#[test]
fn tool_search_and_activation_reach_any_of_a_thousand_skills() {
    let steps: Vec<Reply> = vec![
        // Not offered yet: refused with the way to reach it.
        Reply::tool("s0500__run", json!({})),
        Reply::tool("tools__search", json!({"query": "job 742"})),
        Reply::tool("s0742__run", json!({})),
        Reply::tool("skills__activate", json!({"name": "s0100"})),
        Reply::tool("s0100__run", json!({})),
        Reply::text("Done."),
    ];
    let n = std::sync::atomic::AtomicUsize::new(0);
    let model = FakeModel::with_handler(Wire::OpenAi, move |_| {
        let i = n.fetch_add(1, Ordering::SeqCst);
        steps
            .get(i)
            .cloned()
            .unwrap_or_else(|| Reply::text("out of steps"))
    });
    let ws = Ws::new().policy(&format!(
        "[skills]\nbuiltin = false\n{}",
        model_table("main", &model)
    ));
    for i in 0..1000 {
        keel_skill(&ws, i);
    }
    let h = Harness::with_wait(ws, Duration::from_secs(60));
    let outcome = h.ask(&h.session(), "do job 742");
    assert_eq!(outcome.state, "done", "{outcome:?}");
    let calls: Vec<(&str, bool, String)> = outcome
        .tool_calls
        .iter()
        .map(|c| {
            (
                c.name.as_str(),
                c.is_error,
                c.result.clone().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(calls[0].0, "s0500.run");
    assert!(
        calls[0].1 && calls[0].2.contains("not offered in this session"),
        "{:?}",
        calls[0]
    );
    assert!(calls[0].2.contains("skills.activate"), "{:?}", calls[0]);
    assert!(
        !calls[1].1 && calls[1].2.contains("s0742.run"),
        "{:?}",
        calls[1]
    );
    assert_eq!((calls[2].1, calls[2].2.as_str()), (false, "ran 742"));
    assert_eq!((calls[4].1, calls[4].2.as_str()), (false, "ran 100"));
    let reqs = model.requests();
    assert_eq!(
        tool_names(&reqs[0].body),
        ["skills__activate", "skills__read", "tools__search"]
    );
    // Found by search: offered from the next request on.
    assert!(tool_names(&reqs[2].body).contains(&"s0742__run".to_string()));
    // Activated: its tools offered from the next request on, the found
    // one still.
    let last = tool_names(&reqs[4].body);
    assert!(
        last.contains(&"s0100__run".to_string()) && last.contains(&"s0742__run".to_string()),
        "{last:?}"
    );
    for r in &reqs {
        let bytes = system_of(&r.body).len() + r.body["tools"].to_string().len();
        assert!(bytes < 32 * 1024, "{bytes}");
    }
    // The activation survives in a later run of the session (read from
    // the transcript).
    let again = h.ask(&outcome.session_id, "again");
    assert_eq!(again.state, "done");
    let later = model.requests();
    let offered = tool_names(&later[later.len() - 1].body);
    assert!(offered.contains(&"s0100__run".to_string()), "{offered:?}");
}

/// Activation is read from every stored message, so the summary that
/// replaces the activating turn does not make the skill's tools vanish.
#[test]
fn an_activation_survives_compaction() {
    let n = std::sync::atomic::AtomicUsize::new(0);
    let model = FakeModel::with_handler(Wire::OpenAi, move |body| {
        // Summary requests carry no tools.
        if body.get("tools").is_none() {
            return Reply::text("Summary: the user activated notes.");
        }
        match n.fetch_add(1, Ordering::SeqCst) {
            0 => Reply::tool("skills__activate", json!({"name": "notes"})),
            _ => Reply::text("ok"),
        }
    });
    let ws = Ws::new()
        .skill(
            "notes",
            common::agent::NOTES,
            &[("main.luau", common::agent::NOTES_SRC)],
        )
        .policy(&format!(
            "[policy]\nallow = [\"kv\"]\n{}\n[agent]\ncontext_window = 1200\ncompact_at = 0.5\nkeep_turns = 1\n",
            model_table("main", &model)
        ));
    let h = Harness::new(ws);
    let session = h.session();
    assert_eq!(h.ask(&session, "use notes").state, "done");
    let before = model.requests();
    assert!(tool_names(&before[before.len() - 1].body).contains(&"notes__add".to_string()));
    let big = "words ".repeat(500);
    let outcome = h.ask(&session, &big);
    assert_eq!(outcome.state, "done", "{outcome:?}");
    let reqs = model.requests();
    let summarised = reqs.iter().any(|r| r.body.get("tools").is_none());
    assert!(summarised, "the test must compact");
    let last = &reqs[reqs.len() - 1].body;
    assert!(
        !last["messages"].to_string().contains("is active"),
        "the activating turn is summarised away: {last}"
    );
    assert!(
        tool_names(last).contains(&"notes__add".to_string()),
        "{:?}",
        tool_names(last)
    );
}
