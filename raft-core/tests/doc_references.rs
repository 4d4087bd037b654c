//! Keeps `raft-core/docs/raft-by-questions.md` from rotting: every code and test reference in it must resolve.
//!
//! The doc writes references in backticks, in one of two forms:
//! * `path/to/file.rs::Item` or `path/to/file.rs::Type::item`: the file (relative to the workspace
//!   root) must exist and define the last segment (`fn`, `struct`, `enum`, `trait`, `type`, `const`
//!   or `mod` of that name); a `Type` in between must appear in the file. An item in a test file
//!   (a `tests/` directory, or a file named `tests.rs`) or in a file's `mod tests` must be a test:
//!   `#[test]` or `#[tokio::test]` right above it.
//! * `path/to/file.ext` (a path with a `/` and no spaces): the file or directory must exist.
//!
//! Fenced code blocks are skipped (they hold commands and sample output, not references).

use std::path::{Path, PathBuf};

const DOCS: &[&str] = &["raft-core/docs/raft-by-questions.md"];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("raft-core sits in the workspace root")
        .to_path_buf()
}

/// The backticked spans outside fenced code blocks, with the line each starts on. A span may run
/// over a line break, as in Markdown.
fn code_spans(text: &str) -> Vec<(usize, String)> {
    let mut spans = Vec::new();
    let mut fenced = false;
    let mut open: Option<(usize, String)> = None;
    for (n, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        for (i, part) in line.split('`').enumerate() {
            if i > 0 {
                // A backtick before this part: a span opens or closes.
                match open.take() {
                    Some(span) => spans.push(span),
                    None => open = Some((n + 1, String::new())),
                }
            }
            if let Some((_, span)) = open.as_mut() {
                span.push_str(part);
            }
        }
        if let Some((_, span)) = open.as_mut() {
            span.push('\n');
        }
    }
    spans
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Whether `text` holds `word` as a whole word.
fn has_word(text: &str, word: &str) -> bool {
    text.match_indices(word).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + word.len()..].chars().next();
        !before.is_some_and(is_word_char) && !after.is_some_and(is_word_char)
    })
}

/// The line numbers (0-based) where `text` defines `name`.
fn definitions(text: &str, name: &str) -> Vec<usize> {
    const KINDS: &[&str] = &["fn", "struct", "enum", "trait", "type", "const", "mod"];
    text.lines()
        .enumerate()
        .filter(|(_, line)| {
            let line = line.trim_start();
            KINDS.iter().any(|kind| {
                line.match_indices(&format!("{kind} {name}")).any(|(i, m)| {
                    let before_ok = i == 0 || line[..i].ends_with(' ');
                    let after = line[i + m.len()..].chars().next();
                    before_ok && !after.is_some_and(is_word_char)
                })
            })
        })
        .map(|(i, _)| i)
        .collect()
}

fn is_test_file(path: &str) -> bool {
    path.contains("/tests/") || path.ends_with("/tests.rs")
}

/// Checks one reference; `Err` says what is wrong.
fn check(root: &Path, reference: &str) -> Result<(), String> {
    let (path, items) = match reference.split_once(".rs::") {
        Some((p, items)) => (format!("{p}.rs"), Some(items)),
        None => (reference.trim_end_matches('/').to_string(), None),
    };
    let file = root.join(&path);
    if !file.exists() {
        return Err(format!("{path} does not exist"));
    }
    let Some(items) = items else {
        return Ok(());
    };
    let text = std::fs::read_to_string(&file).map_err(|e| format!("{path}: {e}"))?;
    let segments: Vec<&str> = items.split("::").collect();
    let (name, types) = segments
        .split_last()
        .expect("split yields one segment at least");
    for ty in types {
        if !has_word(&text, ty) {
            return Err(format!("{path} never mentions {ty}"));
        }
    }
    let defs = definitions(&text, name);
    if defs.is_empty() {
        return Err(format!("{path} does not define {name}"));
    }
    let lines: Vec<&str> = text.lines().collect();
    // Where a `mod tests` starts, if the file has one: items after it are tests.
    let tests_mod = lines
        .iter()
        .position(|l| l.trim_start().starts_with("mod tests"));
    let in_tests = is_test_file(&path) || tests_mod.is_some_and(|m| defs.iter().all(|&d| d > m));
    if in_tests {
        let is_test = defs.iter().any(|&d| {
            lines[d.saturating_sub(3)..d]
                .iter()
                .any(|l| l.contains("#[test]") || l.contains("#[tokio::test"))
        });
        if !is_test {
            return Err(format!("{path}: {name} is not a test function"));
        }
    }
    Ok(())
}

/// The references among a doc's code spans.
fn references(text: &str) -> Vec<(usize, String)> {
    code_spans(text)
        .into_iter()
        .filter(|(_, s)| !s.contains(' ') && (s.contains(".rs::") || s.contains('/')))
        .filter(|(_, s)| !s.starts_with("http") && !s.starts_with('-'))
        .collect()
}

#[test]
fn every_reference_in_the_docs_resolves() {
    let root = workspace_root();
    for doc in DOCS {
        let text = std::fs::read_to_string(root.join(doc)).expect("the doc exists");
        let refs = references(&text);
        let code_refs = refs.iter().filter(|(_, r)| r.contains(".rs::")).count();
        assert!(
            code_refs >= 40,
            "{doc}: only {code_refs} code references found; is the reference format still `path.rs::item`?"
        );
        let broken: Vec<String> = refs
            .iter()
            .filter_map(|(line, r)| {
                check(&root, r)
                    .err()
                    .map(|e| format!("  {doc}:{line}: `{r}`: {e}"))
            })
            .collect();
        assert!(
            broken.is_empty(),
            "broken references in {doc}:\n{}",
            broken.join("\n")
        );
    }
}

#[test]
fn the_checker_catches_broken_references() {
    let root = workspace_root();
    let ok = [
        "raft-core/src/engine/election.rs::Engine::handle_vote_request",
        "raft-core/src/types.rs::LogId",
        "raft-core/src/engine/tests.rs::granting_a_vote_resets_the_election_timer",
        "raft-core/src/engine/",
    ];
    for r in ok {
        assert_eq!(check(&root, r), Ok(()), "{r}");
    }
    let broken = [
        "raft-core/src/engine/mod.rs::Engine::handle_vote_requests",
        "raft-core/src/engine/nope.rs::Engine::tick",
        "raft-core/src/engine/mod.rs::Nope::tick",
        // Helpers, not tests.
        "raft-core/src/engine/tests.rs::make_leader",
        "raft-core/src/engine/log.rs::e",
        "raft-core/src/nope/",
    ];
    for r in broken {
        assert!(check(&root, r).is_err(), "{r} should not resolve");
    }
    let spans = references(
        "see `a/b.rs::f` and `cargo run` then\n```text\n`x/y.rs::g`\n```\n`c/d.md` and `a span\nover two lines` then `e/f.rs::g`",
    );
    assert_eq!(
        spans,
        vec![
            (1, "a/b.rs::f".to_string()),
            (5, "c/d.md".to_string()),
            (6, "e/f.rs::g".to_string())
        ]
    );
}
