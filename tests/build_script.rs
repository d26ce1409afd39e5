//! build.rs: the function-order list reaches the linker only when the link
//! surely goes through rust-lld with a list made for this very build, and
//! a list whose names are stale or garbage never breaks a link.

#[allow(dead_code)]
#[path = "../build.rs"]
mod build_rs;

use std::path::{Path, PathBuf};
use std::process::Command;

use build_rs::{Build, plan, profile};

const RUSTC: &str = "rustc 1.95.0 (59807616e 2026-04-14)";

fn build() -> Build<'static> {
    Build {
        profile: "release",
        target: "x86_64-unknown-linux-gnu".into(),
        rustc: Some(RUSTC),
        linker_env: Vec::new(),
        rustflags: String::new(),
        disabled: false,
        link_map: None,
        host: "x86_64-unknown-linux-gnu".into(),
        glibc: Some((2, 36)),
    }
}

fn packed(b: &Build<'_>) -> bool {
    plan(b, None, Path::new("x"), Path::new("y"))
        .args
        .iter()
        .any(|a| a == "-Wl,-z,pack-relative-relocs")
}

#[test]
fn relocations_are_packed_only_for_this_machine_with_glibc_2_36_or_newer() {
    assert!(packed(&build()));
    let mut b = build();
    b.glibc = Some((2, 35));
    assert!(!packed(&b), "older glibc cannot load DT_RELR");
    b.glibc = Some((3, 0));
    assert!(packed(&b));
    b.glibc = None;
    assert!(!packed(&b), "glibc unknown (musl, no getconf)");
    let mut b = build();
    b.profile = "dist";
    assert!(!packed(&b), "dist ships to other machines");
    let mut b = build();
    b.host = "aarch64-unknown-linux-gnu".into();
    assert!(!packed(&b), "cross-built: not for this machine");
    let mut b = build();
    b.linker_env = vec!["RUSTC_LINKER"];
    assert!(!packed(&b), "another linker");
}

fn list() -> String {
    format!("# made with {RUSTC}\n# comment\n_ZN4keel4main17h0123456789abcdefE\n")
}

fn ordered(b: &Build<'_>, list: Option<&str>) -> bool {
    let p = plan(
        b,
        list,
        Path::new("build/symbol-order-release.txt"),
        Path::new("/out/symbol-order.txt"),
    );
    let on = p
        .args
        .iter()
        .any(|a| a == "-Wl,--symbol-ordering-file=/out/symbol-order.txt");
    if on {
        assert!(p.args.iter().any(|a| a == "-Wl,--no-warn-symbol-ordering"));
        assert!(p.note.is_none());
    } else {
        assert!(
            !p.args.iter().any(|a| a.contains("ordering")),
            "{:?}",
            p.args
        );
    }
    on
}

