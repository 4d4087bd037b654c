//! `raft-kv status --all` and `GET /ui/cluster` against three `raft-kv serve` processes: one row
//! per member with its role, term and indexes, and a member killed shows as unreachable.

mod procs;

use std::collections::BTreeMap;
use std::process::Command;

use hyper::Method;
use procs::{wait_for_every_running_node, wait_for_leader, Procs, RawHttp};
use raft_kv::cluster_view::ClusterView;
use raft_kv::http_ui::ACTION_HEADER;
use raft_kv::status_table::COLUMNS;

/// What `raft-kv status --all --addr ADDR` printed: the exit code, stdout, stderr.
fn status_all(addr: &str) -> (Option<i32>, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_raft-kv"))
        .args(["--log", "warn", "status", "--all", "--addr", addr])
        .output()
        .expect("runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The table's rows by id, each a map heading -> cell, cut at the headings' offsets (so a row
/// whose cells are not under their headings fails to parse as expected).
fn table(stdout: &str) -> BTreeMap<u64, BTreeMap<&'static str, String>> {
    let lines: Vec<&str> = stdout.lines().collect();
    let header_at = lines
        .iter()
        .position(|l| l.starts_with("ID  "))
        .unwrap_or_else(|| panic!("no table header in:\n{stdout}"));
    let header = lines[header_at];
    let starts: Vec<usize> = COLUMNS
        .iter()
        .map(|c| {
            header
                .find(&format!("{c} "))
                .or_else(|| header.ends_with(c).then(|| header.len() - c.len()))
                .unwrap_or_else(|| panic!("no column {c} in {header:?}"))
        })
        .collect();
    let mut rows = BTreeMap::new();
    for line in &lines[header_at + 1..] {
        let mut row = BTreeMap::new();
        for (i, column) in COLUMNS.iter().enumerate() {
            let end = starts
                .get(i + 1)
                .copied()
                .unwrap_or(line.len())
                .min(line.len());
            let start = starts[i].min(end);
            if i > 0 {
                assert_eq!(
                    &line[start - 2..start],
                    "  ",
                    "{column} misaligned in {line:?}"
                );
            }
            row.insert(*column, line[start..end].trim().to_string());
        }
        rows.insert(row["ID"].parse().expect("an id"), row);
    }
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_all_shows_every_member_and_the_one_that_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let mut procs = Procs::new(dir.path());
    procs.start_all();
    let (leader, term) = wait_for_leader(&procs, 0).await;
    for i in 0..5 {
        let reply = procs
            .client(leader)
            .put(&format!("k{i}"), "v")
            .await
            .unwrap();
        assert!(reply.status.is_success(), "{reply:?}");
    }
    let commit = procs.client(leader).status().await.unwrap().commit_index;
    wait_for_every_running_node(&procs, "apply the writes", |s| {
        s.last_applied >= commit && s.leader == Some(leader)
    })
    .await;
    let asked = (1..=3).find(|&id| id != leader).unwrap();
    let victim = (1..=3).find(|&id| id != leader && id != asked).unwrap();
    let addrs: Vec<String> = procs.nodes.iter().map(|n| n.http.clone()).collect();
    let addr = |id: u64| addrs[id as usize - 1].clone();

    let (code, stdout, stderr) = status_all(&addr(asked));
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("voters 1, 2, 3; learners none"), "{stdout}");
    assert!(
        stdout.contains(&format!("leader: node {leader}, term {term}")),
        "{stdout}"
    );
    let rows = table(&stdout);
    assert_eq!(
        rows.keys().copied().collect::<Vec<_>>(),
        vec![1, 2, 3],
        "{stdout}"
    );
    for (id, row) in &rows {
        let role = if *id == leader { "leader" } else { "follower" };
        assert_eq!(row["ROLE"], role, "{stdout}");
        assert_eq!(row["ADDR"], addr(*id));
        assert_eq!(row["TERM"], term.to_string(), "{stdout}");
        assert_eq!(row["LEADER"], leader.to_string());
        assert!(row["COMMIT"].parse::<u64>().unwrap() >= commit, "{stdout}");
        assert!(row["APPLIED"].parse::<u64>().unwrap() >= commit, "{stdout}");
        assert!(
            row["LAST LOG"].parse::<u64>().unwrap() >= commit,
            "{stdout}"
        );
        assert_eq!(row["SNAPSHOT"], "0");
        assert!(row["LAG"].parse::<u64>().is_ok(), "{stdout}");
        assert_eq!(row["STATE"], "up");
    }

    procs.kill(victim);
    let (code, stdout, stderr) = status_all(&addr(asked));
    assert_eq!(code, Some(1), "a member is down: {stdout}\n{stderr}");
    let rows = table(&stdout);
    assert_eq!(rows.len(), 3, "{stdout}");
    assert_eq!(rows[&victim]["ROLE"], "unreachable", "{stdout}");
    assert_eq!(rows[&victim]["TERM"], "-");
    assert!(
        rows[&victim]["STATE"].starts_with("unreachable: "),
        "{stdout}"
    );
    assert_eq!(rows[&leader]["ROLE"], "leader", "{stdout}");
    assert_eq!(rows[&asked]["STATE"], "up", "{stdout}");

    // The dashboard's data, gathered by a node: the same view.
    let reply = procs
        .client(asked)
        .request(Method::GET, "/ui/cluster", None)
        .await
        .unwrap();
    let view: ClusterView = serde_json::from_value(reply.body).unwrap();
    assert_eq!(view.via, asked);
    assert_eq!(view.leader().map(|m| m.id), Some(leader));
    let down = &view.members[victim as usize - 1];
    assert!(down.status.is_none() && down.error.is_some(), "{down:?}");
    assert_eq!(down.display_role(), "unreachable");
    assert_eq!(view.lag_of(leader), Some(0));

    // The dashboard's actions, sent on to the leader by the node whose page it is: leadership
    // moves to that node.
    let action = |path: &str, body: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nhost: raft-kv\r\n{ACTION_HEADER}: 1\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let mut raw = RawHttp::connect(&addr(asked)).await.unwrap();
    let (code, answer) = raw
        .exchange(
            action(
                "/ui/admin/transfer-leader",
                &format!(r#"{{"to": {asked}}}"#),
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(code, 200, "{answer}");
    assert!(answer.contains(&format!(r#""leader":{asked}"#)), "{answer}");
    let status = procs.client(asked).status().await.unwrap();
    assert_eq!(status.role, "leader");
    // A refused change: the leader's error comes back as it is.
    let (code, answer) = raw
        .exchange(action("/ui/admin/members", r#"{"promote": 9}"#).as_bytes())
        .await
        .unwrap();
    assert_eq!(code, 409, "{answer}");
    assert!(answer.contains(r#""error":"not_a_learner""#), "{answer}");

    // A node that does not answer at all: exit code 2 and the reason on stderr.
    procs.kill(asked);
    let (code, _, stderr) = status_all(&addr(asked));
    assert_eq!(code, Some(2));
    assert!(stderr.contains("error"), "{stderr}");
}
