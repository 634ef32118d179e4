//! The layering rules of docs/architecture.md, checked on the tree as it is: a rule that breaks
//! fails the suite, naming the file or the dependency.
//!
//! - service crates (and the edge and the kit) never depend on one another — normal, build or
//!   dev-dependencies, read from `cargo metadata`; the kit depends on no service;
//! - no `tonic`, `prost` or generated `pb` type in a `domain/` or `store/` module, and a store
//!   imports neither the rules nor the transport;
//! - in a service crate, the contract's types stay in the adapters — `lib.rs`, `grpc.rs`
//!   (tonic), `clients.rs` (ports over gRPC), `events.rs` and `queue.rs` (the bus), `error.rs`
//!   (errors as statuses): the rules take and return the service's own values;
//! - in a service crate, every statement (a sea-orm `Entity::` query, a raw `Statement`) is in
//!   `store/`: the rules ask the store by name;
//! - the kit declares no service's settings: a service's section (`impl Section for …`) lives in
//!   its own crate;
//! - no event name as a string literal outside the catalogue (`skillup_proto::events`);
//! - no two top-level modules of a crate name each other (`crate::a` in b and `crate::b` in a).

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root").to_path_buf()
}

/// Every `.rs` file below `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if p.is_dir() {
                if !matches!(name.as_str(), "target" | "node_modules" | ".git" | ".venv-tools") {
                    stack.push(p);
                }
            } else if name.ends_with(".rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The crates that must not know one another: every service, the edge and the kit.
const ISOLATED: &[&str] = &[
    "skillup-kit",
    "skillup-auth",
    "skillup-prompt",
    "skillup-payment",
    "skillup-subscribe",
    "skillup-ai",
    "skillup-notification",
    "skillup-edge",
];

/// What an isolated crate may depend on among the workspace's crates.
const SHARED: &[&str] = &["skillup-proto", "skillup-kit", "skillup-testkit"];

/// The violations of the crate rule in `cargo metadata` output.
fn crate_violations(metadata: &Value) -> Vec<String> {
    let mut bad = Vec::new();
    for package in metadata["packages"].as_array().expect("packages") {
        let name = package["name"].as_str().unwrap_or_default();
        if !ISOLATED.contains(&name) {
            continue;
        }
        for dep in package["dependencies"].as_array().expect("dependencies") {
            let dep_name = dep["name"].as_str().unwrap_or_default();
            let kind = dep["kind"].as_str().unwrap_or("normal");
            let internal = dep_name.starts_with("skillup");
            let allowed = SHARED.contains(&dep_name)
                && !(name == "skillup-kit" && kind == "normal" && dep_name == "skillup-testkit");
            if internal && !allowed && dep_name != name {
                bad.push(format!("{name} depends on {dep_name} ({kind})"));
            }
        }
    }
    bad
}

#[test]
fn service_crates_meet_only_through_the_contracts() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(root())
        .output()
        .expect("cargo metadata runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let metadata: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata JSON");
    let names: BTreeSet<&str> = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    for crate_name in ISOLATED {
        assert!(names.contains(crate_name), "{crate_name} is not in the workspace any more");
    }
    let bad = crate_violations(&metadata);
    assert!(bad.is_empty(), "service crates depend on one another:\n{}", bad.join("\n"));
}

#[test]
fn the_crate_rule_catches_a_dev_dependency_between_services() {
    // The rule itself, on a tree that breaks it: a test-only dependency counts too.
    let broken = serde_json::json!({"packages": [
        {"name": "skillup-ai", "dependencies": [
            {"name": "skillup-proto", "kind": null},
            {"name": "skillup-subscribe", "kind": "dev"}
        ]},
        {"name": "skillup-kit", "dependencies": [{"name": "skillup-auth", "kind": null}]},
        {"name": "skillup", "dependencies": [{"name": "skillup-ai", "kind": null}]}
    ]});
    assert_eq!(
        crate_violations(&broken),
        [
            "skillup-ai depends on skillup-subscribe (dev)",
            "skillup-kit depends on skillup-auth (normal)"
        ]
    );
}

/// Lines of `src` (comments aside) that contain any of `forbidden`, numbered.
fn lines_naming(src: &str, forbidden: &[&str]) -> Vec<String> {
    src.lines()
        .enumerate()
        .filter(|(_, line)| {
            let code = line.split("//").next().unwrap_or_default();
            forbidden.iter().any(|f| code.contains(f))
        })
        .map(|(n, line)| format!("{}: {}", n + 1, line.trim()))
        .collect()
}