#[test]
fn the_list_is_passed_only_when_rust_lld_surely_links_and_the_list_is_this_rustcs() {
    let l = list();
    assert!(ordered(&build(), Some(&l)));

    let mut b = build();
    b.target = "aarch64-unknown-linux-gnu".into();
    assert!(!ordered(&b, Some(&l)), "another target");
    let mut b = build();
    b.target = "x86_64-unknown-linux-musl".into();
    assert!(!ordered(&b, Some(&l)), "musl links with its own linker");
    let mut b = build();
    b.linker_env = vec!["RUSTC_LINKER"];
    assert!(!ordered(&b, Some(&l)), "a linker set in the config");
    let mut b = build();
    b.linker_env = vec!["CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER"];
    assert!(!ordered(&b, Some(&l)));
    for flags in [
        "-Clinker=clang",
        "-C\x1flinker-features=-lld",
        "-Clink-self-contained=-linker",
        "-Clink-arg=-fuse-ld=bfd",
    ] {
        let mut b = build();
        b.rustflags = flags.into();
        assert!(!ordered(&b, Some(&l)), "{flags}");
    }
    let mut b = build();
    b.rustc = Some("rustc 1.89.0 (29483883e 2025-08-04)");
    assert!(
        !ordered(
            &b,
            Some(&l.replace(RUSTC, "rustc 1.89.0 (29483883e 2025-08-04)"))
        ),
        "before 1.90 the default linker is the system's"
    );
    let mut b = build();
    b.rustc = None;
    assert!(!ordered(&b, Some(&l)), "rustc did not say its version");
    let mut b = build();
    b.disabled = true;
    assert!(!ordered(&b, Some(&l)), "KEEL_SYMBOL_ORDER=0");

    // The list must be this rustc's: names carry its hash.
    let other = l.replace("1.95.0 (59807616e", "1.96.0 (0123456789");
    assert!(!ordered(&build(), Some(&other)));
    assert!(!ordered(
        &build(),
        Some("_ZN4keel4main17h0123456789abcdefE\n")
    ));
    assert!(!ordered(&build(), Some("")));
    assert!(!ordered(&build(), None));
    let p = plan(
        &build(),
        Some(&other),
        Path::new("build/symbol-order-dist.txt"),
        Path::new("/o"),
    );
    let note = p.note.expect("a reason");
    assert!(
        note.contains("regenerate it with scripts/order-symbols"),
        "{note}"
    );
}

#[test]
fn the_link_map_is_asked_for_only_where_the_option_exists() {
    let mut b = build();
    b.link_map = Some(PathBuf::from("/tmp/k.map"));
    b.glibc = None;
    let p = plan(&b, None, Path::new("x"), Path::new("y"));
    assert_eq!(p.args, ["-Wl,-Map=/tmp/k.map", "-Wl,--no-demangle"]);
    b.target = "x86_64-apple-darwin".into();
    assert!(
        plan(&b, None, Path::new("x"), Path::new("y"))
            .args
            .is_empty()
    );
}

#[test]
fn the_profile_is_read_from_the_output_folder() {
    let out = |p: &str| PathBuf::from(format!("/t/{p}/build/keel-0123/out"));
    assert_eq!(
        profile(&out("release"), Some("3"), Some("false")).as_deref(),
        Some("release")
    );
    assert_eq!(
        profile(&out("release"), Some("3"), Some("true")).as_deref(),
        Some("bench")
    );
    assert_eq!(
        profile(&out("dist"), Some("s"), Some("false")).as_deref(),
        Some("dist")
    );
    assert_eq!(
        profile(
            &out("x86_64-unknown-linux-gnu/release"),
            Some("3"),
            Some("false")
        )
        .as_deref(),
        Some("release")
    );
    assert_eq!(profile(&out("debug"), Some("0"), Some("true")), None);
    assert_eq!(profile(&out("release"), Some("0"), Some("false")), None);
    assert_eq!(profile(&out("custom"), Some("3"), Some("false")), None);
    assert_eq!(profile(Path::new("/out"), Some("3"), None), None);
}

