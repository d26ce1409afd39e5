//! What else a program needs to be *executed*: its ELF interpreter or its
//! `#!` interpreter.
//!
//! Landlock checks the execute right on every file the kernel opens to run
//! a program: the program itself, the dynamic loader named in its
//! `PT_INTERP` header (`/lib64/ld-linux-x86-64.so.2`), and for a script the
//! interpreter on its `#!` line (and that interpreter's loader). Shared
//! libraries are mapped by the loader with ordinary reads, so they need read
//! access only. This module reads those names from the file's first bytes;
//! it is pure parsing over a byte buffer, so it is tested without files.

use std::io::Read;
use std::path::{Path, PathBuf};

/// How many bytes of a program are read to find its interpreter: ELF
/// program headers sit near the start of the file (and `PT_INTERP` is
/// required to come before any loadable segment).
const HEAD: usize = 64 * 1024;

/// The longest `#!` line the kernel reads (`BINPRM_BUF_SIZE`).
const SHEBANG_MAX: usize = 256;

/// What the kernel opens to start a program, besides the program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interpreter {
    /// A statically linked program, or a format keel does not parse.
    None,
    /// `PT_INTERP` of a dynamically linked ELF file.
    Elf(PathBuf),
    /// A `#!` script: the interpreter and its first argument, if any.
    Script { path: PathBuf, arg: Option<String> },
}

/// Reads the start of `program` and names its interpreter.
pub fn interpreter_of(program: &Path) -> std::io::Result<Interpreter> {
    let mut head = Vec::with_capacity(4096);
    std::fs::File::open(program)?
        .take(HEAD as u64)
        .read_to_end(&mut head)?;
    Ok(parse(&head))
}

/// Names the interpreter from a file's first bytes.
pub fn parse(head: &[u8]) -> Interpreter {
    if head.starts_with(b"#!") {
        return parse_shebang(head);
    }
    parse_elf(head).map_or(Interpreter::None, Interpreter::Elf)
}

fn parse_shebang(head: &[u8]) -> Interpreter {
    let line = &head[2..head.len().min(SHEBANG_MAX)];
    let line = line.split(|&b| b == b'\n').next().unwrap_or_default();
    let Ok(line) = std::str::from_utf8(line) else {
        return Interpreter::None;
    };
    // The kernel splits the line once: the interpreter, then everything
    // after the first run of blanks as one argument.
    let line = line.trim_matches([' ', '\t', '\r']);
    let (path, arg) = match line.split_once([' ', '\t']) {
        Some((p, a)) => (p, Some(a.trim_matches([' ', '\t']).to_string())),
        None => (line, None),
    };
    if path.is_empty() || !path.starts_with('/') {
        return Interpreter::None;
    }
    Interpreter::Script {
        path: PathBuf::from(path),
        arg: arg.filter(|a| !a.is_empty()),
    }
}