/// Lines of `src` that name a transport type or reach for the rules, for a `domain/` or
/// `store/` module.
fn layer_violations(src: &str) -> Vec<String> {
    let forbidden = [
        "tonic::",
        "prost::",
        "prost_types::",
        "skillup_proto",
        "pb::",
        "crate::service",
        "crate::grpc",
        "crate::worker",
    ];
    lines_naming(src, &forbidden)
}

#[test]
fn domain_and_store_modules_know_no_transport_and_no_rules() {
    let mut bad = Vec::new();
    let mut seen = 0;
    for file in
        rust_files(&root().join("services")).into_iter().chain(rust_files(&root().join("edge/src")))
    {
        let rel = file.strip_prefix(root()).unwrap().to_string_lossy().into_owned();
        let layered = rel.contains("/src/domain/")
            || rel.contains("/src/store/")
            || rel.ends_with("/src/domain.rs")
            || rel.ends_with("/src/store.rs");
        if !layered {
            continue;
        }
        seen += 1;
        let src = std::fs::read_to_string(&file).unwrap();
        bad.extend(layer_violations(&src).into_iter().map(|l| format!("{rel}:{l}")));
    }
    assert!(seen >= 10, "only {seen} domain/store files found: has the layout moved?");
    assert!(bad.is_empty(), "transport types or rules below the rules:\n{}", bad.join("\n"));
}

/// The modules of a service crate that speak the contract (see the module docs).
const ADAPTERS: [&str; 6] =
    ["lib.rs", "grpc.rs", "clients.rs", "events.rs", "queue.rs", "error.rs"];

/// Lines of `src` that name a transport or contract type.
fn transport_lines(src: &str) -> Vec<String> {
    let forbidden = ["tonic::", "prost::", "prost_types::", "skillup_proto", "pb::"];
    lines_naming(src, &forbidden)
}

#[test]
fn the_rules_of_a_service_take_and_return_its_own_values() {
    let mut bad = Vec::new();
    let mut seen = 0;
    for service in SERVICES {
        let src_dir = root().join("services").join(service).join("src");
        for file in rust_files(&src_dir) {
            let rel = file.strip_prefix(&src_dir).unwrap().to_string_lossy().into_owned();
            // `grpc.rs` may grow into a directory (`grpc/mod.rs` and its parts).
            if ADAPTERS.contains(&rel.as_str()) || rel.starts_with("grpc/") {
                continue;
            }
            seen += 1;
            let src = std::fs::read_to_string(&file).unwrap();
            bad.extend(
                transport_lines(&src)
                    .into_iter()
                    .map(|l| format!("services/{service}/src/{rel}:{l}")),
            );
        }
    }
    assert!(seen >= 40, "only {seen} rule modules found: has the layout moved?");
    assert!(
        bad.is_empty(),
        "contract types in the rules (convert in grpc.rs):\n{}",
        bad.join("\n")
    );
}

/// The service crates.
const SERVICES: [&str; 6] = ["ai", "auth", "notification", "payment", "prompt", "subscribe"];

/// Lines of `src` that build or run a statement.
fn sql_lines(src: &str) -> Vec<String> {
    let forbidden = [
        "Entity::",
        "Statement::",
        ".exec(",
        ".exec_with_returning(",
        "query_one",
        "query_all",
        ".execute(",
    ];
    lines_naming(src, &forbidden)
}

#[test]
fn statements_live_in_the_store() {
    let mut bad = Vec::new();
    for service in SERVICES {
        let src_dir = root().join("services").join(service).join("src");
        for file in rust_files(&src_dir) {
            let rel = file.strip_prefix(&src_dir).unwrap().to_string_lossy().into_owned();
            if rel.starts_with("store") {
                continue;
            }
            let src = std::fs::read_to_string(&file).unwrap();
            bad.extend(
                sql_lines(&src).into_iter().map(|l| format!("services/{service}/src/{rel}:{l}")),
            );
        }
    }
    assert!(bad.is_empty(), "statements outside the store:\n{}", bad.join("\n"));
}