/// Links a small program with rustc's default linker and the given list;
/// returns the addresses of its two marked functions, or `None` where the
/// list does not apply (not rust-lld).
fn link_with(dir: &Path, list: &str, pack: bool) -> Option<(u64, u64)> {
    let version = Command::new("rustc").arg("--version").output().ok()?;
    let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
    let b = Build {
        rustc: Some(&version),
        ..build()
    };
    if !cfg!(all(
        target_arch = "x86_64",
        target_os = "linux",
        target_env = "gnu"
    )) || build_rs::lld_applies(&b).is_err()
    {
        eprintln!("skipped: {version} on this target does not link with rust-lld");
        return None;
    }
    let src = dir.join("p.rs");
    std::fs::write(
        &src,
        "#[unsafe(no_mangle)] #[inline(never)] pub extern \"C\" fn keel_order_a() -> u32 { std::hint::black_box(1) }\n\
         #[unsafe(no_mangle)] #[inline(never)] pub extern \"C\" fn keel_order_b() -> u32 { std::hint::black_box(2) }\n\
         fn main() { println!(\"{}\", keel_order_a() + keel_order_b()); }\n",
    )
    .expect("write source");
    let file = dir.join("order.txt");
    std::fs::write(&file, list).expect("write list");
    let exe = dir.join("p");
    let out = Command::new("rustc")
        .args(["--edition=2024", "-Copt-level=1", "-Cstrip=none"])
        .arg(format!(
            "-Clink-arg=-Wl,--symbol-ordering-file={}",
            file.display()
        ))
        .arg("-Clink-arg=-Wl,--no-warn-symbol-ordering")
        .args(pack.then_some("-Clink-arg=-Wl,-z,pack-relative-relocs"))
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .output()
        .expect("rustc");
    assert!(
        out.status.success(),
        "the link failed with list {list:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // It loads and runs (packed relocations applied by this glibc).
    let ran = Command::new(&exe).output().expect("run");
    assert_eq!(String::from_utf8_lossy(&ran.stdout).trim(), "3");
    let nm = Command::new("nm").arg(&exe).output().expect("nm");
    let syms = String::from_utf8_lossy(&nm.stdout);
    let addr = |name: &str| {
        syms.lines()
            .find(|l| l.ends_with(&format!(" {name}")))
            .and_then(|l| u64::from_str_radix(l.split(' ').next()?, 16).ok())
            .unwrap_or_else(|| panic!("no {name} in nm output"))
    };
    Some((addr("keel_order_a"), addr("keel_order_b")))
}

#[test]
fn the_linker_follows_the_list_and_stale_or_garbage_names_never_break_the_link() {
    let dir = tempfile::tempdir().expect("tempdir");
    let header = format!("# made with {RUSTC}\n# a comment\n");
    // The order is the list's, whichever way round.
    let Some((a, b)) = link_with(
        dir.path(),
        &format!("{header}keel_order_b\nkeel_order_a\n"),
        false,
    ) else {
        return;
    };
    assert!(b < a, "b listed first, yet a={a:#x} b={b:#x}");
    let (a, b) = link_with(
        dir.path(),
        &format!("{header}keel_order_a\nkeel_order_b\n"),
        false,
    )
    .expect("linked before");
    assert!(a < b, "a listed first, yet a={a:#x} b={b:#x}");
    // Stale names, garbage, a data symbol, a name listed twice, a very long
    // line, blank lines, no final newline: still a working program.
    let junk = format!(
        "{header}_ZN4keel4gone17h0000000000000000E\n\n   \n\u{fffd}\u{1}\t*\n{}\nkeel_order_b\nkeel_order_b\n_DYNAMIC\n__bss_start\nkeel_order_a",
        "x".repeat(100_000)
    );
    let (a, b) = link_with(dir.path(), &junk, false).expect("linked before");
    assert!(b < a, "the good names still order: a={a:#x} b={b:#x}");
    link_with(dir.path(), "", false).expect("an empty list");
}

#[test]
fn a_binary_with_packed_relocations_runs_where_build_rs_would_pack_them() {
    let here = Command::new("getconf")
        .arg("GNU_LIBC_VERSION")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let newer = here
        .strip_prefix("glibc 2.")
        .and_then(|m| m.split('.').next()?.parse::<u32>().ok())
        .is_some_and(|m| m >= 36);
    if !newer {
        eprintln!("skipped: {here:?} is older than 2.36 or not glibc");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let list = format!("# made with {RUSTC}\nkeel_order_b\nkeel_order_a\n");
    if let Some((a, b)) = link_with(dir.path(), &list, true) {
        assert!(b < a);
        let elf = Command::new("readelf")
            .args(["-S", "-W"])
            .arg(dir.path().join("p"))
            .output()
            .expect("readelf");
        assert!(
            String::from_utf8_lossy(&elf.stdout).contains(".relr.dyn"),
            "no packed relocations"
        );
    }
}
