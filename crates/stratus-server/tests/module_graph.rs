//! The data plane's modules form layers: neither the scheduler's modules
//! nor the public listener's import each other in a cycle. The graph is
//! read from the sources: an edge for every `crate::`, `super::` or
//! (in a `mod.rs` or `lib.rs`) child-module path that names another
//! module. Tests and the fake launcher are left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Graph = BTreeMap<String, BTreeSet<String>>;

/// Module path → (file text, whether the file is a directory module).
fn modules(root: &Path) -> BTreeMap<String, (String, bool)> {
    let mut found = BTreeMap::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(root).unwrap().with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            let dir_module = matches!(parts.last().map(String::as_str), Some("mod" | "lib"));
            if dir_module {
                parts.pop();
            }
            let name = parts.join("::");
            if name.ends_with("tests") || name == "fake" {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            // Inline unit tests are not part of the graph.
            let text = match text.find("#[cfg(test)]\nmod tests {") {
                Some(at) => text[..at].to_owned(),
                None => text,
            };
            found.insert(name, (text, dir_module));
        }
    }
    found
}

fn ident(text: &str) -> (&str, &str) {
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    (&text[..end], &text[end..])
}

/// Every path that follows `start` in `text`: `a::b::C`, and for a group
/// `{a, b::C}` each of its members' paths.
fn paths_after<'a>(text: &'a str, start: &str) -> Vec<Vec<&'a str>> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(start) {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + start.len()..];
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let mut path = Vec::new();
        let mut tail = rest;
        loop {
            let (name, after) = ident(tail);
            if name.is_empty() {
                if let Some(group) = tail.strip_prefix('{') {
                    let end = group.find('}').unwrap_or(group.len());
                    for member in group[..end].split(',') {
                        let mut full = path.clone();
                        full.extend(member.trim().split("::").map(str::trim));
                        out.push(full);
                    }
                }
                break;
            }
            path.push(name);
            match after.strip_prefix("::") {
                Some(next) => tail = next,
                None => break,
            }
        }
        if !path.is_empty() {
            out.push(path);
        }
    }
    out
}

fn graph(root: &Path) -> Graph {
    let modules = modules(root);
    let mut graph = Graph::new();
    for (name, (text, dir_module)) in &modules {
        let here: Vec<&str> = if name.is_empty() {
            Vec::new()
        } else {
            name.split("::").collect()
        };
        let mut refs: Vec<Vec<&str>> = Vec::new();
        for path in paths_after(text, "crate::") {
            refs.push(path);
        }
        for path in paths_after(text, "super::") {
            // `super` is the enclosing module, for a file or a directory.
            let mut base = here[..here.len().saturating_sub(1)].to_vec();
            let mut path = path.as_slice();
            while path.first() == Some(&"super") {
                base.pop();
                path = &path[1..];
            }
            base.extend_from_slice(path);
            refs.push(base);
        }
        if *dir_module {
            // Children named from their parent: `child::item`.
            for child in modules.keys().filter_map(|m| {
                let rest = if here.is_empty() {
                    m.as_str()
                } else {
                    m.strip_prefix(name.as_str())?.strip_prefix("::")?
                };
                (!rest.is_empty() && !rest.contains("::")).then_some(rest)
            }) {
                for path in paths_after(text, &format!("{child}::")) {
                    let mut full = here.clone();
                    full.push(child);
                    full.extend(path);
                    refs.push(full);
                }
            }
        }
        let edges = graph.entry(name.clone()).or_default();
        for path in refs {
            // The longest prefix of the path that is a module.
            let target = (0..=path.len())
                .rev()
                .map(|n| path[..n].join("::"))
                .find(|m| modules.contains_key(m));
            if let Some(target) = target
                && target != *name
            {
                edges.insert(target);
            }
        }
    }
    graph
}

/// The modules on some cycle, if any.
fn cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &Graph,
        done: &mut BTreeSet<String>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            return Some(stack[at..].to_vec());
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, done, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut done, &mut Vec::new()))
}

fn show(graph: &Graph) -> String {
    graph
        .iter()
        .map(|(m, to)| {
            let to: Vec<&str> = to.iter().map(String::as_str).collect();
            format!(
                "{} -> {}",
                if m.is_empty() { "(lib)" } else { m },
                to.join(", ")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_schedulers_modules_form_layers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../stratus-scheduler/src");
    let graph = graph(&root);
    assert!(graph.len() > 20, "{}", show(&graph));
    // A known edge, so that a parser that sees nothing cannot pass.
    assert!(graph["function::pool"].contains("function::instance"));
    assert_eq!(cycle(&graph), None, "\n{}", show(&graph));
}

#[test]
fn the_public_listeners_modules_form_layers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph = graph(&root);
    graph.retain(|m, _| m == "public" || m.starts_with("public::"));
    for edges in graph.values_mut() {
        edges.retain(|m| m == "public" || m.starts_with("public::"));
    }
    assert!(graph["public::handle"].contains("public::proxy"));
    assert_eq!(cycle(&graph), None, "\n{}", show(&graph));
}

#[test]
fn a_cycle_is_found() {
    let graph: Graph = [("a", "b"), ("b", "c"), ("c", "a")]
        .into_iter()
        .map(|(from, to)| (from.to_owned(), BTreeSet::from([to.to_owned()])))
        .collect();
    assert_eq!(
        cycle(&graph),
        Some(vec!["a".to_owned(), "b".to_owned(), "c".to_owned()])
    );
}
