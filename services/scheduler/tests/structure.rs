//! The scheduler's modules depend on each other one way. Reads the `crate::` paths of every source
//! file (a folder such as `volumes/` is one module) and fails on an import cycle, or on a domain
//! that reaches into another domain: domains meet only in the API layer (`api.rs`) and in
//! `operations.rs`; what they share (statuses, quotas, claims, the journal) lives below them.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

/// The domain modules: each owns its resources and its journalled operations.
const DOMAINS: [&str; 7] =
    ["volumes", "snapshots", "backups", "attachments", "groups", "group_snapshots", "node_recovery"];
/// The modules allowed to see every domain.
const ABOVE_DOMAINS: [&str; 3] = ["lib", "api", "operations"];

/// Every module and the modules it names through `crate::`.
fn module_edges() -> BTreeMap<String, BTreeSet<String>> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut files = vec![source.clone()];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|entry| entry.unwrap().path()));
            continue;
        }
        if path.extension().is_none_or(|extension| extension != "rs") {
            continue;
        }
        let relative = path.strip_prefix(&source).unwrap();
        let module = relative.iter().next().unwrap().to_string_lossy().trim_end_matches(".rs").to_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let named = edges.entry(module.clone()).or_default();
        for target in crate_paths(&text) {
            // `Core` and its config are re-exported at the crate root from `core`.
            let target = match target.as_str() {
                "Core" | "ControlPlaneConfig" => "core".to_owned(),
                _ => target,
            };
            if target != module {
                named.insert(target);
            }
        }
    }
    edges
}

/// The first segment of every `crate::` path in `text`, including those in `use crate::{a, b::c}`.
fn crate_paths(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut segment_start = true;
            let mut identifier = String::new();
            for c in group.chars() {
                if depth == 1 && segment_start && (c.is_alphanumeric() || c == '_') {
                    identifier.push(c);
                    continue;
                }
                if !identifier.is_empty() {
                    found.push(std::mem::take(&mut identifier));
                    segment_start = false;
                }
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => segment_start = true,
                    _ => {}
                }
            }
        } else {
            let identifier: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !identifier.is_empty() {
                found.push(identifier);
            }
        }
    }
    found
}

/// A cycle through `start`, if there is one.
fn cycle_from(edges: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    let mut stack = vec![(start.to_owned(), vec![start.to_owned()])];
    let mut seen = BTreeSet::new();
    while let Some((module, path)) = stack.pop() {
        for next in edges.get(&module).into_iter().flatten() {
            if next == start {
                return Some([path.clone(), vec![start.to_owned()]].concat());
            }
            if seen.insert(next.clone()) {
                stack.push((next.clone(), [path.clone(), vec![next.clone()]].concat()));
            }
        }
    }
    None
}

#[test]
fn the_scheduler_s_modules_form_no_cycle() {
    let edges = module_edges();
    assert!(edges.contains_key("volumes") && edges.contains_key("journal"), "the source tree was not read: {edges:?}");
    let edges_without_lib: BTreeMap<_, _> = edges.into_iter().filter(|(module, _)| module != "lib").collect();
    for module in edges_without_lib.keys() {
        if let Some(cycle) = cycle_from(&edges_without_lib, module) {
            panic!("the scheduler's modules import each other in a cycle: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn domains_never_reach_into_each_other() {
    for (module, named) in module_edges() {
        if ABOVE_DOMAINS.contains(&module.as_str()) {
            continue;
        }
        let domains: Vec<&String> = named.iter().filter(|target| DOMAINS.contains(&target.as_str())).collect();
        assert!(
            domains.is_empty(),
            "{module} imports the domain(s) {domains:?}; shared rules belong in a module below the domains (status, quotas, claims, ...)"
        );
    }
}

#[test]
fn the_path_reader_sees_grouped_and_plain_paths() {
    let text = "use crate::{\n    Core, claims,\n    db::{backup, volume},\n    status::{self, Stateful},\n};\nlet x = crate::events::DELETED;";
    assert_eq!(crate_paths(text), ["Core", "claims", "db", "status", "events"]);
    let edges = BTreeMap::from([
        ("a".to_owned(), BTreeSet::from(["b".to_owned()])),
        ("b".to_owned(), BTreeSet::from(["a".to_owned()])),
    ]);
    assert_eq!(cycle_from(&edges, "a"), Some(vec!["a".to_owned(), "b".to_owned(), "a".to_owned()]));
}
