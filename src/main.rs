//! The `keel` command line: parse arguments, build the kernel, hand off.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;

use keel::Kernel;
use keel::commands::{self, Front, Output};
use keel::config::Config;
use keel::skill::{Origin, manifest::valid_skill_name};
use keel::telemetry::LogFormat;

#[derive(Parser)]
#[command(
    name = "keel",
    version,
    about = "An agent kernel you extend with capability-gated Luau and Rhai skills",
    long_about = "An agent kernel you extend with capability-gated Luau and Rhai skills.\n\n\
        Run `keel` with no command to open the console: talk to the agent, call tools, answer \
        approvals and watch skills reload as you edit them."
)]
struct Cli {
    /// Configuration file (default: the nearest keel.toml in this folder or
    /// one above it, as cargo finds Cargo.toml).
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Where keel keeps its SQLite database and user skills.
    #[arg(long, global = true, value_name = "PATH", env = "KEEL_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// How log lines on standard error are written: text, or one JSON
    /// object per line (default: `[telemetry] log_format` in keel.toml,
    /// else text). `KEEL_LOG` sets the level (e.g. KEEL_LOG=debug).
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    log_format: Option<LogFormatArg>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// List skills, with load failures and their reasons.
    #[command(after_help = "Example:\n  keel skills\n  keel skills --json | jq '.[].name'")]
    Skills {
        #[arg(long)]
        json: bool,
    },
    /// List tools with their descriptions and JSON Schemas.
    #[command(after_help = "Example:\n  keel tools\n  keel tools --json")]
    Tools {
        #[arg(long)]
        json: bool,
    },
    /// Call a tool once and print its result as JSON.
    #[command(
        after_help = "Example:\n  keel call calc.evaluate '{\"expression\": \"2+2\"}'\n  echo '{\"expression\": \"2^10\"}' | keel call calc.evaluate -"
    )]
    Call {
        /// The tool, as SKILL.TOOL.
        tool: String,
        /// Arguments as a JSON object (default {}); `-` reads them from
        /// standard input.
        args: Option<String>,
    },
    /// Validate manifests, compile scripts, resolve dependencies, and show
    /// each capability against the policy.
    #[command(
        after_help = "Example:\n  keel check\n  keel check skills/notes\n  keel check --json | jq '.problems[]'"
    )]
    Check {
        /// A skill folder, a one-file skill, or a folder of skills
        /// (default: the whole search path).
        path: Option<PathBuf>,
        /// Print the report as JSON: the skills checked (with each
        /// capability against the policy) and the problems, with file and
        /// line where known.
        #[arg(long)]
        json: bool,
    },
    /// Grant a skill a capability (persisted).
    #[command(after_help = "Example:\n  keel grant notes fs.write:./notes")]
    Grant { skill: String, capability: String },
    /// Remove a grant.
    #[command(after_help = "Example:\n  keel revoke notes fs.write:./notes")]
    Revoke { skill: String, capability: String },
    /// List persisted grants.
    #[command(after_help = "Example:\n  keel grants --json")]
    Grants {
        #[arg(long)]
        json: bool,
    },
    /// Show the audit log, newest first.
    #[command(after_help = "Example:\n  keel audit --limit 20\n  keel audit --json --limit 0")]
    Audit {
        #[arg(long)]
        json: bool,
        /// How many entries, newest first (0: all of them).
        #[arg(long, default_value_t = commands::audit::DEFAULT_LIMIT)]
        limit: usize,
    },
    /// Send one message to the agent and print the answer as it streams.
    #[command(
        after_help = "Example:\n  keel ask \"what is in this folder?\"\n  keel ask --session s_1a2b \"and the largest file?\""
    )]
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
    /// List sessions, most recently active first, with their runs' state.
    #[command(after_help = "Example:\n  keel sessions")]
    Sessions {
        #[arg(long)]
        json: bool,
    },
    /// List a session's runs.
    #[command(after_help = "Example:\n  keel runs s_1a2b --json")]
    Runs {
        session: String,
        #[arg(long)]
        json: bool,
    },
    /// List approval requests waiting for an answer (`--all`: answered
    /// ones too).
    #[command(after_help = "Example:\n  keel approvals --all")]
    Approvals {
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// Answer an approval request: yes, no or always (always also stores a
    /// grant). A run waiting in another keel process sees it at once.
    #[command(after_help = "Example:\n  keel approve a_1a2b always")]
    Approve {
        /// The request's id (see `keel approvals`).
        id: String,
        /// yes | no | always
        answer: String,
    },
    /// Skill scaffolding.
    #[command(
        after_help = "Example:\n  keel skill new notes --lang rhai\n  keel skill disable notes\n  keel skill enable notes"
    )]
    Skill {
        #[command(subcommand)]
        command: SkillCommand,
    },
    /// Serve the HTTP API and the web console until SIGINT/SIGTERM.
    #[command(
        after_help = "Example:\n  keel serve --listen 127.0.0.1:8080\n  curl -H \"Authorization: Bearer $(keel token)\" http://127.0.0.1:8080/v1/skills"
    )]
    Serve {
        /// Address to listen on (default: [gateway] listen, else
        /// 127.0.0.1:5335).
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
    },
    /// Print the gateway's access token (created on first use).
    #[command(after_help = "Example:\n  keel token --rotate")]
    Token {
        /// Replace the token with a new one; the old one stops working at
        /// once, also in a running `keel serve`.
        #[arg(long)]
        rotate: bool,
    },
    /// Print the host API reference or editor definitions.
    #[command(after_help = "Example:\n  keel docs --format luau > keel.d.luau")]
    Docs {
        #[arg(long, value_enum, default_value_t = DocsFormat::Markdown)]
        format: DocsFormat,
    },
}

