//! Prints the bytes of the first model request keel sends (system prompt
//! and tool definitions, as they go over the wire) for a default install,
//! with 20 Agent Skills added, and with 1,000 keel skills of one tool each
//! (1,009 tools with the built-ins).
//!
//! ```text
//! cargo run --example request_bytes
//! ```
//!
//! Each case is a real agent run in a temporary workspace against a local
//! fake model (tests/common/model.rs, OpenAI wire); the figures are read
//! from the request body the model received. Sizes are deterministic, so
//! the build profile does not matter.

#[path = "../tests/common/model.rs"]
mod model;

use model::{FakeModel, Reply, Wire};

fn write(root: &std::path::Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, text).expect("write");
}

/// Runs one turn in a workspace `setup` fills; returns (system bytes,
/// tools bytes, tools offered, whole body bytes).
fn first_request(setup: impl FnOnce(&std::path::Path)) -> (usize, usize, usize, usize) {
    let model = FakeModel::scripted(Wire::OpenAi, vec![Reply::text("ok")]);
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().canonicalize().expect("canonical");
    write(
        &root,
        "keel.toml",
        &format!(
            "[models.main]\nprovider = \"openai\"\nbase_url = \"{}\"\nmodel = \"fake\"\n",
            model.base_url()
        ),
    );
    std::fs::create_dir_all(root.join("skills")).expect("skills");
    setup(&root);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let config = keel::config::Config::load(&root.join("keel.toml")).expect("config");
    let kernel = keel::Kernel::builder(config)
        .data_dir(root.join(".data"))
        .runtime(rt.handle().clone())
        .build()
        .expect("kernel");
    let agent = keel::agent::Agent::new(kernel).expect("agent");
    let session = agent.new_session("bytes").expect("session");
    let outcome = {
        let _g = rt.enter();
        let handle = agent.submit(&session.id, "hello").expect("submit");
        rt.block_on(handle.wait())
    };
    assert_eq!(outcome.state.name(), "done", "{outcome:?}");
    let body = &model.requests()[0].body;
    let system = body["messages"][0]["content"]
        .as_str()
        .unwrap_or_default()
        .len();
    let tools = body.get("tools").map_or(0, |t| t.to_string().len());
    let n = body
        .get("tools")
        .and_then(|t| t.as_array())
        .map_or(0, Vec::len);
    (system, tools, n, body.to_string().len())
}

fn report(case: &str, (system, tools, n, whole): (usize, usize, usize, usize)) {
    println!(
        "{case:<40} system {system:>6} B + {n:>2} tools {tools:>5} B = {:>6} B ({:.1} KB; whole body {whole} B)",
        system + tools,
        (system + tools) as f64 / 1024.0
    );
}

fn main() {
    let base = first_request(|_| {});
    report("default install (5 built-in skills)", base);
    let plus20 = first_request(|root| {
        for i in 0..20 {
            write(
                root,
                &format!("skills/howto-{i:02}/SKILL.md"),
                &format!(
                    "---\nname: howto-{i:02}\ndescription: How to do task number {i} well, step by step, with the checks that catch the usual mistakes before they reach anyone else.\n---\nSteps for {i}.\n"
                ),
            );
        }
    });
    report("+20 Agent Skills (SKILL.md)", plus20);
    println!(
        "{:<40} {:.0} B per added skill",
        "",
        (plus20.0 + plus20.1 - base.0 - base.1) as f64 / 20.0
    );
    let thousand = first_request(|root| {
        for i in 0..1000 {
            write(
                root,
                &format!("skills/s{i:04}/skill.toml"),
                &format!(
                    "[skill]\nname = \"s{i:04}\"\nversion = \"1.0.0\"\ndescription = \"Skill number {i}: does its one job\"\nentry = \"main.luau\"\n[[tools]]\nname = \"run\"\ndescription = \"Run job {i} of skill s{i:04}\"\nparameters = {{ type = \"object\", properties = {{ input = {{ type = \"string\" }} }} }}\n"
                ),
            );
            write(
                root,
                &format!("skills/s{i:04}/main.luau"),
                "local M = {}\nfunction M.run(args) return \"ran\" end\nreturn M\n",
            );
        }
    });
    report("1,000 keel skills (1,009 tools)", thousand);
}
