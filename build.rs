//! Links the `keel` binary's hot functions next to each other.
//!
//! Most of keel's memory at run time is its own code, mapped from the
//! binary: the kernel maps the pages around each one touched, so the
//! functions one `keel ask` runs, spread over the whole text, cost far more
//! than their size. `scripts/order-symbols` lists the functions the real
//! workloads run (one ask, the console, loading skills, a tool call) in
//! `build/symbol-order-PROFILE.txt`; this script hands the list for the
//! profile being built to the linker (`--symbol-ordering-file`), which lays
//! those functions out first, together.
//!
//! The list is an optimisation and must never break a build, so it is
//! passed only when it surely applies, and otherwise the build is the plain
//! one:
//! - an optimised profile (`bench`, `release`, `dist`) with a list made
//!   for it, on x86_64 Linux (GNU), where rustc ≥ 1.90 links with its own
//!   `rust-lld` (GNU ld and gold lack the option);
//! - no linker chosen by the user (`RUSTC_LINKER`, a target `linker`
//!   setting, or linker flags in `RUSTFLAGS`), which may not be lld;
//! - the list was made with this very rustc (its first line says which):
//!   symbol names carry hashes of the compiler version and of the profile's
//!   settings, so another toolchain's list would name nothing. Names that
//!   no longer exist (the code changed since the list was made) are
//!   ignored by the linker (`--no-warn-symbol-ordering`): a stale list
//!   only loses its gain.
//!
//! Where the same conditions hold and the binary is built on and for this
//! machine, whose glibc is 2.36 or newer (not `dist`, which ships to
//! others), relative relocations are packed too (`-z pack-relative-relocs`):
//! the dynamic loader then reads a few KB at start instead of 1.3 MB.
//!
//! `KEEL_SYMBOL_ORDER=0` turns the order off; `KEEL_LINK_MAP=FILE` also writes the
//! linker's map (for `scripts/order-symbols`, which reads the profile's
//! symbol names from it: a stripped binary has none).
//!
//! The decision is a pure function ([`plan`]) that `tests/build_script.rs`
//! includes and tests, with a real link.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // The folder, not a file: a list that does not exist yet would make
    // cargo rerun this script (and relink) at every build.
    println!("cargo:rerun-if-changed=build");
    for var in [
        "KEEL_SYMBOL_ORDER",
        "KEEL_LINK_MAP",
        "RUSTC_LINKER",
        "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER",
        "CARGO_ENCODED_RUSTFLAGS",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let env = |k: &str| std::env::var(k).ok();
    let Some(out_dir) = env("OUT_DIR").map(PathBuf::from) else {
        return;
    };
    let Some(profile) = profile(
        &out_dir,
        env("OPT_LEVEL").as_deref(),
        env("DEBUG").as_deref(),
    ) else {
        return;
    };
    let list_path = Path::new("build").join(format!("symbol-order-{profile}.txt"));
    let rustc = rustc_version();
    let build = Build {
        profile: &profile,
        target: env("TARGET").unwrap_or_default(),
        rustc: rustc.as_deref(),
        linker_env: [
            "RUSTC_LINKER",
            "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER",
        ]
        .into_iter()
        .filter(|k| env(k).is_some_and(|v| !v.is_empty()))
        .collect(),
        rustflags: env("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default(),
        disabled: env("KEEL_SYMBOL_ORDER").as_deref() == Some("0"),
        link_map: env("KEEL_LINK_MAP").map(PathBuf::from),
        host: env("HOST").unwrap_or_default(),
        glibc: glibc_version(),
    };
    // A copy in OUT_DIR is what the linker reads: the checked-in file may
    // change or vanish (a checkout, the script rewriting it) before the
    // link, and a missing file would fail it.
    let list = std::fs::read_to_string(&list_path).ok();
    let copy = out_dir.join("symbol-order.txt");
    let plan = plan(&build, list.as_deref(), &list_path, &copy);
    if let Some(why) = &plan.note
        && profile == "dist"
    {
        // Only for the build that ships: a warning at every release build
        // of every user on another toolchain would be noise.
        println!("cargo:warning=function order not applied: {why}");
    }
    if plan
        .args
        .iter()
        .any(|a| a.contains("--symbol-ordering-file"))
        && std::fs::write(&copy, list.unwrap_or_default()).is_err()
    {
        return;
    }
    for arg in plan.args {
        println!("cargo:rustc-link-arg-bin=keel={arg}");
    }
}

/// What is being built, as build.rs sees it.
pub struct Build<'a> {
    /// `bench`, `release` or `dist`.
    pub profile: &'a str,
    /// The target triple.
    pub target: String,
    /// `rustc --version`.
    pub rustc: Option<&'a str>,
    /// Variables set that choose a linker.
    pub linker_env: Vec<&'static str>,
    /// `CARGO_ENCODED_RUSTFLAGS`.
    pub rustflags: String,
    /// `KEEL_SYMBOL_ORDER=0`.
    pub disabled: bool,
    /// `KEEL_LINK_MAP`.
    pub link_map: Option<PathBuf>,
    /// The build machine's triple.
    pub host: String,
    /// The build machine's glibc (`getconf GNU_LIBC_VERSION`).
    pub glibc: Option<(u32, u32)>,
}