#[derive(Subcommand)]
enum SkillCommand {
    /// Accept ORIGIN as a source of skill NAME in this workspace: a copy
    /// claiming a known name (shown as a claimant in `keel skills`) loads
    /// and shares the name's grants, baseline, policy section and kv here.
    /// Origins accepted before stay accepted; two accepted copies of the
    /// same version are still an error naming both.
    Accept {
        name: String,
        /// The claimant's folder or one-file script (as `keel skills`
        /// shows it), or `<builtin>/NAME`.
        #[arg(long, value_name = "PATH")]
        origin: String,
    },
    /// Disable skill NAME in this workspace: it keeps its files, grants
    /// and data, but offers no tools (not to the model, not to calls)
    /// until `keel skill enable NAME`. Survives restarts and reloads.
    Disable {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Enable skill NAME again in this workspace.
    Enable {
        name: String,
        #[arg(long)]
        json: bool,
    },
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
enum LogFormatArg {
    Text,
    Json,
}

impl From<LogFormatArg> for LogFormat {
    fn from(f: LogFormatArg) -> Self {
        match f {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum DocsFormat {
    Markdown,
    Luau,
    Rhai,
}

fn main() -> ExitCode {
    // First, while keel has one thread: move the environment out of the
    // block /proc/<pid>/environ shows and zero that block, so no program a
    // skill runs can read keel's API keys there; and no core dumps or
    // same-user ptrace of keel.
    // SAFETY: nothing has run yet; no other thread exists.
    let _ = unsafe { keel::sandbox::environ::seal() };
    let cli = {
        use clap::{CommandFactory, FromArgMatches};
        // The footer names the data dir this run would use.
        let footer = format!(
            "`keel` alone opens the console. `keel help COMMAND` (or `keel COMMAND --help`) shows a command's options and an example.\n\
             Data (database, skill data): {} (--data-dir or KEEL_DATA_DIR to change).",
            data_dir(std::env::var_os("KEEL_DATA_DIR").map(PathBuf::from)).display()
        );
        let matches = Cli::command().after_help(footer).get_matches();
        Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    };
    // A one-shot `keel ask` prints its answer where the person reads: its
    // own failures say everything the warnings would, so only errors are
    // logged there unless KEEL_LOG asks for more.
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            let message = format!("{e:#}");
            if LOG_FORMAT.get() == Some(&LogFormat::Json) {
                // A log collector reading JSON lines gets the failure as
                // one of them (serde escapes it).
                tracing::error!(error = %message, "keel failed");
            } else {
                // Errors quote skill names, targets and script messages.
                eprintln!("keel: {}", keel::text::escape_control_keep_lines(&message));
            }
            ExitCode::FAILURE
        }
    }
}

/// The log format in force, once logging is set up.
static LOG_FORMAT: std::sync::OnceLock<LogFormat> = std::sync::OnceLock::new();

/// Sets up logging once the configuration is known: `--log-format`, else
/// `[telemetry] log_format`, else text. A one-shot `keel ask` prints its
/// answer where the person reads: its own failures say everything the
/// warnings would, so only errors are logged there unless KEEL_LOG asks
/// for more.
fn init_logging(cli: &Cli, config: Option<&Config>) {
    use std::io::IsTerminal;
    let format = cli
        .log_format
        .map(LogFormat::from)
        .or(config.map(|c| c.telemetry.log_format))
        .unwrap_or_default();
    if LOG_FORMAT.set(format).is_err() {
        return;
    }
    let quiet = matches!(cli.command, Some(Command::Ask { .. }));
    keel::telemetry::logging::init(&keel::telemetry::logging::LogSettings {
        format,
        default_level: if quiet { "error" } else { "warn" }.to_string(),
        filter: std::env::var("KEEL_LOG").ok(),
        // Colour codes only for a person at a terminal: in a pipe, a file
        // or a log collector they are noise (and `NO_COLOR` turns them off
        // anyway).
        colour: std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    });
}

fn load_config(path: Option<&Path>) -> Result<Config> {
    let cwd = std::env::current_dir().context("cannot read the working directory")?;
    match path {
        // Absolute from the start: the file watcher watches the file's
        // folder, and a relative `keel.toml` has none to watch.
        Some(p) => Ok(Config::load(&cwd.join(p))?),
        // The nearest keel.toml upward. Only a missing one means "use the
        // defaults": one that is a directory (or unreadable) is a mistake
        // to report, not a reason to quietly run without the policy.
        None => match keel::config::discover(&cwd)? {
            keel::config::Discovered::File(path) => Ok(Config::load(&path)?),
            keel::config::Discovered::Defaults(workspace) => Ok(Config::default_for(&workspace)),
        },
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

/// keel's environment, as scripts may be granted it. `std::env::vars` panics
/// on a name or value that is not UTF-8 (any process may be started with
/// one); such a variable is left out, with a warning naming it.
fn read_env() -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for (name, value) in std::env::vars_os() {
        match (name.into_string(), value.into_string()) {
            (Ok(name), Ok(value)) => {
                env.insert(name, value);
            }
            (name, _) => {
                let shown = match &name {
                    Ok(n) => n.clone(),
                    Err(raw) => raw.to_string_lossy().into_owned(),
                };
                // `{:?}` escapes control characters in the name.
                tracing::warn!(
                    "environment variable {shown:?} is not valid UTF-8 (name or value); scripts and the programs they run will not see it"
                );
            }
        }
    }
    env
}

fn build_kernel(cli: &Cli, config: Config, rt: &tokio::runtime::Runtime) -> Result<Kernel> {
    let env = read_env();
    Ok(Kernel::builder(config)
        .data_dir(data_dir(cli.data_dir.clone()))
        .env(env)
        .runtime(rt.handle().clone())
        .build()?)
}

fn run(cli: Cli) -> Result<ExitCode> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    match &cli.command {
        Some(Command::Docs { format }) => {
            init_logging(&cli, None);
            let text = match format {
                DocsFormat::Markdown => keel::docs::reference_markdown(),
                DocsFormat::Luau => keel::docs::luau_definitions(),
                DocsFormat::Rhai => keel::docs::rhai_definitions(),
            };
            print!("{text}");
            return Ok(ExitCode::SUCCESS);
        }
        Some(Command::Check {
            path: Some(path),
            json,
        }) => {
            // A path outside the workspace's skill folders is checked too:
            // its folder joins the search path, in a kernel whose state is
            // in memory, so checking a download accepts nothing here.
            let mut config = load_config(cli.config.as_deref())?;
            init_logging(&cli, Some(&config));
            match commands::check::outside_search_folder(&config.skill_paths, path) {
                Err(e) => return Ok(show(Output::failed(e.text()))),
                Ok(None) => {}
                Ok(Some(dir)) => {
                    config.skill_paths.push(dir);
                    let rt = runtime()?;
                    let kernel = Kernel::builder(config)
                        .env(read_env())
                        .runtime(rt.handle().clone())
                        .in_memory()
                        .build()?;
                    eprintln!(
                        "keel: checking {} (outside the workspace's skill folders: grants and first-seen capabilities are not consulted)",
                        std::path::absolute(path)
                            .unwrap_or_else(|_| path.clone())
                            .display()
                    );
                    let checked = commands::check::run(commands::Ctx::new(&kernel), Some(path));
                    return Ok(show(Output::of(checked, *json)));
                }
            }
        }
        Some(Command::Token { rotate }) => {
            let config = load_config(cli.config.as_deref())?;
            return token(&config, &data_dir(cli.data_dir.clone()), *rotate);
        }
        Some(Command::Skill {
            command: SkillCommand::New { name, lang },
        }) => {
            // Into the workspace's first skill folder, wherever in the
            // workspace keel runs (not `skills/skills/…`).
            let config = load_config(cli.config.as_deref())?;
            init_logging(&cli, Some(&config));
            let folder = config
                .skill_paths
                .first()
                .cloned()
                .unwrap_or_else(|| config.workspace.join("skills"));
            return skill_new(&folder, name, *lang);
        }
        _ => {}
    }
    let config = load_config(cli.config.as_deref());
    // A keel.toml that does not load is reported as the error, in the
    // format the flag asked for.
    init_logging(&cli, config.as_ref().ok());
    let config = config?;
    let rt = runtime()?;
    let kernel = build_kernel(&cli, config, &rt)?;
    let ctx = commands::Ctx::new(&kernel);
    match cli.command {
        None => {
            // Fed from a pipe, a failed command makes the exit status 1.
            let all_ok = keel::repl::run(&kernel, &rt)?;
            Ok(if all_ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Some(Command::Skills { json }) => {
            Ok(show(Output::of(Ok(commands::skills::run(ctx)), json)))
        }
        Some(Command::Tools { json }) => Ok(show(Output::of(Ok(commands::tools::run(ctx)), json))),
        Some(Command::Call { tool, args }) => Ok(show(call(ctx, &rt, &tool, args.as_deref()))),
        Some(Command::Check { path, json }) => Ok(show(Output::of(
            commands::check::run(ctx, path.as_deref()),
            json,
        ))),
        Some(Command::Grant { skill, capability }) => Ok(show(Output::of(
            commands::grant::run(ctx, &skill, &capability),
            false,
        ))),
        Some(Command::Revoke { skill, capability }) => Ok(show(Output::of(
            commands::revoke::run(ctx, &skill, &capability),
            false,
        ))),
        Some(Command::Grants { json }) => Ok(show(Output::of(commands::grants::run(ctx), json))),
        Some(Command::Audit { json, limit }) => {
            Ok(show(Output::of(commands::audit::run(ctx, limit), json)))
        }
        Some(Command::Ask {
            message,
            session,
            json,
        }) => {
            let result = ask(&kernel, &rt, &message, session.as_deref(), json);
            // `--json` is JSON whatever happens: an error before the run
            // is an object with the error too (and the same exit status).
            match result {
                Err(e) if json => {
                    print_json_error(&format!("{e:#}"))?;
                    Err(e)
                }
                other => other,
            }
        }
        Some(Command::Sessions { json }) => {
            Ok(show(Output::of(commands::sessions::run(ctx, None), json)))
        }
        Some(Command::Runs { session, json }) => {
            Ok(show(Output::of(commands::runs::run(ctx, &session), json)))
        }
        Some(Command::Approvals { all, json }) => {
            Ok(show(Output::of(commands::approvals::run(ctx, all), json)))
        }
        Some(Command::Approve { id, answer }) => Ok(show(Output::of(
            commands::approve::run(ctx, &id, &answer),
            false,
        ))),
        Some(Command::Skill {
            command: SkillCommand::Accept { name, origin },
        }) => skill_accept(&kernel, &name, &origin),
        Some(Command::Serve { listen }) => serve(&kernel, &rt, listen.as_deref()),
        Some(Command::Skill {
            command: SkillCommand::Disable { name, json },
        }) => Ok(show(Output::of(
            commands::skill_state::run(ctx, &name, false),
            json,
        ))),
        Some(Command::Skill {
            command: SkillCommand::Enable { name, json },
        }) => Ok(show(Output::of(
            commands::skill_state::run(ctx, &name, true),
            json,
        ))),
        Some(Command::Docs { .. } | Command::Skill { .. } | Command::Token { .. }) => {
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `keel serve`: binds, says where, serves until SIGINT or SIGTERM.
fn serve(kernel: &Kernel, rt: &tokio::runtime::Runtime, listen: Option<&str>) -> Result<ExitCode> {
    let addr = match listen {
        Some(l) => keel::config::parse_listen(l).map_err(|e| anyhow::anyhow!("--listen: {e}"))?,
        None => kernel.config().gateway.listen,
    };
    let bound = rt.block_on(keel::gateway::Bound::bind(kernel.clone(), addr))?;
    let addr = bound.local_addr();
    if !addr.ip().is_loopback() {
        tracing::warn!(
            "listening on {addr}, which is reachable from other machines: the gateway speaks plain HTTP, so put TLS in front of it (a reverse proxy; see the README's gateway section)"
        );
    }
    if !bound.has_model() {
        tracing::warn!(
            "no model is configured: /readyz answers 503 and messages are refused until one is"
        );
    }
    let watcher = if kernel.config().watch {
        match keel::skill::watch::watch(kernel) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!("not watching skill folders for changes: {e}");
                None
            }
        }
    } else {
        None
    };
    eprintln!(
        "keel serve: web console at http://{addr}/ — token: {}",
        bound.token_source()
    );
    rt.block_on(bound.serve(async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        eprintln!("keel serve: stopping");
    }));
    drop(watcher);
    Ok(ExitCode::SUCCESS)
}

/// `keel token`: prints the gateway's token (`--rotate`: a new one).
fn token(config: &Config, data_dir: &Path, rotate: bool) -> Result<ExitCode> {
    use keel::gateway::auth;
    let var = &config.gateway.token_env;
    if let Some(value) = std::env::var_os(var).filter(|v| !v.is_empty()) {
        if rotate {
            return Err(auth::TokenError::FromEnv(var.clone()).into());
        }
        eprintln!("keel: the token comes from ${var}");
        println!("{}", value.to_string_lossy());
        return Ok(ExitCode::SUCCESS);
    }
    let path = data_dir.join(auth::TOKEN_FILE);
    let token = if rotate {
        let t = auth::write_new(&path, true)?;
        eprintln!(
            "keel: new token written to {}; the old one no longer works",
            path.display()
        );
        t
    } else {
        auth::read_or_create(&path)?.1
    };
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}

/// Prints a command's output: its notes and error on standard error, the
/// text (status words coloured on a terminal) or JSON on standard output;
/// the exit status is the command's ([`commands::Exit`]).
fn show(out: Output) -> ExitCode {
    use std::io::Write;
    for note in &out.notes {
        eprintln!("note: {}", note.render(Front::Cli, false));
    }
    print!("{}", out.body(Front::Cli, keel::text::colour_stdout()));
    if let Some(e) = &out.error {
        let _ = std::io::stdout().flush();
        eprintln!("keel: {}", e.render(Front::Cli, false));
    }
    ExitCode::from(out.exit.code())
}

/// `keel call TOOL [ARGS|-]`: the shared call, with a person to answer
/// `ask` when standard input is a terminal (and not the arguments).
fn call(
    ctx: commands::Ctx<'_>,
    rt: &tokio::runtime::Runtime,
    tool: &str,
    args: Option<&str>,
) -> Output {
    use std::io::IsTerminal;
    // Arguments read from standard input leave nothing there to answer.
    let at_terminal = std::io::stdin().is_terminal() && args.map(str::trim) != Some("-");
    let mut stdin = std::io::stdin();
    let args = match commands::call::arguments(args, Some(&mut stdin)) {
        Ok(a) => a,
        Err(e) => return Output::failed(e.text()),
    };
    let current = commands::call::CurrentCall::default();
    let mut stderr = std::io::stderr();
    let mut ask = |_: &keel::store::ApprovalRecord, wanted: &dyn Fn() -> bool| {
        keel::repl::chat::read_terminal_line(wanted)
    };
    let person = at_terminal.then_some(commands::call::Person {
        current: &current,
        notes: &mut stderr,
        ask: &mut ask,
    });
    Output::of(commands::call::run(ctx, rt, tool, args, person), true)
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
            if json {
                print_json_error("no model is configured (see the message on standard error)")?;
            }
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
            waiting_hint: !json && std::io::stderr().is_terminal(),
        },
        interactive.then_some(&mut ask_person as chat::AskPerson<'_>),
    )?;
    if json {
        // The run names the chain entry that answered (`model`); the
        // provider's id of that model goes beside it.
        let mut v = serde_json::to_value(&outcome)?;
        let model_id = outcome.model.as_deref().and_then(|name| {
            agent
                .chain()?
                .models()
                .iter()
                .find(|m| m.name == name)
                .map(|m| m.model.clone())
        });
        v["model_id"] = json!(model_id);
        println!("{}", serde_json::to_string_pretty(&v)?);
    }
    Ok(match outcome.state.name() {
        "done" => ExitCode::SUCCESS,
        "cancelled" => {
            eprintln!("keel: the run was cancelled");
            ExitCode::from(130)
        }
        _ => {
            eprintln!(
                "keel: the run failed: {}",
                keel::text::escape_control(
                    outcome.reason.as_deref().unwrap_or("no reason recorded")
                )
            );
            ExitCode::from(1)
        }
    })
}

/// What `keel ask --json` prints when there is no run to show.
fn print_json_error(error: &str) -> Result<()> {
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({"state": "error", "error": error}))?
    );
    Ok(())
}

/// `keel skill accept NAME --origin PATH`: the operator names which copy
/// of a skill owns the name in this workspace.
fn skill_accept(kernel: &Kernel, name: &str, origin: &str) -> Result<ExitCode> {
    use keel::text::escape_control as esc;
    if !valid_skill_name(name) {
        bail!("`{}` is not a skill name (see `keel skills`)", esc(name));
    }
    let set = kernel.skills();
    // The origin must be one keel found for this name: a claimant, or the
    // owner itself (accepting it again changes nothing).
    let wanted = Origin::File(PathBuf::from(origin)).key();
    let found = set
        .claimants
        .iter()
        .map(|c| (&c.name, &c.origin))
        .chain(
            set.skills
                .values()
                .map(|s| (&s.manifest.name, &s.source.origin)),
        )
        .find(|(n, o)| n.as_str() == name && (o.key() == wanted || o.to_string() == origin));
    let Some((_, found)) = found else {
        let known: Vec<String> = set
            .claimants
            .iter()
            .filter(|c| c.name == name)
            .map(|c| c.origin.key())
            .collect();
        bail!(
            "no copy of skill `{}` was found at {}; {}",
            esc(name),
            esc(origin),
            if known.is_empty() {
                "`keel skills` lists every copy and its origin".to_string()
            } else {
                format!("claimants: {}", known.join(", "))
            }
        );
    };
    let key = found.key();
    if kernel
        .store()
        .accept_skill_origin(kernel.workspace(), name, &key)?
    {
        println!(
            "accepted {name} from {key} in workspace {}: it loads from the next start or reload, and shares the name's grants, baseline, policy section and data here",
            kernel.workspace().display()
        );
    } else {
        println!("{name} from {key} is already accepted here");
    }
    Ok(ExitCode::SUCCESS)
}

fn skill_new(folder: &Path, name: &str, lang: Lang) -> Result<ExitCode> {
    if !valid_skill_name(name) {
        bail!(
            "`{name}` is not a valid skill name: use lowercase letters, digits, `_` and `-`, starting with a letter"
        );
    }
    // Shown relative to where the user is, when it is below.
    let dir = folder.join(name);
    let cwd = std::env::current_dir().unwrap_or_default();
    let dir = dir.strip_prefix(&cwd).map(Path::to_path_buf).unwrap_or(dir);
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
