//! The `keel` command line: parse arguments, build the kernel, hand off.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{Value, json};

use keel::Kernel;
use keel::capability::{CapabilityRule, ScopeBase};
use keel::config::Config;
use keel::skill::{Origin, SkillFailure, SkillSet, manifest::valid_skill_name};

#[derive(Parser)]
#[command(
    name = "keel",
    version,
    about = "An agent kernel you extend with capability-gated Luau and Rhai skills",
    disable_help_subcommand = true
)]
struct Cli {
    /// Configuration file (default: ./keel.toml if it exists).
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Where keel keeps its SQLite database and user skills.
    #[arg(long, global = true, value_name = "PATH", env = "KEEL_DATA_DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// List skills, with load failures and their reasons.
    Skills {
        #[arg(long)]
        json: bool,
    },
    /// List tools with their descriptions and JSON Schemas.
    Tools {
        #[arg(long)]
        json: bool,
    },
    /// Call a tool once and print its result as JSON.
    Call {
        /// The tool, as SKILL.TOOL.
        tool: String,
        /// Arguments as a JSON object (default {}).
        args: Option<String>,
    },
    /// Validate manifests, compile scripts, resolve dependencies, and show
    /// each capability against the policy.
    Check {
        /// A skill folder, a one-file skill, or a folder of skills
        /// (default: the whole search path).
        path: Option<PathBuf>,
    },
    /// Grant a skill a capability (persisted).
    Grant { skill: String, capability: String },
    /// Remove a grant.
    Revoke { skill: String, capability: String },
    /// List persisted grants.
    Grants {
        #[arg(long)]
        json: bool,
    },
    /// Show the audit log, newest first.
    Audit {
        #[arg(long)]
        json: bool,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Send one message to the agent and print the answer as it streams.
    Ask {
        /// The message.
        message: String,
        /// Continue this session instead of starting a new one.
        #[arg(long, value_name = "ID")]
        session: Option<String>,
        /// Print the run record (id, state, answer, tool calls, usage) as
        /// JSON instead of streaming the answer.
        #[arg(long)]
        json: bool,
    },
    /// List sessions.
    Sessions {
        #[arg(long)]
        json: bool,
    },
    /// List a session's runs.
    Runs {
        session: String,
        #[arg(long)]
        json: bool,
    },
    /// List approval requests waiting for an answer (`--all`: answered
    /// ones too).
    Approvals {
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// Answer an approval request: yes, no or always (always also stores a
    /// grant). A run waiting in another keel process sees it at once.
    Approve {
        /// The request's id (see `keel approvals`).
        id: String,
        /// yes | no | always
        answer: String,
    },
    /// Skill scaffolding.
    Skill {
        #[command(subcommand)]
        command: SkillCommand,
    },
    /// Print the host API reference or editor definitions.
    Docs {
        #[arg(long, value_enum, default_value_t = DocsFormat::Markdown)]
        format: DocsFormat,
    },
    /// Print help.
    Help,
}

#[derive(Subcommand)]
enum SkillCommand {
    /// Create a working skill in ./skills/NAME.
    New {
        name: String,
        #[arg(long, value_enum, default_value_t = Lang::Luau)]
        lang: Lang,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Lang {
    Luau,
    Rhai,
}

#[derive(Clone, Copy, ValueEnum)]
enum DocsFormat {
    Markdown,
    Luau,
    Rhai,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("keel: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KEEL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

fn load_config(path: Option<&Path>) -> Result<Config> {
    let cwd = std::env::current_dir().context("cannot read the working directory")?;
    match path {
        Some(p) => Ok(Config::load(p)?),
        None => {
            let default = cwd.join("keel.toml");
            if default.is_file() {
                Ok(Config::load(&default)?)
            } else {
                Ok(Config::default_for(&cwd))
            }
        }
    }
}

fn data_dir(cli: Option<PathBuf>) -> PathBuf {
    cli.or_else(|| dirs::data_dir().map(|d| d.join("keel")))
        .unwrap_or_else(|| PathBuf::from(".keel"))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn build_kernel(cli: &Cli, config: Config, rt: &tokio::runtime::Runtime) -> Result<Kernel> {
    let env: BTreeMap<String, String> = std::env::vars().collect();
    Ok(Kernel::builder(config)
        .data_dir(data_dir(cli.data_dir.clone()))
        .env(env)
        .runtime(rt.handle().clone())
        .build()?)
}

fn run(cli: Cli) -> Result<ExitCode> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    match &cli.command {
        Some(Command::Help) => {
            use clap::CommandFactory;
            Cli::command().print_help()?;
            println!();
            return Ok(ExitCode::SUCCESS);
        }
        Some(Command::Docs { format }) => {
            let text = match format {
                DocsFormat::Markdown => keel::docs::reference_markdown(),
                DocsFormat::Luau => keel::docs::luau_definitions(),
                DocsFormat::Rhai => keel::docs::rhai_definitions(),
            };
            print!("{text}");
            return Ok(ExitCode::SUCCESS);
        }
        Some(Command::Skill {
            command: SkillCommand::New { name, lang },
        }) => return skill_new(name, *lang),
        _ => {}
    }
    let config = load_config(cli.config.as_deref())?;
    let rt = runtime()?;
    let kernel = build_kernel(&cli, config, &rt)?;
    match cli.command {
        None => {
            keel::repl::run(&kernel, &rt)?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Skills { json }) => {
            let set = kernel.skills();
            // A listing in another terminal should show what the console
            // would: scripts that do not compile or load, with file and line.
            let broken = kernel.validate();
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&skills_json(&set, &broken))?
                );
            } else {
                print!("{}", keel::repl::format_skills(&set, &broken));
            }
            Ok(if set.failures.is_empty() && broken.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Some(Command::Tools { json }) => {
            let set = kernel.skills();
            if json {
                println!("{}", serde_json::to_string_pretty(&tools_json(&set))?);
            } else {
                print!("{}", keel::repl::format_tools(&set));
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Call { tool, args }) => {
            let args: Value = match args.as_deref() {
                None => json!({}),
                Some(a) => serde_json::from_str(a).with_context(|| {
                    format!("arguments {a:?} are not valid JSON; pass an object like '{{\"text\": \"hi\"}}'")
                })?,
            };
            let result = rt.block_on(kernel.call_tool(&tool, args))?;
            println!("{}", serde_json::to_string(&result)?);
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Check { path }) => check(&kernel, path.as_deref()),
        Some(Command::Grant { skill, capability }) => {
            let rule = parse_grant(&kernel, &skill, &capability)?;
            let new = kernel.store().grant(&skill, &rule.text)?;
            println!(
                "{} {skill} {}",
                if new { "granted" } else { "already granted:" },
                rule.text
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Revoke { skill, capability }) => {
            let rule = parse_grant(&kernel, &skill, &capability)?;
            if kernel.store().revoke(&skill, &rule.text)? {
                println!("revoked {skill} {}", rule.text);
                Ok(ExitCode::SUCCESS)
            } else {
                bail!(
                    "skill `{skill}` has no grant `{}` (see `keel grants`)",
                    rule.text
                )
            }
        }
        Some(Command::Grants { json }) => {
            let grants = kernel.store().grants(None)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&grants)?);
            } else {
                print!("{}", keel::repl::format_grants(&grants));
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Audit { json, limit }) => {
            let log = kernel.store().audit_log(limit)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&log)?);
            } else {
                print!("{}", keel::repl::format_audit(&log));
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Ask {
            message,
            session,
            json,
        }) => ask(&kernel, &rt, &message, session.as_deref(), json),
        Some(Command::Sessions { json }) => {
            let list = kernel.store().sessions()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print!("{}", keel::repl::format_sessions(&list, None));
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Runs { session, json }) => {
            if kernel.store().session(&session)?.is_none() {
                bail!("no session `{session}` (see `keel sessions`)");
            }
            let list = kernel.store().runs(&session)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print!("{}", keel::repl::format_runs(&list));
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Approvals { all, json }) => {
            let list = kernel.store().approvals(!all)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print!("{}", keel::repl::format_approvals(&list));
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Approve { id, answer }) => {
            let Some(a) = keel::store::ApprovalAnswer::parse(&answer) else {
                bail!("`{answer}` is not an answer; use yes, no or always");
            };
            let (rec, changed) = kernel.store().answer_approval(&id, a)??;
            println!(
                "{} {id}: {} `{}` on `{}` for {}{}",
                if changed {
                    "answered"
                } else {
                    "already answered"
                },
                a.name(),
                rec.capability,
                rec.target,
                rec.skill,
                if a == keel::store::ApprovalAnswer::Always {
                    format!(" (granted {})", rec.rule)
                } else {
                    String::new()
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Help | Command::Docs { .. } | Command::Skill { .. }) => Ok(ExitCode::SUCCESS),
    }
}

/// `keel ask`: one run, streamed to stdout (tool calls and approvals on
/// stderr); exit 0 when it is done, 1 when it failed, 130 when cancelled.
fn ask(
    kernel: &Kernel,
    rt: &tokio::runtime::Runtime,
    message: &str,
    session: Option<&str>,
    json: bool,
) -> Result<ExitCode> {
    use keel::repl::chat;
    use std::io::IsTerminal;
    if message.trim().is_empty() {
        bail!(
            "the message is empty; write what you want, e.g. keel ask \"what is in this folder?\""
        );
    }
    let agent = match keel::agent::Agent::new(kernel.clone()) {
        Ok(a) => a,
        Err(keel::agent::AgentError::NoModel) => {
            eprint!("{}", chat::no_model_text());
            return Ok(ExitCode::from(2));
        }
        Err(e) => return Err(e.into()),
    };
    let session = match session {
        Some(id) => {
            if kernel.store().session(id)?.is_none() {
                bail!("no session `{id}` (see `keel sessions`)");
            }
            id.to_string()
        }
        None => agent.new_session(&chat::one_line(message, 60))?.id,
    };
    let current = chat::CurrentRun::default();
    chat::install_ctrl_c(rt, &agent, &current);
    // A person at a terminal can answer approvals; otherwise they are
    // declined at once (with how to grant) rather than left to time out.
    let interactive = std::io::stdin().is_terminal();
    let mut ask_person = |_: &keel::store::ApprovalRecord, wanted: &dyn Fn() -> bool| {
        chat::read_terminal_line(wanted)
    };
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    let mut sink = std::io::sink();
    let outcome = chat::converse(
        &agent,
        rt,
        &session,
        message,
        &current,
        chat::Sinks {
            answer: if json { &mut sink } else { &mut stdout },
            notes: &mut stderr,
        },
        interactive.then_some(&mut ask_person as chat::AskPerson<'_>),
    )?;
    if json {
        println!("{}", serde_json::to_string_pretty(&outcome)?);
    }
    Ok(match outcome.state.as_str() {
        "done" => ExitCode::SUCCESS,
        "cancelled" => {
            eprintln!("keel: the run was cancelled");
            ExitCode::from(130)
        }
        _ => {
            eprintln!(
                "keel: the run failed: {}",
                outcome.reason.as_deref().unwrap_or("no reason recorded")
            );
            ExitCode::from(1)
        }
    })
}

/// Parses a grant, normalising it the way the gate will read it back.
fn parse_grant(kernel: &Kernel, skill: &str, capability: &str) -> Result<CapabilityRule> {
    if !valid_skill_name(skill) {
        bail!("`{skill}` is not a skill name (see `keel skills`)");
    }
    let rule = CapabilityRule::parse(
        capability,
        &ScopeBase {
            workspace: kernel.workspace(),
        },
    )?;
    if kernel.skills().latest(skill).is_none() {
        eprintln!(
            "note: no skill named `{skill}` is loaded right now; the grant applies when it is"
        );
    }
    Ok(rule)
}

fn skills_json(set: &SkillSet, broken: &[SkillFailure]) -> Value {
    let is_broken = |id: &str| broken.iter().any(|f| f.skill.as_deref() == Some(id));
    let skills: Vec<Value> = set
        .skills
        .values()
        .filter(|s| !is_broken(&s.id.to_string()))
        .map(|s| {
            let m = &s.manifest;
            json!({
                "name": m.name,
                "version": m.version.to_string(),
                "description": m.description,
                "language": m.language,
                "origin": s.source.origin,
                "tools": m.tools.iter().map(|t| format!("{}.{}", m.name, t.name)).collect::<Vec<_>>(),
                "dependencies": s.deps.iter().map(|(k, v)| (k.clone(), v.id.version.to_string())).collect::<BTreeMap<_, _>>(),
                "capabilities": m.capabilities.iter().map(|c| c.text.clone()).collect::<Vec<_>>(),
                "pending_capabilities": s.identity.pending,
            })
        })
        .collect();
    let failures: Vec<&SkillFailure> = set.failures.iter().chain(broken).collect();
    json!({ "skills": skills, "failures": failures })
}

fn tools_json(set: &SkillSet) -> Value {
    Value::Array(
        set.tools
            .iter()
            .map(|(name, e)| {
                let spec = e.spec();
                json!({
                    "name": name,
                    "description": spec.description,
                    "parameters": spec.parameters,
                    "skill": e.skill.id.to_string(),
                })
            })
            .collect(),
    )
}

fn under(origin: &Origin, path: &Path) -> bool {
    match origin {
        Origin::Folder(p) | Origin::File(p) => p.starts_with(path),
        Origin::Builtin(_) => false,
    }
}

fn check(kernel: &Kernel, path: Option<&Path>) -> Result<ExitCode> {
    let set = kernel.skills();
    let scope = path.map(|p| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()));
    if let Some(p) = &scope
        && !p.exists()
    {
        bail!("{} does not exist", p.display());
    }
    let in_scope = |o: &Origin| scope.as_ref().is_none_or(|p| under(o, p));
    let mut problems = 0;
    for f in set.failures.iter().filter(|f| in_scope(&f.origin)) {
        println!("{}", f.error);
        problems += 1;
    }
    let policy = kernel.gate().policy();
    let mut checked = 0;
    for s in set.skills.values().filter(|s| in_scope(&s.source.origin)) {
        checked += 1;
        match kernel.instantiate(s) {
            Ok(_) => println!(
                "ok {} ({}, {} tool{}) {}",
                s.id,
                s.manifest.language.name(),
                s.manifest.tools.len(),
                if s.manifest.tools.len() == 1 { "" } else { "s" },
                s.source.origin
            ),
            Err(e) => {
                println!("{e}");
                problems += 1;
                continue;
            }
        }
        let grants = kernel.gate().grants(&s.manifest.name);
        for c in &s.manifest.capabilities {
            let d = keel::repl::decision_for_rule(&policy, &s.manifest.name, &grants, c);
            let pending = if s.identity.pending.contains(&c.text) {
                " (new since first load: needs `keel grant`)"
            } else {
                ""
            };
            println!("    {:<32} {d}{pending}", c.text);
        }
    }
    if checked == 0 && problems == 0 {
        println!(
            "no skills found{}",
            scope
                .map(|p| format!(" in {}", p.display()))
                .unwrap_or_default()
        );
    }
    if problems > 0 {
        println!("{problems} problem{}", if problems == 1 { "" } else { "s" });
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn skill_new(name: &str, lang: Lang) -> Result<ExitCode> {
    if !valid_skill_name(name) {
        bail!(
            "`{name}` is not a valid skill name: use lowercase letters, digits, `_` and `-`, starting with a letter"
        );
    }
    let dir = PathBuf::from("skills").join(name);
    if dir.exists() {
        bail!(
            "{} already exists; pick another name or edit it",
            dir.display()
        );
    }
    let (entry, script) = match lang {
        Lang::Luau => (
            "main.luau",
            "-- The tools of this skill. Each tool in skill.toml is a function here,\n\
             -- called with its validated arguments; return any JSON-shaped value.\n\
             local M = {}\n\n\
             function M.hello(args)\n    return { greeting = \"Hello, \" .. args.name .. \"!\" }\nend\n\n\
             return M\n",
        ),
        Lang::Rhai => (
            "main.rhai",
            "// The tools of this skill. Each tool in skill.toml is a top-level fn here,\n\
             // called with its validated arguments; return any JSON-shaped value.\n\
             fn hello(args) {\n    #{ greeting: `Hello, ${args.name}!` }\n}\n",
        ),
    };
    let manifest = format!(
        "[skill]\nname = \"{name}\"\nversion = \"0.1.0\"\ndescription = \"Describe what {name} does\"\nentry = \"{entry}\"\n\n\
         [dependencies]\n\n\
         [capabilities]\n# \"fs.read\" = [\"./notes\"]\n\n\
         [[tools]]\nname = \"hello\"\ndescription = \"Greets someone by name\"\n\
         parameters = {{ type = \"object\", properties = {{ name = {{ type = \"string\" }} }}, required = [\"name\"] }}\n"
    );
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(dir.join("skill.toml"), manifest)?;
    std::fs::write(dir.join(entry), script)?;
    std::fs::write(
        dir.join("SKILL.md"),
        format!(
            "---\nname: {name}\ndescription: Describe when the agent should use {name}.\n---\n\n\
             Tell the model when and how to use this skill's tools, e.g.:\n\n\
             - `{name}.hello {{name}}` greets someone; use it when the user asks to be greeted.\n"
        ),
    )?;
    println!(
        "created {}\ntry it: keel call {name}.hello '{{\"name\": \"world\"}}'",
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}