/// The linker arguments for the keel binary, and why the order was left
/// out (when it was).
pub struct Plan {
    pub args: Vec<String>,
    pub note: Option<String>,
}

/// Decides, from what is built and the list's text (`None`: no list for
/// this profile), what to pass to the linker. `copy` is where the list
/// will be for the linker.
pub fn plan(b: &Build<'_>, list: Option<&str>, list_path: &Path, copy: &Path) -> Plan {
    let mut args = Vec::new();
    if let Err(why) = lld_applies(b) {
        return Plan {
            args,
            note: Some(why),
        };
    }
    if let Some(map) = &b.link_map {
        args.push(format!("-Wl,-Map={}", map.display()));
        args.push("-Wl,--no-demangle".to_string());
    }
    // Relative relocations packed (DT_RELR): the loader's table shrinks
    // from about 1.3 MB to a few KB, read at every start. glibc before 2.36
    // cannot load such a binary (it says so: `GLIBC_ABI_DT_RELR` not
    // found), so only for a binary built on and for this machine with a
    // new enough glibc — never `dist`, which ships to others.
    if b.profile != "dist" && b.host == b.target && b.glibc.is_some_and(|v| v >= (2, 36)) {
        args.push("-Wl,-z,pack-relative-relocs".to_string());
    }
    if b.disabled {
        return Plan { args, note: None };
    }
    let Some(list) = list else {
        let note = format!("no {}", list_path.display());
        return Plan {
            args,
            note: Some(note),
        };
    };
    let made_with = list
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("# made with "))
        .map(str::trim);
    if made_with.is_none() || made_with != b.rustc {
        let note = format!(
            "{} was made with {}, this build uses {}; regenerate it with scripts/order-symbols {}",
            list_path.display(),
            made_with.unwrap_or("an unknown rustc"),
            b.rustc.unwrap_or("an unknown rustc"),
            b.profile
        );
        return Plan {
            args,
            note: Some(note),
        };
    }
    args.push(format!("-Wl,--symbol-ordering-file={}", copy.display()));
    // Names the code no longer has are skipped without a word.
    args.push("-Wl,--no-warn-symbol-ordering".to_string());
    Plan { args, note: None }
}

/// The profile being built, when it is one of the optimised ones. Cargo
/// does not tell build scripts its name: `OUT_DIR` is under
/// `<target>/<profile dir>/build/`, and `bench` shares `release`'s folder,
/// told apart by its line tables (`DEBUG`).
pub fn profile(out_dir: &Path, opt_level: Option<&str>, debug: Option<&str>) -> Option<String> {
    let dir = out_dir.ancestors().nth(3)?.file_name()?.to_str()?;
    if opt_level.is_none_or(|o| o == "0") {
        return None;
    }
    match dir {
        "release" if debug == Some("true") => Some("bench".into()),
        "release" => Some("release".into()),
        "dist" => Some("dist".into()),
        _ => None,
    }
}

/// Whether the link surely goes through rustc's own lld: x86_64 Linux
/// (GNU), rustc ≥ 1.90, and nothing that picks another linker.
pub fn lld_applies(b: &Build<'_>) -> Result<(), String> {
    if b.target != "x86_64-unknown-linux-gnu" {
        return Err(format!(
            "target {} (only x86_64-unknown-linux-gnu links with rust-lld by default)",
            b.target
        ));
    }
    if let Some(var) = b.linker_env.first() {
        return Err(format!("{var} chooses the linker"));
    }
    // `-C linker=…`, `-C link-arg…`, `-C linker-features=…`,
    // `-C link-self-contained=…`: any of them may mean another linker.
    if b.rustflags.contains("link") {
        return Err("RUSTFLAGS has linker settings".into());
    }
    let minor = b
        .rustc
        .and_then(|v| v.strip_prefix("rustc 1."))
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse::<u32>().ok());
    match minor {
        Some(m) if m >= 90 => Ok(()),
        _ => Err(format!(
            "{} links with the system linker (rust-lld is the default from 1.90)",
            b.rustc.unwrap_or("this rustc")
        )),
    }
}

/// The build machine's glibc version, e.g. `(2, 36)`.
fn glibc_version() -> Option<(u32, u32)> {
    let out = Command::new("getconf")
        .arg("GNU_LIBC_VERSION")
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let (major, minor) = text.trim().strip_prefix("glibc ")?.split_once('.')?;
    let minor = minor.split('.').next()?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// `rustc --version` of the compiler cargo uses, e.g.
/// `rustc 1.95.0 (59807616e 2026-04-14)`.
fn rustc_version() -> Option<String> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(rustc).arg("--version").output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    Some(text.trim().to_string()).filter(|t| !t.is_empty())
}