/// Lines of the kit that declare or read a service's section (`[auth]`, `[ai]`, …).
fn kit_section_lines(src: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for service in SERVICES.iter().chain(["edge"].iter()) {
        let camel = service[..1].to_uppercase() + &service[1..];
        names.push(format!("struct {camel}Config"));
        names.push(format!(".{service}."));
    }
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    lines_naming(src, &names)
}

#[test]
fn the_kit_declares_no_services_settings() {
    let src_dir = root().join("services/kit/src");
    let mut bad = Vec::new();
    for file in rust_files(&src_dir) {
        let rel = file.strip_prefix(&src_dir).unwrap().to_string_lossy().into_owned();
        let src = std::fs::read_to_string(&file).unwrap();
        bad.extend(
            kit_section_lines(&src).into_iter().map(|l| format!("services/kit/src/{rel}:{l}")),
        );
    }
    assert!(bad.is_empty(), "a service's settings in the kit:\n{}", bad.join("\n"));
}

#[test]
fn the_kit_rule_catches_a_section_in_the_kit() {
    assert_eq!(kit_section_lines("pub struct AiConfig {\n    pub chain: Vec<String>,\n}").len(), 1);
    assert_eq!(kit_section_lines("let url = config.edge.upstreams.get(name);").len(), 1);
    assert!(kit_section_lines("pub struct BusConfig {").is_empty());
}

#[test]
fn the_store_rule_catches_a_query_in_the_rules() {
    let broken =
        "let t = task::Entity::find_by_id(id).one(db).await?;\nself.tasks.get(id).await?;\n";
    assert_eq!(sql_lines(broken).len(), 1);
}

#[test]
fn the_adapter_rule_catches_a_protobuf_type_in_the_rules() {
    let broken = "use crate::domain::Task;\npub fn f() -> Result<pb::Task, tonic::Status> {}\n";
    assert_eq!(transport_lines(broken).len(), 1);
    assert!(
        transport_lines("// grpc.rs converts into pb::Task\nuse crate::domain::Task;\n").is_empty()
    );
}

#[test]
fn the_layer_rule_catches_a_protobuf_type_in_a_store() {
    let broken =
        "use sea_orm::Set;\n// pb:: in a comment is fine\npub fn f(s: pb::Subscription) {}\n";
    assert_eq!(layer_violations(broken), ["3: pub fn f(s: pb::Subscription) {}"]);
    assert!(layer_violations("use crate::domain::Tier;\n").is_empty());
}

/// `"name"` literals of catalogue events in `src`, with their line numbers.
fn event_literals(src: &str, names: &[&str]) -> Vec<String> {
    src.lines()
        .enumerate()
        .flat_map(|(n, line)| {
            names
                .iter()
                .filter(move |name| line.contains(&format!("\"{name}\"")))
                .map(move |name| format!("{}: {name}", n + 1))
        })
        .collect()
}

