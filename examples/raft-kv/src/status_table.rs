//! A [`ClusterView`] as a terminal table: what `raft-kv status --all` prints.
//!
//! ```text
//! membership (as node 1 sees it): voters 1, 2, 3; learners none
//! leader: node 2, term 3
//! ID  ADDR            ROLE      TERM  LEADER  COMMIT  APPLIED  LAST LOG  SNAPSHOT  LAG  STATE
//! 1   127.0.0.1:8001  follower  3     2       12      12       12        0         0    up
//! 2   127.0.0.1:8002  leader    3     2       12      12       12        0         0    up
//! 3   127.0.0.1:8003  -         -     -       -       -        -         -         -    unreachable: connection refused
//! ```
//!
//! Columns are left-aligned, separated by two spaces, every row as wide as the widest cell of each
//! column; a value that is not known is `-`.

use std::fmt::Write as _;

use raft_core::NodeId;

use crate::cluster_view::{ClusterView, MemberView};

/// The table's column headings, in order.
pub const COLUMNS: [&str; 11] = [
    "ID", "ADDR", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED", "LAST LOG", "SNAPSHOT", "LAG",
    "STATE",
];

/// The longest error text shown in the STATE column (the rest is cut, marked `...`).
const MAX_STATE_CHARS: usize = 80;

fn ids(ids: &[NodeId]) -> String {
    if ids.is_empty() {
        "none".to_string()
    } else {
        ids.iter()
            .map(NodeId::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// One member's cells, in [`COLUMNS`] order.
pub fn row(view: &ClusterView, member: &MemberView) -> [String; 11] {
    let dash = || "-".to_string();
    let addr = member.http_addr.clone().unwrap_or_else(dash);
    let lag = view.lag_of(member.id).map_or_else(dash, |l| l.to_string());
    let role = member.display_role().to_string();
    match &member.status {
        Some(s) => [
            member.id.to_string(),
            addr,
            role,
            s.term.to_string(),
            s.leader.map_or_else(dash, |l| l.to_string()),
            s.commit_index.to_string(),
            s.last_applied.to_string(),
            s.last_log_index.to_string(),
            s.snapshot_index.to_string(),
            lag,
            if s.status == "running" {
                "up".to_string()
            } else {
                s.status.clone()
            },
        ],
        None => {
            let error = member.error.as_deref().unwrap_or("no answer");
            let mut state = format!("unreachable: {error}");
            if state.chars().count() > MAX_STATE_CHARS {
                state = state.chars().take(MAX_STATE_CHARS - 3).collect::<String>() + "...";
            }
            [
                member.id.to_string(),
                addr,
                role,
                dash(),
                dash(),
                dash(),
                dash(),
                dash(),
                dash(),
                lag,
                state,
            ]
        }
    }
}

/// The whole text: the membership and leader lines, then the table (one line per member).
pub fn render(view: &ClusterView) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "membership (as node {} sees it): voters {}; learners {}",
        view.via,
        ids(&view.voters),
        ids(&view.learners)
    );
    if let Some(old) = &view.old_voters {
        let _ = write!(out, "; joint, outgoing voters {}", ids(old));
    }
    out.push('\n');
    match view
        .leader()
        .and_then(|l| l.status.as_ref().map(|s| (l.id, s.term)))
    {
        Some((id, term)) => {
            let _ = writeln!(out, "leader: node {id}, term {term}");
        }
        None => out.push_str("leader: none among the members that answered\n"),
    }
    let rows: Vec<[String; 11]> = std::iter::once(COLUMNS.map(str::to_string))
        .chain(view.members.iter().map(|m| row(view, m)))
        .collect();
    let mut widths = [0usize; 11];
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for r in &rows {
        let mut line = String::new();
        for (i, (cell, w)) in r.iter().zip(widths).enumerate() {
            if i + 1 == r.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::StatusBody;

    fn status(id: NodeId, role: &str, term: u64, leader: Option<NodeId>) -> StatusBody {
        StatusBody {
            id,
            status: "running".into(),
            role: role.into(),
            term,
            leader,
            leader_http: None,
            commit_index: 12,
            last_applied: 11,
            last_log_index: 13,
            snapshot_index: 4,
            log_entries: 9,
            members: vec![1, 2, 3],
            learners: vec![4],
            joint: false,
            old_voters: None,
            lag: if role == "leader" {
                [(1, 0), (3, 7), (4, 2)].into()
            } else {
                Default::default()
            },
            elections_started: 0,
            pre_votes_lost: 0,
            transfers_started: 0,
            transfers_abandoned: 0,
        }
    }

    fn member(id: NodeId, status: Option<StatusBody>) -> MemberView {
        MemberView {
            id,
            http_addr: Some(format!("127.0.0.1:800{id}")),
            voter: id != 4,
            learner: id == 4,
            error: status.is_none().then(|| "connection refused".to_string()),
            status,
            elapsed_ms: 1,
        }
    }

    fn view() -> ClusterView {
        ClusterView {
            via: 1,
            voters: vec![1, 2, 3],
            learners: vec![4],
            old_voters: None,
            joint: false,
            members: vec![
                member(1, Some(status(1, "follower", 3, Some(2)))),
                // A deposed leader of an older term must not be taken for the leader.
                member(2, Some(status(2, "leader", 3, Some(2)))),
                member(3, Some(status(3, "leader", 2, Some(3)))),
                member(4, Some(status(4, "follower", 3, Some(2)))),
                member(5, None),
            ],
        }
    }

    #[test]
    fn rows_show_each_member_with_the_leaders_lag() {
        let v = view();
        assert_eq!(v.leader().map(|m| m.id), Some(2));
        let rows: Vec<[String; 11]> = v.members.iter().map(|m| row(&v, m)).collect();
        assert_eq!(
            rows[0],
            [
                "1",
                "127.0.0.1:8001",
                "follower",
                "3",
                "2",
                "12",
                "11",
                "13",
                "4",
                "0",
                "up"
            ]
        );
        assert_eq!(rows[1][2], "leader");
        assert_eq!(rows[1][9], "0", "the leader lags itself by nothing");
        assert_eq!(rows[2][9], "7");
        assert_eq!(rows[3][2], "learner");
        assert_eq!(rows[3][9], "2");
        assert_eq!(rows[4][2], "unreachable");
        assert_eq!(rows[4][3], "-");
        assert_eq!(rows[4][10], "unreachable: connection refused");
    }

    #[test]
    fn the_table_is_aligned_under_its_headings() {
        let text = render(&view());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "membership (as node 1 sees it): voters 1, 2, 3; learners 4"
        );
        assert_eq!(lines[1], "leader: node 2, term 3");
        let header = lines[2];
        assert!(header.starts_with("ID  ADDR  "), "{header}");
        assert_eq!(lines.len(), 3 + 5);
        // Every column starts at the same offset in every row.
        for heading in ["ROLE", "TERM", "LAG", "STATE"] {
            let at = header.find(heading).unwrap();
            for line in &lines[3..] {
                let before = &line[..at];
                assert!(
                    before.ends_with("  ") && !line[at..].starts_with(' '),
                    "{heading} misaligned in {line:?}"
                );
            }
        }
    }

    #[test]
    fn long_errors_are_cut() {
        let mut v = view();
        v.members[4].error = Some("x".repeat(500));
        let r = row(&v, &v.members[4]);
        assert_eq!(r[10].chars().count(), MAX_STATE_CHARS);
        assert!(r[10].ends_with("..."));
    }
}
