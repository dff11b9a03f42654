//! The host's shape, held to ARCHITECTURE.md: the layers it draws (read
//! from its table, so the document and this check cannot drift apart), no
//! import cycle among the host's modules, no import up the layers, and no
//! source file or function too long to read. No wasm runs here: the
//! sources are read as text.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The longest source file of the host and the Python extension, in lines.
const MAX_FILE_LINES: usize = 600;
/// The longest function outside tests, in lines.
const MAX_FN_LINES: usize = 100;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the host crate sits in the repository")
        .to_owned()
}

/// Every `.rs` file below `dir`, sorted.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).expect("a source folder") {
            let path = entry.expect("a folder entry").path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// `source` with comments, strings and character literals blanked (their
/// newlines kept), so that what is left is code.
fn code_only(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let blank = |out: &mut String, text: &[char]| {
        out.extend(text.iter().map(|&c| if c == '\n' { '\n' } else { ' ' }));
    };
    let mut i = 0;
    while i < chars.len() {
        let rest = &chars[i..];
        let starts = |s: &str| rest.iter().take(s.len()).copied().eq(s.chars());
        let prev_ident = i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
        let len = if starts("//") {
            rest.iter().position(|&c| c == '\n').unwrap_or(rest.len())
        } else if starts("/*") {
            let mut depth = 0;
            let mut j = 0;
            while j < rest.len() {
                if rest[j..].starts_with(&['/', '*']) {
                    depth += 1;
                    j += 2;
                } else if rest[j..].starts_with(&['*', '/']) {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            j
        } else if !prev_ident && (starts("r\"") || starts("r#") || starts("br\"") || starts("br#"))
        {
            let open = rest.iter().position(|&c| c == '"').unwrap_or(0);
            let hashes = rest[..open].iter().filter(|&&c| c == '#').count();
            let close: Vec<char> = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            (open + 1..rest.len())
                .find(|&j| rest[j..].starts_with(&close))
                .map_or(rest.len(), |j| j + close.len())
        } else if rest[0] == '"' || (!prev_ident && starts("b\"")) {
            let mut j = if rest[0] == '"' { 1 } else { 2 };
            while j < rest.len() && rest[j] != '"' {
                j += if rest[j] == '\\' { 2 } else { 1 };
            }
            j + 1
        } else if rest[0] == '\'' {
            // A character literal ('a', '\n', '\u{..}'), not a lifetime.
            match rest.get(1) {
                Some('\\') => rest[2..]
                    .iter()
                    .position(|&c| c == '\'')
                    .map_or(1, |p| p + 3),
                Some(_) if rest.get(2) == Some(&'\'') => 3,
                _ => 1,
            }
        } else {
            out.push(rest[0]);
            i += 1;
            continue;
        };
        let len = len.min(rest.len()).max(1);
        blank(&mut out, &rest[..len]);
        i += len;
    }
    out
}

/// `code` without its `#[cfg(test)]` items (a test module, a test
/// helper), blanked line for line.
fn without_tests(code: &str) -> String {
    let mut lines: Vec<String> = code.lines().map(str::to_owned).collect();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim() == "#[cfg(test)]" {
            // The item after it: up to its `;` or its closing brace.
            let mut depth = 0i32;
            let mut opened = false;
            let mut j = i + 1;
            'item: while j < lines.len() {
                for c in lines[j].chars() {
                    match c {
                        '{' => {
                            depth += 1;
                            opened = true;
                        }
                        '}' => depth -= 1,
                        // A field, a variant or a `use`: up to its end.
                        ';' | ',' if !opened => break 'item,
                        _ => {}
                    }
                }
                if opened && depth == 0 {
                    break;
                }
                j += 1;
            }
            let last = j.min(lines.len() - 1);
            for line in &mut lines[i..=last] {
                line.clear();
            }
            i = j;
        }
        i += 1;
    }
    lines.join("\n")
}

/// A file's module path in the host crate (`worker::process::parent`);
/// `lib.rs` is the crate root, `""`.
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).expect("a file of the crate");
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    match last.as_str() {
        "lib.rs" | "mod.rs" => {}
        name => parts.push(name.trim_end_matches(".rs").to_owned()),
    }
    parts.join("::")
}