#[test]
fn event_names_are_written_only_in_the_catalogue() {
    let all = skillup_proto::events::all();
    let names: Vec<&str> = all.iter().map(|(kind, _)| *kind).collect();
    // The catalogue, and this file (its own test names some on purpose).
    let skip = [root().join("src/events.rs"), root().join("cli/tests/architecture.rs")];
    let mut bad = Vec::new();
    for file in rust_files(&root()) {
        if skip.contains(&file) {
            continue;
        }
        let src = std::fs::read_to_string(&file).unwrap();
        let rel = file.strip_prefix(root()).unwrap().to_string_lossy().into_owned();
        // Payment providers' adapters and stand-ins speak the providers' wire formats, whose
        // event names (YooKassa's `payment.succeeded`) are theirs, not the bus's.
        if rel.starts_with("services/payment/src/providers/")
            || rel.starts_with("services/testkit/src/providers/")
        {
            continue;
        }
        bad.extend(event_literals(&src, &names).into_iter().map(|l| format!("{rel}:{l}")));
    }
    assert!(
        bad.is_empty(),
        "event names typed by hand (use `<Message as Event>::KIND`):\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_event_rule_catches_a_hand_typed_name() {
    let broken =
        "bus.publish(\"generation.completed\", msg);\nlet k = GenerationCompleted::KIND;\n";
    assert_eq!(
        event_literals(broken, &["generation.completed", "payment.failed"]),
        ["1: generation.completed"]
    );
}

/// The modules of one crate that `src` (a module's file) names: `crate::x` paths and
/// `use crate::{x, …}` groups, by their first segment.
fn modules_named(src: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let code: String = src
        .lines()
        .map(|l| l.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    let mut rest = code.as_str();
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a::b, c, d::{e}}`: the first segment of each top-level item.
            let (mut depth, mut item) = (0, String::new());
            for ch in group.chars() {
                match ch {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.extend(first_segment(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 {
                    item.push(ch);
                }
            }
            out.extend(first_segment(&item));
        } else {
            out.extend(first_segment(rest));
        }
    }
    out
}

fn first_segment(s: &str) -> Option<String> {
    let name: String =
        s.trim_start().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
    (!name.is_empty() && name != "self").then_some(name)
}

/// Pairs of top-level modules of the crate at `src_dir` that name each other.
fn module_circles(src_dir: &Path) -> Vec<String> {
    let mut names: std::collections::BTreeMap<String, BTreeSet<String>> = Default::default();
    for file in rust_files(src_dir) {
        let rel = file.strip_prefix(src_dir).unwrap().to_string_lossy().into_owned();
        let module = rel.split('/').next().unwrap().trim_end_matches(".rs").to_owned();
        if matches!(module.as_str(), "lib" | "main" | "mod") {
            continue;
        }
        let src = std::fs::read_to_string(&file).unwrap();
        let named = modules_named(src.split("#[cfg(test)]").next().unwrap_or_default());
        names.entry(module.clone()).or_default().extend(named.into_iter().filter(|m| *m != module));
    }
    let mut circles = Vec::new();
    for (a, deps) in &names {
        for b in deps {
            if a < b && names.get(b).is_some_and(|d| d.contains(a)) {
                circles.push(format!("{a} ↔ {b}"));
            }
        }
    }
    circles
}

#[test]
fn no_two_modules_of_a_crate_import_each_other() {
    let mut bad = Vec::new();
    for dir in ["services/kit", "services/auth", "services/prompt", "services/payment"]
        .into_iter()
        .chain(["services/subscribe", "services/ai", "services/notification", "edge"])
    {
        for circle in module_circles(&root().join(dir).join("src")) {
            bad.push(format!("{dir}: {circle}"));
        }
    }
    assert!(bad.is_empty(), "modules that import each other:\n{}", bad.join("\n"));
}

#[test]
fn the_circle_rule_reads_paths_and_groups() {
    let src = "use crate::{a::X, b, c::{d, e}};\nfn f() { crate::g::h(); } // crate::ignored\n";
    let got: Vec<String> = modules_named(src).into_iter().collect();
    assert_eq!(got, ["a", "b", "c", "g"]);
}

/// Every `locales/` directory of the workspace: (its path, its English and Russian sources).
fn catalogues(dir: &Path, out: &mut Vec<(PathBuf, String, String)>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if !path.is_dir()
            || name.starts_with('.')
            || ["target", "node_modules"].contains(&name.as_str())
        {
            continue;
        }
        // The web console's JSON catalogues are its own tests' (web/tests/unit/i18n.test.ts).
        if name == "locales" && path.join("en.json").exists() {
            continue;
        }
        if name == "locales" {
            let read = |f: &str| std::fs::read_to_string(path.join(f)).unwrap_or_default();
            out.push((path.clone(), read("en.ftl"), read("ru.ftl")));
        } else {
            catalogues(&path, out);
        }
    }
}

#[test]
fn every_message_is_in_english_and_russian() {
    use skillup_kit::i18n::{Locale, parity};
    let mut found = Vec::new();
    catalogues(&root(), &mut found);
    assert!(found.iter().any(|(p, ..)| p.ends_with("services/auth/locales")), "{found:?}");
    let mut problems = Vec::new();
    for (path, en, ru) in &found {
        if en.trim().is_empty() || ru.trim().is_empty() {
            problems.push(format!("{}: en.ftl and ru.ftl must both hold messages", path.display()));
        }
        for missing in parity(&[(Locale::En, en), (Locale::Ru, ru)]) {
            problems.push(format!("{}: {missing}", path.display()));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn the_language_rule_catches_a_message_in_one_language() {
    use skillup_kit::i18n::{Locale, parity};
    let en = "a = A\nb = B\n    .title = T\n";
    let ru = "a = А\nb = Б\n";
    assert_eq!(parity(&[(Locale::En, en), (Locale::Ru, ru)]), ["ru: missing b.title"]);
}
