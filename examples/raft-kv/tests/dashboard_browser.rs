//! The dashboard (`GET /ui`) in a real browser: headless Chromium watches three `raft-kv serve`
//! processes through one node's page; the leader is killed with SIGKILL, and the page must show
//! the new leader and the old one unreachable. Two screenshots are taken on the way (written to
//! a temporary directory, or to the repository's `docs/` with `UPDATE_SCREENSHOTS=1`).

mod chromium;
mod procs;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use chromium::{attr, tags_with, text_of_id, Browser};
use procs::{wait_for_every_running_node, wait_for_leader, Procs};

/// Virtual time each page load runs for before its DOM is read: two or three polls.
const BUDGET: Duration = Duration::from_millis(2500);

/// How long the page may take to show what the test waits for.
const PAGE_DEADLINE: Duration = Duration::from_secs(20);

/// What the page shows: `#leader`, and each member card's `data-role` by `data-node-id`.
#[derive(Debug, PartialEq, Eq)]
struct Shown {
    leader: Option<u64>,
    roles: BTreeMap<u64, String>,
}

fn shown(dom: &str) -> Shown {
    let roles = tags_with(dom, "data-node-id")
        .into_iter()
        .filter_map(|tag| {
            let id = attr(tag, "data-node-id")?.parse().ok()?;
            Some((id, attr(tag, "data-role")?.to_string()))
        })
        .collect();
    Shown {
        leader: text_of_id(dom, "leader").and_then(|t| t.parse().ok()),
        roles,
    }
}

/// Loads `url` until what it shows satisfies `done`; returns that.
fn wait_for_page(browser: &Browser, url: &str, what: &str, done: impl Fn(&Shown) -> bool) -> Shown {
    let deadline = Instant::now() + PAGE_DEADLINE;
    loop {
        let dom = browser.dump_dom(url, BUDGET);
        let now = shown(&dom);
        if done(&now) {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "the page did not show {what} within {PAGE_DEADLINE:?}: {now:?}\n{dom}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Where the screenshots go: the repository's `docs/` with `UPDATE_SCREENSHOTS=1`, else a
/// temporary directory (so a test run leaves the tree as it was).
fn screenshot_dir(temp: &std::path::Path) -> PathBuf {
    if std::env::var_os("UPDATE_SCREENSHOTS").is_some_and(|v| v == "1") {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs")
    } else {
        temp.to_path_buf()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_a_failover() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let shots = screenshot_dir(dir.path());
    let mut procs = Procs::new(dir.path());
    procs.start_all();
    let (first, term) = wait_for_leader(&procs, 0).await;
    for i in 0..20 {
        let reply = procs
            .client(first)
            .put(&format!("key-{i}"), "value")
            .await
            .unwrap();
        assert!(reply.status.is_success(), "{reply:?}");
    }
    let commit = procs.client(first).status().await.unwrap().commit_index;
    wait_for_every_running_node(&procs, "apply the writes", |s| s.last_applied >= commit).await;

    // The page of a node that survives the failover.
    let watcher = (1..=3).find(|&id| id != first).unwrap();
    let url = format!("http://{}/ui", procs.nodes[watcher as usize - 1].http);
    let browser = Browser::new();
    let before = tokio::task::block_in_place(|| {
        wait_for_page(&browser, &url, "three members, one leader", |s| {
            s.roles.len() == 3
                && s.leader == Some(first)
                && s.roles.values().filter(|r| *r == "leader").count() == 1
        })
    });
    for (id, role) in &before.roles {
        let expected = if *id == first { "leader" } else { "follower" };
        assert_eq!(role, expected, "node {id}: {before:?}");
    }
    let before_png = shots.join("dashboard-before.png");
    tokio::task::block_in_place(|| browser.screenshot(&url, BUDGET, &before_png, 1280, 720));

    procs.kill(first);
    let (second, new_term) = wait_for_leader(&procs, term).await;
    assert_ne!(second, first);
    let after = tokio::task::block_in_place(|| {
        wait_for_page(
            &browser,
            &url,
            "a new leader and the old one unreachable",
            |s| {
                s.leader.is_some_and(|l| l != first)
                    && s.roles.get(&first).is_some_and(|r| r == "unreachable")
            },
        )
    });
    assert_eq!(after.leader, Some(second), "{after:?} (term {new_term})");
    assert_eq!(after.roles.len(), 3, "{after:?}");
    for (id, role) in &after.roles {
        let expected = if *id == first {
            "unreachable"
        } else if *id == second {
            "leader"
        } else {
            "follower"
        };
        assert_eq!(role, expected, "node {id}: {after:?}");
    }
    // The timeline tells what happened between the page's loads (it keeps them in the
    // browser's storage).
    let dom = tokio::task::block_in_place(|| browser.dump_dom(&url, BUDGET));
    for event in [
        format!("Node {first} unreachable (was leader)"),
        format!("Node {second} leads, term {new_term} (was node {first})"),
    ] {
        assert!(dom.contains(&event), "no {event:?} in the timeline:\n{dom}");
    }
    let after_png = shots.join("dashboard-after-failover.png");
    tokio::task::block_in_place(|| browser.screenshot(&url, BUDGET, &after_png, 1280, 720));
    eprintln!(
        "dashboard failover test: {:?}; screenshots {} and {}",
        started.elapsed(),
        before_png.display(),
        after_png.display()
    );
}
