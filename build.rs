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
//! `KEEL_SYMBOL_ORDER=0` turns it off; `KEEL_LINK_MAP=FILE` also writes the
//! linker's map (for `scripts/order-symbols`, which reads the profile's
//! symbol names from it: a stripped binary has none).

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    for var in [
        "KEEL_SYMBOL_ORDER",
        "KEEL_LINK_MAP",
        "RUSTC_LINKER",
        "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER",
        "CARGO_ENCODED_RUSTFLAGS",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let Some(profile) = profile() else {
        return;
    };
    // The folder, not the file: a file that does not exist yet would make
    // cargo rerun this script (and relink) at every build.
    println!("cargo:rerun-if-changed=build");
    let list = Path::new("build").join(format!("symbol-order-{profile}.txt"));
    if let Err(why) = lld_applies() {
        note(&profile, &why);
        return;
    }
    if let Some(map) = std::env::var_os("KEEL_LINK_MAP") {
        println!(
            "cargo:rustc-link-arg-bin=keel=-Wl,-Map={}",
            PathBuf::from(map).display()
        );
        println!("cargo:rustc-link-arg-bin=keel=-Wl,--no-demangle");
    }
    if std::env::var("KEEL_SYMBOL_ORDER").as_deref() == Ok("0") {
        return;
    }
    let Ok(text) = std::fs::read_to_string(&list) else {
        return;
    };
    let made_with = text
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("# made with "))
        .map(str::trim);
    let rustc = rustc_version();
    if made_with != rustc.as_deref() {
        note(
            &profile,
            &format!(
                "{} was made with {}, this build uses {}; not used (regenerate it with scripts/order-symbols {profile})",
                list.display(),
                made_with.unwrap_or("an unknown rustc"),
                rustc.as_deref().unwrap_or("an unknown rustc")
            ),
        );
        return;
    }
    let Ok(abs) = std::path::absolute(&list) else {
        return;
    };
    println!(
        "cargo:rustc-link-arg-bin=keel=-Wl,--symbol-ordering-file={}",
        abs.display()
    );
    println!("cargo:rustc-link-arg-bin=keel=-Wl,--no-warn-symbol-ordering");
}

/// Says why the list was left out, when someone is likely to care: only
/// for `dist`, the build that ships (a warning on every release build of
/// every user on another toolchain would be noise).
fn note(profile: &str, why: &str) {
    if profile == "dist" {
        println!("cargo:warning=function order not applied: {why}");
    }
}

/// The profile being built, when it is one of the optimised ones. Cargo
/// does not tell build scripts its name: `OUT_DIR` is under
/// `<target>/<profile dir>/build/`, and `bench` shares `release`'s folder,
/// told apart by its line tables (`DEBUG`).
fn profile() -> Option<String> {
    let out = PathBuf::from(std::env::var_os("OUT_DIR")?);
    let dir = out.ancestors().nth(3)?.file_name()?.to_str()?.to_string();
    let opt = std::env::var("OPT_LEVEL").ok()?;
    if opt == "0" {
        return None;
    }
    let debug = std::env::var("DEBUG").is_ok_and(|d| d == "true");
    match dir.as_str() {
        "release" if debug => Some("bench".into()),
        "release" => Some("release".into()),
        "dist" => Some("dist".into()),
        _ => None,
    }
}

/// Whether the link surely goes through rustc's own lld: x86_64 Linux
/// (GNU), rustc ≥ 1.90, and nothing that picks another linker.
fn lld_applies() -> Result<(), String> {
    let target = std::env::var("TARGET").unwrap_or_default();
    if target != "x86_64-unknown-linux-gnu" {
        return Err(format!(
            "target {target} (only x86_64-unknown-linux-gnu links with rust-lld by default)"
        ));
    }
    for var in [
        "RUSTC_LINKER",
        "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER",
    ] {
        if std::env::var_os(var).is_some_and(|v| !v.is_empty()) {
            return Err(format!("{var} chooses the linker"));
        }
    }
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if flags.contains("link") {
        return Err("RUSTFLAGS has linker settings".into());
    }
    let minor = rustc_version()
        .as_deref()
        .and_then(|v| v.strip_prefix("rustc 1."))
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse::<u32>().ok());
    match minor {
        Some(m) if m >= 90 => Ok(()),
        _ => Err("rustc before 1.90 links with the system linker".into()),
    }
}

/// `rustc --version` of the compiler cargo uses, e.g.
/// `rustc 1.95.0 (59807616e 2026-04-14)`.
fn rustc_version() -> Option<String> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(rustc).arg("--version").output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    Some(text.trim().to_string()).filter(|t| !t.is_empty())
}
