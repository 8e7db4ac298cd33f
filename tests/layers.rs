//! The module map in `src/lib.rs` lists the top-level modules lowest layer first; this checks that
//! it lists every one, and that each uses (`crate::name`) only modules listed above it: the modules
//! depend on each other without cycles, in the order the map gives.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The modules of lib.rs's map (`//! - `name`: …` lines), in order.
fn map() -> Vec<String> {
    let lib = std::fs::read_to_string(src().join("lib.rs")).expect("read lib.rs");
    lib.lines()
        .filter_map(|l| l.strip_prefix("//! - `"))
        .filter_map(|l| l.split_once('`').map(|(name, _)| name.to_string()))
        .collect()
}

/// The top-level modules (`src/*.rs` but the crate roots).
fn modules() -> BTreeSet<String> {
    let entries = std::fs::read_dir(src()).expect("read src");
    entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".rs").map(str::to_string))
        .filter(|n| n != "lib" && n != "main")
        .collect()
}

/// A module's files: `src/name.rs` and everything under `src/name/`.
fn files(name: &str) -> Vec<PathBuf> {
    let mut out = vec![src().join(format!("{name}.rs"))];
    let mut dirs = vec![src().join(name)];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out
}

/// The top-level modules `text` names as `crate::name` or in `use crate::{a, b::c}`.
fn uses(text: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    let ident = |s: &str| s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>();
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            out.extend(group.split(',').map(|part| ident(part.trim())));
        } else {
            out.insert(ident(rest));
        }
    }
    out.retain(|m| known.contains(m));
    out
}

#[test]
fn modules_use_only_the_modules_above_them_in_the_map() {
    let map = map();
    let modules = modules();
    let mapped: BTreeSet<String> = map.iter().cloned().collect();
    assert_eq!(mapped, modules, "lib.rs's module map and src/*.rs differ");
    let mut wrong = Vec::new();
    for (rank, name) in map.iter().enumerate() {
        for file in files(name) {
            let text = std::fs::read_to_string(&file).expect("read source");
            for used in uses(&text, &modules) {
                let at = map.iter().position(|m| *m == used).expect("mapped");
                if at > rank {
                    wrong.push(format!("{} uses `{used}`, listed below `{name}`", file.display()));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "uses against lib.rs's order (a cycle, or the map is out of order):\n{}",
        wrong.join("\n")
    );
}
