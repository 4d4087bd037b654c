//! `raft-kv serve --log-format json`: every line on stderr is a JSON object, and the node's events
//! carry the `raft{node}` and `term{term}` spans with their fields. `RUST_LOG` gives the filter
//! when `--log` is absent.

mod procs;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use procs::free_ports;
use serde_json::Value;

/// Starts a one-node cluster with `flags` and `env` (name, value), waits (up to 20 s) until its
/// stderr holds a line satisfying `done`, kills it and returns its stderr.
fn run_single_node(
    root: &std::path::Path,
    flags: &[&str],
    env: Option<(&str, &str)>,
    done: impl Fn(&str) -> bool,
) -> String {
    let ports = free_ports(2);
    let raft = format!("127.0.0.1:{}", ports[0]);
    let http = format!("127.0.0.1:{}", ports[1]);
    let log_path = root.join("node.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_raft-kv"));
    command
        .args(flags)
        .args(["serve", "--id", "1", "--insecure"])
        .args(["--raft-addr", &raft, "--http-addr", &http])
        .args(["--peers", &format!("1={raft}/{http}")])
        .arg("--data-dir")
        .arg(root.join("data"))
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log));
    if let Some((name, value)) = env {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if text.lines().any(&done) || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    text
}

#[test]
fn json_lines_carry_the_node_and_term_spans() {
    let root = tempfile::tempdir().unwrap();
    let text = run_single_node(
        root.path(),
        &["--log", "info", "--log-format", "json"],
        None,
        |line| line.contains("\"term\"") && line.contains("\"node\""),
    );
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(!lines.is_empty(), "nothing logged");
    for line in &lines {
        assert!(
            line["level"].is_string() && line["fields"].is_object(),
            "{line}"
        );
    }
    let in_term = lines
        .iter()
        .find(|line| {
            let spans = line["spans"].as_array();
            spans.is_some_and(|spans| {
                spans.iter().any(|s| s["name"] == "raft" && s["node"] == 1)
                    && spans
                        .iter()
                        .any(|s| s["name"] == "term" && s["term"].is_u64())
            })
        })
        .unwrap_or_else(|| panic!("no line in the node's term spans:\n{text}"));
    // The innermost span is the term's.
    assert_eq!(in_term["span"]["name"], "term", "{in_term}");
}

#[test]
fn rust_log_is_the_filter_without_the_flag() {
    let root = tempfile::tempdir().unwrap();
    // `RUST_LOG=debug`: raft-core's debug lines appear, which the default `info` hides.
    let text = run_single_node(root.path(), &[], Some(("RUST_LOG", "debug")), |line| {
        line.contains("DEBUG")
    });
    assert!(text.lines().any(|l| l.contains("DEBUG")), "{text}");

    // `--log warn` wins over `RUST_LOG=debug`: nothing below WARN.
    let root = tempfile::tempdir().unwrap();
    let text = run_single_node(
        root.path(),
        &["--log", "warn"],
        Some(("RUST_LOG", "debug")),
        |line| line.contains("WARN"),
    );
    assert!(
        !text
            .lines()
            .any(|l| l.contains(" INFO ") || l.contains("DEBUG")),
        "{text}"
    );
}