/// The paths below `crate::` that `code` names: each `crate::a::b::c`,
/// and each branch of a `crate::{..}` or `crate::a::{..}` group.
fn crate_paths(code: &str, module: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let word = |c: char| c.is_alphanumeric() || c == '_';
    for (at, _) in code
        .match_indices("crate::")
        .chain(code.match_indices("super::"))
    {
        if at > 0 && (code[..at].ends_with(word) || code[..at].ends_with("super::")) {
            continue;
        }
        let relative = code[at..].starts_with("super::");
        let mut rest = &code[at + 7..];
        let mut base: Vec<String> = Vec::new();
        if relative {
            base = module
                .split("::")
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect();
            base.pop();
            while let Some(further) = rest.strip_prefix("super::") {
                base.pop();
                rest = further;
            }
        }
        let mut segment = String::new();
        let mut chars = rest.chars().peekable();
        while let Some(c) = chars.next() {
            if word(c) {
                segment.push(c);
            } else if c == ':' && chars.peek() == Some(&':') {
                chars.next();
                base.push(std::mem::take(&mut segment));
            } else if c == '{' && segment.is_empty() {
                // A group, maybe nested: every path in it.
                let mut depth = 1;
                let group: String = chars
                    .by_ref()
                    .take_while(|&c| {
                        depth += match c {
                            '{' => 1,
                            '}' => -1,
                            _ => 0,
                        };
                        depth > 0
                    })
                    .collect();
                for path in group_paths(&group) {
                    let mut full = base.clone();
                    full.extend(
                        path.split("::")
                            .filter(|p| !p.is_empty() && *p != "self")
                            .map(str::to_owned),
                    );
                    paths.push(full.join("::"));
                }
                break;
            } else {
                break;
            }
        }
        if !segment.is_empty() {
            base.push(segment);
        }
        if !base.is_empty() {
            paths.push(base.join("::"));
        }
    }
    paths
}