/// `PT_INTERP` of a 32- or 64-bit ELF file of either byte order.
fn parse_elf(b: &[u8]) -> Option<PathBuf> {
    if b.len() < 52 || &b[..4] != b"\x7fELF" {
        return None;
    }
    let wide = match b[4] {
        1 => false,
        2 => true,
        _ => return None,
    };
    let le = match b[5] {
        1 => true,
        2 => false,
        _ => return None,
    };
    let u16_at = |o: usize| -> Option<u64> {
        let s: [u8; 2] = b.get(o..o + 2)?.try_into().ok()?;
        Some(u64::from(if le {
            u16::from_le_bytes(s)
        } else {
            u16::from_be_bytes(s)
        }))
    };
    let u32_at = |o: usize| -> Option<u64> {
        let s: [u8; 4] = b.get(o..o + 4)?.try_into().ok()?;
        Some(u64::from(if le {
            u32::from_le_bytes(s)
        } else {
            u32::from_be_bytes(s)
        }))
    };
    let u64_at = |o: usize| -> Option<u64> {
        let s: [u8; 8] = b.get(o..o + 8)?.try_into().ok()?;
        Some(if le {
            u64::from_le_bytes(s)
        } else {
            u64::from_be_bytes(s)
        })
    };
    let word = |o: usize| if wide { u64_at(o) } else { u32_at(o) };
    let (phoff, phentsize, phnum) = if wide {
        (u64_at(0x20)?, u16_at(0x36)?, u16_at(0x38)?)
    } else {
        (u32_at(0x1c)?, u16_at(0x2a)?, u16_at(0x2c)?)
    };
    const PT_INTERP: u64 = 3;
    for i in 0..phnum {
        let ph = usize::try_from(phoff.checked_add(i.checked_mul(phentsize)?)?).ok()?;
        if u32_at(ph)? != PT_INTERP {
            continue;
        }
        let (offset, size) = if wide {
            (word(ph + 0x08)?, word(ph + 0x20)?)
        } else {
            (word(ph + 0x04)?, word(ph + 0x10)?)
        };
        let start = usize::try_from(offset).ok()?;
        let end = start.checked_add(usize::try_from(size).ok()?)?;
        let raw = b.get(start..end)?;
        let raw = raw.split(|&c| c == 0).next()?;
        let text = std::str::from_utf8(raw).ok()?;
        return text.starts_with('/').then(|| PathBuf::from(text));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal 64-bit little-endian ELF header with one PT_INTERP entry.
    fn elf64(interp: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 0x40 + 0x38];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
        b[0x36..0x38].copy_from_slice(&0x38u16.to_le_bytes());
        b[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        let ph = 0x40;
        b[ph..ph + 4].copy_from_slice(&3u32.to_le_bytes());
        let off = b.len() as u64;
        b[ph + 8..ph + 16].copy_from_slice(&off.to_le_bytes());
        b[ph + 0x20..ph + 0x28].copy_from_slice(&(interp.len() as u64).to_le_bytes());
        b.extend_from_slice(interp);
        b
    }

    #[test]
    fn the_loader_of_a_dynamic_elf_file_is_found() {
        assert_eq!(
            parse(&elf64(b"/lib64/ld-linux-x86-64.so.2\0")),
            Interpreter::Elf("/lib64/ld-linux-x86-64.so.2".into())
        );
    }

    #[test]
    fn a_real_program_on_this_machine_names_its_loader() {
        // /bin/sh exists on every Unix CI machine; it is dynamically linked
        // on glibc and musl systems alike (busybox-static would be None).
        match interpreter_of(Path::new("/bin/sh")).unwrap() {
            Interpreter::Elf(p) => assert!(p.is_absolute(), "{p:?}"),
            Interpreter::None => {}
            other => panic!("/bin/sh is not a script: {other:?}"),
        }
    }

    #[test]
    fn truncated_or_lying_headers_are_not_trusted() {
        let good = elf64(b"/lib/ld.so\0");
        for cut in [0, 4, 20, 52, 0x40, 0x50, good.len() - 3] {
            // Never a panic; a name only when the whole name is there.
            let got = parse(&good[..cut]);
            assert!(matches!(got, Interpreter::None), "cut {cut}: {got:?}");
        }
        let mut huge = good.clone();
        huge[0x40 + 0x20..0x40 + 0x28].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(parse(&huge), Interpreter::None);
        let mut relative = elf64(b"ld.so\0");
        assert_eq!(parse(&relative), Interpreter::None);
        relative[4] = 9;
        assert_eq!(parse(&relative), Interpreter::None);
    }

    #[test]
    fn shebang_lines_are_split_like_the_kernel_does() {
        assert_eq!(
            parse(b"#!/bin/sh\necho hi\n"),
            Interpreter::Script {
                path: "/bin/sh".into(),
                arg: None
            }
        );
        assert_eq!(
            parse(b"#! /usr/bin/env  python3 -u\n"),
            Interpreter::Script {
                path: "/usr/bin/env".into(),
                arg: Some("python3 -u".into())
            }
        );
        assert_eq!(parse(b"#!sh\n"), Interpreter::None);
        assert_eq!(parse(b"#!\n"), Interpreter::None);
        assert_eq!(parse(b"plain text"), Interpreter::None);
    }
}
