//! Dependency resolution between skills, through the real binary.

mod common;

use common::Ws;
use serde_json::{Value, json};

fn lib(name: &str, version: &str, body: &str) -> String {
    format!(
        r#"
[skill]
name = "{name}"
version = "{version}"
description = "library"
entry = "main.luau"
[[tools]]
name = "version"
description = "reports its version"
"#
    ) + body
}

fn lib_src(version: &str) -> String {
    format!(
        "local M = {{}}\nfunction M.version() return '{version}' end\nfunction M.upper(s) return string.upper(s) .. ' v{version}' end\nreturn M\n"
    )
}

fn app(name: &str, req: &str) -> String {
    format!(
        r#"
[skill]
name = "{name}"
version = "1.0.0"
description = "uses text"
entry = "main.luau"
[dependencies]
text = "{req}"
[[tools]]
name = "shout"
description = "upper-cases via the library"
parameters = {{ type = "object", properties = {{ s = {{ type = "string" }} }}, required = ["s"] }}
"#
    )
}

const APP_SRC: &str = "local text = require('text')\nlocal M = {}\nfunction M.shout(a) return text.upper(a.s) end\nreturn M\n";

fn skills_json(ws: &Ws) -> Value {
    let out = ws.run(&["skills", "--json"]);
    serde_json::from_str(&out.stdout).expect("skills --json is JSON")
}

#[test]
fn the_highest_matching_version_is_chosen_and_majors_live_side_by_side() {
    let ws = Ws::new()
        .skill(
            "text",
            &lib("text", "1.2.0", ""),
            &[("main.luau", &lib_src("1.2.0"))],
        )
        .skill(
            "text-1.4.1",
            &lib("text", "1.4.1", ""),
            &[("main.luau", &lib_src("1.4.1"))],
        )
        .skill(
            "text-2.0.0",
            &lib("text", "2.0.0", ""),
            &[("main.luau", &lib_src("2.0.0"))],
        )
        .skill("old", &app("old", "^1.0"), &[("main.luau", APP_SRC)])
        .skill("new", &app("new", "^2"), &[("main.luau", APP_SRC)])
        .policy("");
    assert_eq!(
        ws.call("old.shout", json!({"s": "hi"})).ok(),
        json!("HI v1.4.1")
    );
    assert_eq!(
        ws.call("new.shout", json!({"s": "hi"})).ok(),
        json!("HI v2.0.0")
    );
    // The tool table offers the highest version of a skill's own tools.
    assert_eq!(ws.call("text.version", json!({})).ok(), json!("2.0.0"));
    let s = skills_json(&ws);
    let deps: Vec<_> = s["skills"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["name"] == "old" || k["name"] == "new")
        .map(|k| (k["name"].clone(), k["dependencies"]["text"].clone()))
        .collect();
    assert!(deps.contains(&(json!("old"), json!("1.4.1"))), "{deps:?}");
    assert!(deps.contains(&(json!("new"), json!("2.0.0"))), "{deps:?}");
}

#[test]
fn missing_unsatisfiable_and_cyclic_dependencies_fail_alone() {
    let cyc = |name: &str, dep: &str| {
        format!(
            "[skill]\nname = \"{name}\"\nversion = \"1.0.0\"\nentry = \"main.luau\"\n[dependencies]\n{dep} = \"^1\"\n"
        )
    };
    let ws = Ws::new()
        .skill(
            "text",
            &lib("text", "1.2.0", ""),
            &[("main.luau", &lib_src("1.2.0"))],
        )
        .skill(
            "needs-missing",
            &app("needsmissing", "^1").replace("text = ", "nothere = "),
            &[("main.luau", APP_SRC)],
        )
        .skill(
            "needs-three",
            &app("needsthree", "^3.0"),
            &[("main.luau", APP_SRC)],
        )
        .skill("a", &cyc("a", "b"), &[("main.luau", "return {}")])
        .skill("b", &cyc("b", "a"), &[("main.luau", "return {}")])
        .skill("fine", &app("fine", "^1"), &[("main.luau", APP_SRC)])
        .policy("");
    let out = ws.run(&["skills"]);
    assert_eq!(out.status, 1, "failures make `keel skills` exit non-zero");
    let s = &out.stdout;
    assert!(s.contains("dependency `nothere` is not installed"), "{s}");
    assert!(
        s.contains("no installed version of `text` satisfies `^3.0` (installed: 1.2.0)"),
        "{s}"
    );
    assert!(s.contains("a@1.0.0 -> b@1.0.0 -> a@1.0.0"), "{s}");
    // Everything else still loads and works.
    assert_eq!(
        ws.call("fine.shout", json!({"s": "x"})).ok(),
        json!("X v1.2.0")
    );
    ws.call("needsthree.shout", json!({"s": "x"}))
        .err_contains(&["no tool `needsthree.shout`"]);
}

#[test]
fn require_reaches_only_declared_dependencies_and_own_files() {
    let ws = Ws::new()
        .skill("text", &lib("text", "1.2.0", ""), &[("main.luau", &lib_src("1.2.0"))])
        .skill(
            "sneaky",
            "[skill]\nname = \"sneaky\"\nversion = \"1.0.0\"\nentry = \"main.luau\"\n[[tools]]\nname = \"go\"\ndescription = \"x\"\n[[tools]]\nname = \"own\"\ndescription = \"own file\"\n",
            &[
                (
                    "main.luau",
                    "local M = {}\nfunction M.go() return require('text') end\nfunction M.own() return require('./lib/util').answer end\nreturn M\n",
                ),
                ("lib/util.luau", "return { answer = 42 }"),
            ],
        )
        .policy("");
    ws.call("sneaky.go", json!({})).err_contains(&[
        "require(\"text\"): not found",
        "declared dependencies (none)",
    ]);
    assert_eq!(ws.call("sneaky.own", json!({})).ok(), json!(42));
}

#[test]
fn rhai_imports_resolve_dependencies() {
    let rlib = r#"
[skill]
name = "rtext"
version = "1.0.0"
entry = "main.rhai"
"#;
    let rapp = r#"
[skill]
name = "rapp"
version = "1.0.0"
entry = "main.rhai"
[dependencies]
rtext = "^1"
[[tools]]
name = "shout"
description = "x"
parameters = { type = "object", properties = { s = { type = "string" } }, required = ["s"] }
"#;
    let ws = Ws::new()
        .skill(
            "rtext",
            rlib,
            &[("main.rhai", "fn upper(s) { s.to_upper() + \"!\" }")],
        )
        .skill(
            "rapp",
            rapp,
            &[(
                "main.rhai",
                "import \"rtext\" as t;\nfn shout(args) { t::upper(args.s) }\n",
            )],
        )
        .policy("");
    assert_eq!(ws.call("rapp.shout", json!({"s": "hi"})).ok(), json!("HI!"));
}