/// The paths of a `use` group's inside (`a, b::{c, d}, self`), each
/// relative to the group.
fn group_paths(group: &str) -> Vec<String> {
    let mut branches = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                branches.push(&group[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    branches.push(&group[start..]);
    let mut paths = Vec::new();
    for branch in branches
        .into_iter()
        .map(str::trim)
        .filter(|b| !b.is_empty())
    {
        match branch.find('{') {
            Some(open) => {
                let prefix = branch[..open].trim_end_matches("::");
                let inner = &branch[open + 1..branch.rfind('}').unwrap_or(branch.len())];
                for path in group_paths(inner) {
                    paths.push(format!("{prefix}::{path}"));
                }
            }
            None => {
                let path: String = branch
                    .chars()
                    .take_while(|&c| c.is_alphanumeric() || c == '_' || c == ':')
                    .collect();
                paths.push(path);
            }
        }
    }
    paths
}

/// The module a path names: its longest prefix that is a module.
fn resolve(path: &str, modules: &BTreeSet<String>) -> Option<String> {
    let parts: Vec<&str> = path.split("::").collect();
    (1..=parts.len())
        .rev()
        .map(|n| parts[..n].join("::"))
        .find(|candidate| modules.contains(candidate))
}

/// The layers of ARCHITECTURE.md's table (top first), each a set of
/// top-level modules.
fn layers() -> Vec<(String, Vec<String>)> {
    let text = std::fs::read_to_string(repo().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let start = text
        .find("<!-- layers -->")
        .expect("ARCHITECTURE.md marks its layer table with <!-- layers -->");
    text[start..]
        .lines()
        .skip(1)
        .skip_while(|line| !line.starts_with('|'))
        .take_while(|line| line.starts_with('|'))
        .skip(2)
        .map(|row| {
            let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
            let modules = cells[1]
                .split(',')
                .map(|m| m.trim().trim_matches('`').to_owned())
                .filter(|m| !m.is_empty())
                .collect();
            (cells[0].to_owned(), modules)
        })
        .collect()
}

/// The host's modules and what each imports (test code left out), and the
/// imports that go through the crate root's re-exports instead.
fn import_graph() -> (BTreeMap<String, BTreeSet<String>>, Vec<String>) {
    let src = repo().join("host/src");
    let files: Vec<PathBuf> = sources(&src)
        .into_iter()
        .filter(|f| {
            !f.starts_with(src.join("bin")) && f.file_name().is_some_and(|n| n != "tests.rs")
        })
        .collect();
    let mut modules: BTreeSet<String> = files.iter().map(|f| module_of(&src, f)).collect();
    // Modules written inline in lib.rs.
    modules.insert("bindings".into());
    let mut graph = BTreeMap::new();
    let mut through_root = Vec::new();
    for file in &files {
        let module = module_of(&src, file);
        let text = std::fs::read_to_string(file).expect("a source file");
        let code = without_tests(&code_only(&text));
        let paths = crate_paths(&code, &module);
        if !module.is_empty() {
            through_root.extend(
                paths
                    .iter()
                    .filter(|path| resolve(path, &modules).is_none_or(|m| m.is_empty()))
                    .map(|path| format!("{module} imports crate::{path} through the crate root")),
            );
        }
        let imports: BTreeSet<String> = paths
            .iter()
            .filter_map(|path| resolve(path, &modules))
            .filter(|target| *target != module && !target.is_empty())
            // A module's own submodules are its parts, not its imports.
            .filter(|target| module.is_empty() || !target.starts_with(&format!("{module}::")))
            .collect();
        graph.insert(module, imports);
    }
    graph.insert("bindings".into(), BTreeSet::new());
    (graph, through_root)
}

fn top(module: &str) -> &str {
    module.split("::").next().unwrap_or(module)
}

#[test]
fn the_host_imports_only_down_its_layers() {
    let _watch = crate::util::watchdog("architecture::the_host_imports_only_down_its_layers");
    let layers = layers();
    let layer_of: BTreeMap<&str, usize> = layers
        .iter()
        .enumerate()
        .flat_map(|(i, (_, modules))| modules.iter().map(move |m| (m.as_str(), i)))
        .collect();
    let (graph, through_root) = import_graph();
    let mut problems = through_root;
    for (module, imports) in &graph {
        if module.is_empty() {
            continue; // lib.rs: the `pub use` of the public API
        }
        let Some(&from) = layer_of.get(top(module)) else {
            problems.push(format!(
                "module {module} is in no layer of ARCHITECTURE.md's table"
            ));
            continue;
        };
        for target in imports {
            match layer_of.get(top(target)) {
                None => problems.push(format!("{module} imports {target}, which is in no layer")),
                Some(&to) if to < from => problems.push(format!(
                    "{module} ({}) imports {target} ({}), a layer above it",
                    layers[from].0, layers[to].0
                )),
                Some(_) => {}
            }
        }
    }
    for (_, modules) in &layers {
        for module in modules {
            if !graph.keys().any(|m| top(m) == module) {
                problems.push(format!(
                    "ARCHITECTURE.md names module {module}, which does not exist"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The cycles of `graph`, each as `a -> b -> a`.
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    // Depth-first search for a back edge, reporting the cycle.
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        cycles: &mut Vec<String>,
    ) {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_owned());
            cycles.push(cycle.join(" -> "));
            return;
        }
        if !done.insert(node.to_owned()) {
            return;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            visit(next, graph, path, done, cycles);
        }
        path.pop();
    }
    let mut found = Vec::new();
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        visit(node, graph, &mut Vec::new(), &mut done, &mut found);
    }
    found
}

#[test]
fn the_host_has_no_import_cycle() {
    let _watch = crate::util::watchdog("architecture::the_host_has_no_import_cycle");
    let (files, _) = import_graph();
    // Between files, and between top-level modules (two modules may import
    // each other through different files).
    let mut modules: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, imports) in &files {
        let entry = modules.entry(top(module).to_owned()).or_default();
        entry.extend(
            imports
                .iter()
                .map(|target| top(target).to_owned())
                .filter(|target| target != top(module)),
        );
    }
    modules.remove("");
    let found: Vec<String> = cycles(&files).into_iter().chain(cycles(&modules)).collect();
    assert!(found.is_empty(), "import cycles:\n{}", found.join("\n"));
}

#[test]
fn no_source_file_or_function_is_too_long() {
    let _watch = crate::util::watchdog("architecture::no_source_file_or_function_is_too_long");
    let root = repo();
    let mut problems = Vec::new();
    for dir in ["host/src", "host/python/src"] {
        for file in sources(&root.join(dir)) {
            let name = file.strip_prefix(&root).unwrap().display().to_string();
            let text = std::fs::read_to_string(&file).expect("a source file");
            let lines = text.lines().count();
            if lines > MAX_FILE_LINES {
                problems.push(format!("{name}: {lines} lines (at most {MAX_FILE_LINES})"));
            }
            if file.file_name().is_some_and(|n| n == "tests.rs") {
                continue;
            }
            for (line, function, length) in long_functions(&without_tests(&code_only(&text))) {
                problems.push(format!(
                    "{name}:{line}: fn {function} has {length} lines (at most {MAX_FN_LINES})"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The functions of `code` longer than [`MAX_FN_LINES`]: (line, name,
/// lines).
fn long_functions(code: &str) -> Vec<(usize, String, usize)> {
    let lines: Vec<&str> = code.lines().collect();
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(at) = line.find("fn ") else {
            continue;
        };
        if at > 0 && !line[..at].ends_with([' ', '(']) {
            continue;
        }
        let name: String = line[at + 3..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if name.is_empty() {
            continue;
        }
        let mut depth = 0i32;
        let mut opened = false;
        'body: for (j, body) in lines.iter().enumerate().skip(i) {
            for c in body.chars() {
                match c {
                    '{' => {
                        depth += 1;
                        opened = true;
                    }
                    '}' => depth -= 1,
                    ';' if !opened => break 'body,
                    _ => {}
                }
                if opened && depth == 0 {
                    let length = j - i + 1;
                    if length > MAX_FN_LINES {
                        found.push((i + 1, name.clone(), length));
                    }
                    break 'body;
                }
            }
        }
    }
    found
}

#[test]
fn the_checks_see_what_they_check() {
    let _watch = crate::util::watchdog("architecture::the_checks_see_what_they_check");
    // A cycle and an upward import are found where they are.
    let code = code_only(
        "use crate::a::B; // crate::c::D\nlet s = \"crate::e\"; use crate::{f, g::{self, h::I}};",
    );
    assert_eq!(crate_paths(&code, "x"), ["a::B", "f", "g", "g::h::I"]);
    assert_eq!(crate_paths("use super::y::Z;", "w::v"), ["w::y::Z"]);
    assert_eq!(
        crate_paths("use super::super::y::Z;", "w::v::u"),
        ["w::y::Z"]
    );
    let enum_test =
        without_tests("enum E {\n    #[cfg(test)]\n    Fake,\n}\nimpl E {\n    fn f() {}\n}");
    assert!(enum_test.contains("impl E") && !enum_test.contains("Fake"));
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a".to_owned(), ["b".to_owned()].into()),
        ("b".to_owned(), ["a".to_owned()].into()),
    ]
    .into();
    assert_eq!(cycles(&graph), ["a -> b -> a"]);
    let long = format!("fn long() {{\n{}}}\n", "    x();\n".repeat(MAX_FN_LINES));
    assert_eq!(
        long_functions(&long),
        [(1, "long".to_owned(), MAX_FN_LINES + 2)]
    );
    let tests = without_tests("fn a() {}\n#[cfg(test)]\nmod tests {\n    fn b() {}\n}\nfn c() {}");
    assert!(tests.contains("fn a") && tests.contains("fn c") && !tests.contains("fn b"));
    let modules: BTreeSet<String> = ["a", "a::b"].map(String::from).into();
    assert_eq!(resolve("a::b::C", &modules).as_deref(), Some("a::b"));
    assert_eq!(resolve("a::C", &modules).as_deref(), Some("a"));
}

/// The `#[test]` functions in `source` whose body does not start by arming
/// a watchdog (`let _watch = …watchdog(…)`), by name. Tests run through
/// `both_isolations!` and `every_language!` get theirs from
/// `util::with_isolation`, and are not `#[test]` functions in their files.
fn unwatched_tests(source: &str) -> Vec<String> {
    let lines: Vec<&str> = source.lines().collect();
    let mut unwatched = Vec::new();
    for (at, line) in lines.iter().enumerate() {
        if line.trim() != "#[test]" {
            continue;
        }
        let Some((fn_at, signature)) = lines[at + 1..]
            .iter()
            .enumerate()
            .find(|(_, l)| l.trim_start().starts_with("fn "))
        else {
            continue;
        };
        let name = signature
            .trim_start()
            .trim_start_matches("fn ")
            .split('(')
            .next()
            .unwrap_or_default()
            .to_owned();
        let body_start = at + 1 + fn_at + 1;
        let head = lines[body_start..]
            .iter()
            .take(3)
            .copied()
            .collect::<Vec<_>>()
            .join(" ");
        let armed = head.trim_start().starts_with("let _watch") && head.contains("watchdog(");
        if !armed {
            unwatched.push(name);
        }
    }
    unwatched
}

/// Every test of `tests/all` runs under a watchdog, so that a hang inside
/// the library fails the run with the name of the test instead of hanging
/// it (tests/README.md).
#[test]
fn every_test_runs_under_a_watchdog() {
    let _watch = crate::util::watchdog("architecture::every_test_runs_under_a_watchdog");
    let mut unwatched = Vec::new();
    for file in sources(&repo().join("tests/all")) {
        // util.rs holds the macros' tests, armed by `util::with_isolation`.
        if file.ends_with("tests/all/util.rs") {
            continue;
        }
        let source = std::fs::read_to_string(&file).unwrap();
        for name in unwatched_tests(&source) {
            unwatched.push(format!("{}: {name}", file.display()));
        }
    }
    assert!(
        unwatched.is_empty(),
        "tests without a watchdog (start them with `let _watch = crate::util::watchdog(\"module::name\");`):\n{}",
        unwatched.join("\n")
    );
    // The check sees a test without one, and one with one.
    let example = "#[test]\nfn bare() {\n    run();\n}\n\n#[test]\n#[ignore]\nfn guarded() {\n    let _watch = crate::util::watchdog(\"x\");\n}\n";
    assert_eq!(unwatched_tests(example), ["bare"]);
}
