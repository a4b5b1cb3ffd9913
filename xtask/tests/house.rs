//! Rules of the house that no compiler checks: docs cite only what a reader can open, and no
//! module imports in a circle.
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Every tracked-looking source and doc file under the repository's own folders.
fn files(exts: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = [
        "src",
        "crates",
        "xtask",
        "tests",
        "benches",
        "python",
        "paper",
        "artifacts",
        "results",
        "datasets",
    ]
    .iter()
    .map(|d| root().join(d))
    .collect();
    stack.push(root().join("README.md"));
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            if p.file_name()
                .is_some_and(|n| n == "target" || n == "runs" || n == "__pycache__")
            {
                continue;
            }
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        } else if p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| exts.contains(&e))
        {
            out.push(p);
        }
    }
    out
}

/// The reproduction notes the team wrote from the paper and the official code are not in the
/// repository, so a citation of their sections ("spec §3") leads nowhere: cite the paper's
/// section, figure or equation, or the official code's file and line.
#[test]
fn no_file_cites_the_unpublished_spec() {
    let mut hits = Vec::new();
    for f in files(&["rs", "md", "toml", "py"]) {
        if f.ends_with("house.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        for (i, line) in text.lines().enumerate() {
            if line.contains("spec §")
                || line.contains("spec's §")
                || line.contains("reproduction spec")
            {
                hits.push(format!("{}:{}: {}", f.display(), i + 1, line.trim()));
            }
        }
    }
    assert!(
        hits.is_empty(),
        "citations of the spec:\n{}",
        hits.join("\n")
    );
}

/// The module path of each source file of the crate rooted at `src` (tests' own files left out):
/// `src/matrix/run.rs` is `["matrix", "run"]`.
fn modules(src: &Path) -> Vec<(Vec<String>, PathBuf)> {
    let mut out = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
            continue;
        }
        let Ok(rel) = p.strip_prefix(src) else {
            continue;
        };
        let Some(rel) = rel.to_str().and_then(|r| r.strip_suffix(".rs")) else {
            continue;
        };
        let mut path: Vec<String> = rel.split('/').map(String::from).collect();
        let last = path.last().cloned().unwrap_or_default();
        if last == "tests" || last == "props" || last.ends_with("_tests") {
            continue;
        }
        if ["lib", "main", "mod"].contains(&last.as_str()) {
            path.pop();
        }
        out.push((path, p));
    }
    out
}

/// Source without comments and without `#[cfg(test)] mod x { ... }` blocks.
fn non_test_code(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let next_is_mod = lines.peek().is_some_and(|n| {
            n.trim_end().ends_with('{') && n.split_whitespace().any(|w| w == "mod")
        });
        if line.trim() == "#[cfg(test)]" && next_is_mod {
            let mut depth = 0i32;
            for l in lines.by_ref() {
                depth += l.matches('{').count() as i32 - l.matches('}').count() as i32;
                if depth <= 0 {
                    break;
                }
            }
            continue;
        }
        out.push_str(line.split("//").next().unwrap_or(""));
        out.push('\n');
    }
    out
}

/// The paths a module's code names through `crate::` and `super::` (absolute module paths).
fn references(module: &[String], code: &str) -> Vec<Vec<String>> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut refs = Vec::new();
    for (i, _) in code.match_indices("::") {
        let head_start = code[..i]
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .map_or(0, |k| k + 1);
        let head = &code[head_start..i];
        if head != "crate" && head != "super" {
            continue;
        }
        let mut base: Vec<String> = match head {
            "crate" => vec![],
            _ => module[..module.len().saturating_sub(1)].to_vec(),
        };
        let mut rest = &code[i + 2..];
        while let Some(r) = rest.strip_prefix("super::") {
            base.pop();
            rest = r;
        }
        let mut path = base.clone();
        loop {
            let id = ident(rest);
            if id.is_empty() {
                break;
            }
            rest = &rest[id.len()..];
            path.push(id);
            match rest.strip_prefix("::") {
                Some(r) => rest = r,
                None => break,
            }
        }
        // `use crate::{a, b::c}`: the first name of each item.
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let id = ident(item.trim());
                if !id.is_empty() {
                    refs.push([path.clone(), vec![id]].concat());
                }
            }
        }
        refs.push(path);
    }
    refs
}

/// Modules that need each other, directly or around a ring, are one thing in two files: a
/// reader cannot understand either first. Checked among the sibling modules of every crate (a
/// module's use of its parent or children is not a circle).
#[test]
fn no_module_imports_in_a_circle() {
    let mut circles = Vec::new();
    for src in [
        "src",
        "xtask/src",
        "crates/fetch/src",
        "crates/frame/src",
        "crates/report/src",
    ] {
        let mods = modules(&root().join(src));
        let known: std::collections::BTreeSet<Vec<String>> =
            mods.iter().map(|(m, _)| m.clone()).collect();
        let mut edges: std::collections::BTreeMap<
            Vec<String>,
            std::collections::BTreeSet<Vec<String>>,
        > = Default::default();
        for (m, file) in &mods {
            let code = non_test_code(&std::fs::read_to_string(file).unwrap());
            for r in references(m, &code) {
                let Some(t) = (0..=r.len())
                    .rev()
                    .map(|n| &r[..n])
                    .find(|p| known.contains(*p))
                else {
                    continue;
                };
                let common = m.iter().zip(t).take_while(|(a, b)| a == b).count();
                if common == m.len() || common == t.len() {
                    continue; // an ancestor or a descendant
                }
                edges
                    .entry(m[..=common].to_vec())
                    .or_default()
                    .insert(t[..=common].to_vec());
            }
        }
        // A module that reaches itself through the edges is on a circle.
        for start in edges.keys() {
            let mut seen = std::collections::BTreeSet::new();
            let mut stack: Vec<Vec<Vec<String>>> = vec![vec![start.clone()]];
            while let Some(path) = stack.pop() {
                for next in edges.get(path.last().unwrap()).into_iter().flatten() {
                    if next == start {
                        let names: Vec<String> = path.iter().map(|p| p.join("::")).collect();
                        circles.push(format!(
                            "{src}: {} -> {}",
                            names.join(" -> "),
                            start.join("::")
                        ));
                    } else if seen.insert(next.clone()) {
                        stack.push([path.clone(), vec![next.clone()]].concat());
                    }
                }
            }
        }
    }
    assert!(
        circles.is_empty(),
        "import circles:\n{}",
        circles.join("\n")
    );
}
