//! Log lines name the node and its current term once, however many terms pass (a span field recorded
//! again would be appended). Alone in its binary: a thread-local subscriber set while other tests run
//! on other threads can find span callsites already disabled.

use std::time::Duration;

use raft_core::*;

mod common;
use common::*;

/// Everything a `fmt` subscriber writes, shared with the test.
#[derive(Clone, Default)]
struct CapturedLogs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for CapturedLogs {
    type Writer = CapturedLogs;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test(start_paused = true)]
async fn log_lines_name_the_node_and_one_term_however_many_terms_pass() {
    let logs = CapturedLogs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let raft = single_node_leader().await;
    // Each higher-term vote request moves the node to that term; it then elects itself again. The
    // requests are marked as a leadership transfer's: a live leader refuses any other.
    for term in [5, 10, 15, 20] {
        let request = VoteRequest {
            term,
            candidate_id: 2,
            last_log_id: LogId::new(term, 1_000),
            leadership_transfer: true,
        };
        assert!(raft.vote(request).await.expect("running").vote_granted);
        raft.wait_for_leader(Duration::from_secs(2))
            .await
            .expect("leads again");
    }
    assert_eq!(raft.metrics().borrow().current_term, 21);
    raft.shutdown().await;

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).expect("utf-8 logs");
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("raft{node=1}:term{term=20}:")),
        "{text}"
    );
    for line in lines {
        assert!(
            line.matches("term{").count() <= 1 && !line.contains("raft{node=1 "),
            "a span field was recorded twice: {line}"
        );
    }
}
