//! Linearizability of the HTTP API, measured from outside: three `raft-kv serve` processes, eight
//! concurrent clients reading (without log entries: ReadIndex, or the leader's lease on a cluster
//! started with `--read-lease-drift-ms`) and writing (`PUT`, compare-and-swap, `DELETE`, in client
//! sessions) a few keys, while the leader is killed with SIGKILL and restarted, and then a leader
//! is stopped with SIGSTOP for longer than an election timeout and continued.
//!
//! The history (invocation and response of every operation, in one logical clock; what it
//! answered; the `Log-Index` of its answer) is checked with the simulation's own checker,
//! `raft_sim::check_history`: every operation is placed in one total order — a write at the log
//! index where it was applied, a read just after the index of the state it read, reads at one index
//! by invocation — and the checker verifies that this order respects real time. This file adds the
//! key-value half: replaying the writes in that order, every answer (a read's value, a `PUT`'s
//! previous value, a compare-and-swap's outcome, a `DELETE`'s) is the one the sequential table
//! gives. A write whose outcome stays unknown after the client's own retries is sent again, with
//! its session's numbers, until the cluster answers it (applied once, whatever happened before).
//!
//! Then exactly-once, deterministically: a compare-and-swap and a `DELETE` sent through a proxy that
//! lets the request reach the leader, waits for the answer (the write is applied), makes another
//! client undo the write's effect, and then loses the answer (a fabricated `500 outcome_unknown`,
//! or a closed connection). The client's retry carries the same `Client-Seq`: it is answered from
//! the session (`Session-Duplicate: true`, the first application's `Log-Index`) and not applied
//! again, which the value left in the table shows.

mod procs;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use hyper::{Method, StatusCode};
use procs::*;
use raft_core::LogId;
use raft_kv::client::{encode_key, KvClient, Reply};
use raft_kv::http_read::Consistency;
use raft_sim::{check_history, History, Outcome};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const CLIENTS: usize = 8;
const KEYS: [&str; 3] = ["x", "y", "z"];

/// Positions of the total order: a write at `index << SHIFT`, a read at index `i` at
/// `i << SHIFT | (1 + invocation time)`, so that it follows the write at `i` and precedes the one
/// at `i + 1`, and reads at one index follow their invocations.
const SHIFT: u32 = 28;

/// One client operation.
#[derive(Clone, Debug)]
enum Kind {
    Get {
        key: String,
        mode: Consistency,
    },
    Put {
        key: String,
        value: String,
    },
    Delete {
        key: String,
    },
    Cas {
        key: String,
        expected: Option<String>,
        new: String,
    },
}

impl Kind {
    fn key(&self) -> &str {
        match self {
            Kind::Get { key, .. }
            | Kind::Put { key, .. }
            | Kind::Delete { key }
            | Kind::Cas { key, .. } => key,
        }
    }

    /// The request: method, path, body.
    fn request(&self) -> (Method, String, Option<(Bytes, &'static str)>) {
        let path = format!("/kv/{}", encode_key(self.key()));
        match self {
            Kind::Get { mode, .. } => (
                Method::GET,
                format!("{path}?consistency={}", mode.as_str()),
                None,
            ),
            Kind::Put { value, .. } => (
                Method::PUT,
                path,
                Some((Bytes::from(value.clone()), "text/plain")),
            ),
            Kind::Delete { .. } => (Method::DELETE, path, None),
            Kind::Cas { expected, new, .. } => {
                let body = serde_json::json!({ "expected": expected, "new": new }).to_string();
                (
                    Method::POST,
                    format!("{path}/cas"),
                    Some((Bytes::from(body), "application/json")),
                )
            }
        }
    }
}

/// What an operation answered.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Answer {
    Value(Option<String>),
    Put {
        previous: Option<String>,
    },
    Deleted {
        previous: Option<String>,
    },
    Cas {
        swapped: bool,
        current: Option<String>,
    },
}

fn string_of(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string)
}

/// The answer `reply` gives to `kind`, with its `Log-Index`, if it is a definite one.
fn definite(kind: &Kind, reply: &Reply) -> Option<(Answer, u64)> {
    let b = &reply.body;
    let not_found =
        reply.status == StatusCode::NOT_FOUND && reply.error_code() == Some("not_found");
    let answer = match kind {
        Kind::Get { .. } if reply.status == StatusCode::OK => {
            Answer::Value(Some(string_of(&b["value"]).expect("a value")))
        }
        Kind::Get { .. } if not_found => Answer::Value(None),
        Kind::Put { .. } if reply.status == StatusCode::OK => Answer::Put {
            previous: string_of(&b["previous"]),
        },
        Kind::Delete { .. } if reply.status == StatusCode::OK => Answer::Deleted {
            previous: Some(string_of(&b["previous"]).expect("a previous value")),
        },
        Kind::Delete { .. } if not_found => Answer::Deleted { previous: None },
        Kind::Cas { .. }
            if matches!(reply.status, StatusCode::OK | StatusCode::CONFLICT)
                && b.get("swapped").is_some() =>
        {
            Answer::Cas {
                swapped: b["swapped"].as_bool().expect("swapped is a bool"),
                current: string_of(&b["current"]),
            }
        }
        _ => {
            // A session refusal would mean the client misnumbered its writes: a bug either side.
            assert!(
                !matches!(
                    reply.error_code(),
                    Some("session_stale" | "session_expired")
                ),
                "{kind:?}: {reply:?}"
            );
            return None;
        }
    };
    let index = reply
        .log_index
        .unwrap_or_else(|| panic!("no Log-Index in {reply:?}"));
    Some((answer, index))
}

/// One recorded operation.
#[derive(Clone, Debug)]
struct Record {
    kind: Kind,
    /// The answer and its position in the total order, once definite.
    answer: Option<(Answer, u64)>,
    /// Whether a first answer left its outcome unknown (a write resolved later by its session).
    was_unknown: bool,
    /// Whether the final answer came from the session table.
    duplicate: bool,
}

/// The history, behind one lock (see `raft_sim::History` on concurrent recording).
#[derive(Default)]
struct Recorder {
    history: History,
    records: BTreeMap<u64, Record>,
}

type Shared = Arc<Mutex<Recorder>>;

fn invoke(rec: &Shared, id: u64, kind: Kind) {
    let mut r = rec.lock().unwrap();
    r.history.invoke(id).unwrap();
    r.records.insert(
        id,
        Record {
            kind,
            answer: None,
            was_unknown: false,
            duplicate: false,
        },
    );
}

/// Records the definite answer of operation `id`, or (`None`) that it ended without one.
fn complete(rec: &Shared, id: u64, answer: Option<(Answer, u64)>, duplicate: bool, why: &str) {
    let mut r = rec.lock().unwrap();
    let Some((answer, index)) = answer else {
        r.history.complete(id, Outcome::Unknown(why.to_string()));
        return;
    };
    let invoked = r.history.ops()[&id].invoked;
    let record = r.records.get_mut(&id).expect("invoked");
    let position = match record.kind {
        Kind::Get { .. } => {
            assert!(invoked + 1 < 1 << SHIFT);
            (index << SHIFT) | (invoked + 1)
        }
        _ => index << SHIFT,
    };
    record.answer = Some((answer, position));
    record.duplicate = duplicate;
    r.history
        .complete(id, Outcome::Acked(LogId::new(0, position)));
}

/// A small deterministic generator (xorshift), one per client.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// One client: operations on random keys until `stop`, through its node (the next one when that
/// one fails).
async fn client_loop(
    me: usize,
    clients: Vec<KvClient>,
    modes: Vec<Consistency>,
    rec: Shared,
    next_id: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((me as u64 + 1) * 0x1000_0001));
    let mut node = me % clients.len();
    let mut seen: BTreeMap<String, Option<String>> = BTreeMap::new();
    while !stop.load(Ordering::SeqCst) {
        let id = next_id.fetch_add(1, Ordering::SeqCst);
        let key = KEYS[rng.below(KEYS.len() as u64) as usize].to_string();
        let roll = rng.below(100);
        let kind = if roll < 50 {
            let mode = modes[rng.below(modes.len() as u64) as usize];
            Kind::Get { key, mode }
        } else if roll < 75 {
            Kind::Put {
                key,
                value: format!("v{id}"),
            }
        } else if roll < 92 {
            let expected = seen.get(&key).cloned().flatten();
            Kind::Cas {
                key,
                expected,
                new: format!("v{id}"),
            }
        } else {
            Kind::Delete { key }
        };
        invoke(&rec, id, kind.clone());
        let client = &clients[node];
        let result = match &kind {
            Kind::Get { key, mode } => client.get_reply(key, *mode).await,
            Kind::Put { key, value } => client.put(key, value).await,
            Kind::Delete { key } => client.delete(key).await,
            Kind::Cas { key, expected, new } => client.cas(key, expected.as_deref(), new).await,
        };
        let answered = match &result {
            Ok(reply) => definite(&kind, reply).map(|a| (a, reply.duplicate)),
            Err(_) => None,
        };
        let answered = match (answered, &kind) {
            (Some(a), _) => Some(a),
            // A failed read read nothing: recorded as such, and the client moves to another node.
            (None, Kind::Get { .. }) => {
                complete(&rec, id, None, false, &format!("{result:?}"));
                node = (node + 1) % clients.len();
                continue;
            }
            // A write the client gave up on: its outcome is unknown. Send it again with its
            // session's numbers, at the other nodes in turn, until the cluster answers it.
            (None, _) => {
                rec.lock()
                    .unwrap()
                    .records
                    .get_mut(&id)
                    .unwrap()
                    .was_unknown = true;
                let (client_id, seq) = client.last_write().await;
                Some(resolve(&clients, &mut node, &kind, client_id, seq).await)
            }
        };
        let Some(((answer, index), duplicate)) = answered else {
            continue;
        };
        match &answer {
            Answer::Value(v) | Answer::Cas { current: v, .. } => {
                seen.insert(kind.key().to_string(), v.clone());
            }
            Answer::Put { .. } | Answer::Deleted { .. } => {}
        }
        complete(&rec, id, Some((answer, index)), duplicate, "");
    }
}

/// Sends write `seq` of session `client_id` until it gets a definite answer (30 s at most).
async fn resolve(
    clients: &[KvClient],
    node: &mut usize,
    kind: &Kind,
    client_id: u64,
    seq: u64,
) -> ((Answer, u64), bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let (method, path, body) = kind.request();
    loop {
        *node = (*node + 1) % clients.len();
        let reply = clients[*node]
            .request_in_session(method.clone(), &path, body.clone(), client_id, seq)
            .await;
        if let Ok(reply) = &reply {
            if let Some(answer) = definite(kind, reply) {
                return (answer, reply.duplicate);
            }
        }
        assert!(
            Instant::now() < deadline,
            "{kind:?} (client {client_id}, #{seq}) still unanswered: {reply:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The key-value half of the check: replays the operations in their total order and compares each
/// answer with the sequential table's.
fn replay(records: &BTreeMap<u64, Record>) -> Result<(), String> {
    let mut placed: Vec<(u64, u64, &Record)> = records
        .iter()
        .filter_map(|(&id, r)| r.answer.as_ref().map(|(_, pos)| (*pos, id, r)))
        .collect();
    placed.sort_by_key(|&(pos, id, _)| (pos, id));
    let mut table: BTreeMap<&str, String> = BTreeMap::new();
    for (i, &(pos, id, r)) in placed.iter().enumerate() {
        let key = r.kind.key();
        let current = table.get(key).cloned();
        let expected = match &r.kind {
            Kind::Get { .. } => Answer::Value(current),
            Kind::Put { value, .. } => {
                table.insert(key, value.clone());
                Answer::Put { previous: current }
            }
            Kind::Delete { .. } => {
                table.remove(key);
                Answer::Deleted { previous: current }
            }
            Kind::Cas { expected, new, .. } => {
                if &current == expected {
                    table.insert(key, new.clone());
                    Answer::Cas {
                        swapped: true,
                        current: Some(new.clone()),
                    }
                } else {
                    Answer::Cas {
                        swapped: false,
                        current,
                    }
                }
            }
        };
        let got = &r.answer.as_ref().expect("placed").0;
        if got != &expected {
            let context: Vec<String> = placed[i.saturating_sub(6)..=i]
                .iter()
                .map(|(p, id, r)| {
                    format!(
                        "  #{id} at index {} (+{}): {:?} -> {:?}",
                        p >> SHIFT,
                        p & ((1 << SHIFT) - 1),
                        r.kind,
                        r.answer.as_ref().map(|a| &a.0)
                    )
                })
                .collect();
            return Err(format!(
                "operation #{id} at index {} answered {got:?}, but the writes before it give {expected:?}:\n{}",
                pos >> SHIFT,
                context.join("\n")
            ));
        }
    }
    Ok(())
}

/// Both halves of the check on a history built by hand.
fn check(rec: &Recorder) -> Result<(), String> {
    let positions: BTreeMap<u64, u64> = rec
        .records
        .iter()
        .filter_map(|(&id, r)| r.answer.as_ref().map(|(_, pos)| (id, *pos)))
        .collect();
    check_history(
        &rec.history,
        &positions,
        |i| Some(LogId::new(0, i)),
        |v| positions.contains_key(&v),
    )?;
    replay(&rec.records)
}

#[test]
fn the_check_refuses_a_stale_read_and_a_read_of_a_value_not_written_yet() {
    let put = Kind::Put {
        key: "x".into(),
        value: "v1".into(),
    };
    let get = Kind::Get {
        key: "x".into(),
        mode: Consistency::Linearizable,
    };
    let history = |read_at: u64, read: Option<&str>| {
        let rec: Shared = Arc::default();
        invoke(&rec, 1, put.clone());
        complete(
            &rec,
            1,
            Some((Answer::Put { previous: None }, 5)),
            false,
            "",
        );
        invoke(&rec, 2, get.clone());
        let answer = Answer::Value(read.map(str::to_string));
        complete(&rec, 2, Some((answer, read_at)), false, "");
        let rec = Arc::try_unwrap(rec).ok().unwrap().into_inner().unwrap();
        check(&rec)
    };
    assert_eq!(history(5, Some("v1")), Ok(()));
    assert_eq!(history(9, Some("v1")), Ok(()));
    // Invoked after the write was acknowledged, it read a state from before it.
    let stale = history(4, None).expect_err("a stale read");
    assert!(stale.contains("ordered after"), "{stale}");
    // It claims a state that holds the write, yet answered without it.
    let wrong = history(5, None).expect_err("a wrong value");
    assert!(wrong.contains("answered Value(None)"), "{wrong}");
    // A read that failed is not placed, and a concurrent read may see either state.
    let rec: Shared = Arc::default();
    invoke(&rec, 1, put.clone());
    invoke(&rec, 2, get.clone());
    invoke(&rec, 3, get);
    complete(&rec, 2, Some((Answer::Value(None), 4)), false, "");
    complete(&rec, 3, None, false, "timeout");
    complete(
        &rec,
        1,
        Some((Answer::Put { previous: None }, 5)),
        false,
        "",
    );
    let rec = Arc::try_unwrap(rec).ok().unwrap().into_inner().unwrap();
    assert_eq!(check(&rec), Ok(()));
}

/// Runs the workload against a 3-node cluster started with `flags`, with the faults, and checks the
/// history. `modes`: the read modes the clients use.
async fn run(flags: &[&str], modes: Vec<Consistency>) {
    let root = tempfile::tempdir().unwrap();
    let mut procs = Procs::with_flags(root.path(), flags);
    procs.start_all();
    let (_, _) = wait_for_leader(&procs, 0).await;

    let rec: Shared = Arc::default();
    let next_id = Arc::new(AtomicU64::new(1));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|me| {
            let clients: Vec<KvClient> = (1..=NODES)
                .map(|id| procs.client(id).with_timeout(Duration::from_secs(2)))
                .collect();
            tokio::spawn(client_loop(
                me,
                clients,
                modes.clone(),
                rec.clone(),
                next_id.clone(),
                stop.clone(),
            ))
        })
        .collect();

    // The faults, while the clients run.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (leader, term) = wait_for_leader(&procs, 0).await;
    procs.kill(leader);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    procs.start(leader);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (paused, _) = wait_for_leader(&procs, term).await;
    procs.signal(paused, libc::SIGSTOP);
    // Longer than an election timeout (at most 300 ms) many times over: the others elect a leader.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    procs.signal(paused, libc::SIGCONT);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .unwrap_or_else(|_| panic!("a client did not finish\n{}", procs.dump_logs()))
            .unwrap();
    }

    let rec = rec.lock().unwrap();
    let records = &rec.records;
    let positions: BTreeMap<u64, u64> = records
        .iter()
        .filter_map(|(&id, r)| r.answer.as_ref().map(|(_, pos)| (id, *pos)))
        .collect();
    let count = |f: &dyn Fn(&Record) -> bool| records.values().filter(|r| f(r)).count();
    let reads = |mode: Consistency| {
        count(&|r| r.answer.is_some() && matches!(r.kind, Kind::Get { mode: m, .. } if m == mode))
    };
    let writes = count(&|r| r.answer.is_some() && !matches!(r.kind, Kind::Get { .. }));
    let failed_reads = count(&|r| r.answer.is_none());
    let unknown = count(&|r| r.was_unknown);
    let duplicates = count(&|r| r.duplicate);
    eprintln!(
        "{} operations: reads linearizable {}, lease {}, failed {failed_reads}; writes {writes} \
         ({unknown} with an unknown outcome at first, {duplicates} answered from the session); \
         faults: node {leader} killed and restarted, node {paused} stopped for 1.5 s",
        records.len(),
        reads(Consistency::Linearizable),
        reads(Consistency::Lease),
    );
    for mode in &modes {
        assert!(reads(*mode) >= 50, "too few {mode:?} reads to judge");
    }
    assert!(writes >= 50, "too few writes to judge");

    if let Err(e) = check_history(
        &rec.history,
        &positions,
        |i| Some(LogId::new(0, i)),
        |v| positions.contains_key(&v),
    ) {
        panic!(
            "{e}\n(a position is the log index << {SHIFT}, plus 1 + the invocation time for a \
             read)\n{}",
            procs.dump_logs()
        );
    }
    if let Err(e) = replay(records) {
        panic!("{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_index_reads_and_session_writes_are_linearizable_across_a_kill_and_a_pause() {
    run(&[], vec![Consistency::Linearizable]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_reads_are_linearizable_across_a_kill_and_a_pause() {
    run(
        &["--read-lease-drift-ms", "30"],
        vec![Consistency::Lease, Consistency::Linearizable],
    )
    .await;
}

/// What the proxy does to the first connection's answer.
#[derive(Clone, Copy, Debug)]
enum Sabotage {
    /// Replace it with `500 outcome_unknown`.
    OutcomeUnknown,
    /// Close the connection without any answer.
    Close,
}

type Hook = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Reads from `stream` until `buf` holds a whole HTTP message head and the `content-length` bytes
/// after it (or only the head, with `head_only`).
async fn read_message(stream: &mut TcpStream, buf: &mut Vec<u8>, head_only: bool) {
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            if head_only {
                return;
            }
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if buf.len() >= end + 4 + length {
                return;
            }
        }
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed mid-message");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A TCP proxy to `upstream`. The first connection's request is forwarded, and once the answer
/// starts arriving (the write is applied), `hook` runs and the answer is lost as `sabotage` says.
/// Later connections pass through.
async fn proxy(upstream: String, sabotage: Sabotage, hook: Hook) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let mut hook = Some(hook);
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
            let mut outbound = TcpStream::connect(&upstream).await.unwrap();
            match hook.take() {
                Some(hook) => {
                    let mut request = Vec::new();
                    read_message(&mut inbound, &mut request, false).await;
                    outbound.write_all(&request).await.unwrap();
                    let mut answer = Vec::new();
                    read_message(&mut outbound, &mut answer, true).await;
                    hook.await;
                    if let Sabotage::OutcomeUnknown = sabotage {
                        let body = r#"{"error":"outcome_unknown","message":"injected by the test's proxy"}"#;
                        let head = format!(
                            "HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\n\
                             content-length: {}\r\nconnection: close\r\n\r\n",
                            body.len()
                        );
                        let _ = inbound.write_all(head.as_bytes()).await;
                        let _ = inbound.write_all(body.as_bytes()).await;
                    }
                    // Dropping both ends closes them.
                }
                None => {
                    tokio::spawn(async move {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    });
                }
            }
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cas_and_a_delete_retried_after_a_lost_answer_are_applied_once() {
    let root = tempfile::tempdir().unwrap();
    let mut procs = Procs::new(root.path());
    procs.start_all();
    let (leader, _) = wait_for_leader(&procs, 0).await;
    let leader_http = procs.nodes[leader as usize - 1].http.clone();
    let other = procs.client(leader);
    let ok = |r: &Reply| assert!(r.status.is_success(), "{r:?}");

    // CAS a -> b; its answer is replaced by `500 outcome_unknown` after another client has set the
    // key back to a. Applied a second time, the retry would swap again.
    ok(&other.put("cas", "a").await.unwrap());
    let undo_index = Arc::new(Mutex::new(None));
    let hook: Hook = Box::pin({
        let (other, undo_index) = (other.clone(), undo_index.clone());
        async move {
            let r = other.put("cas", "a").await.unwrap();
            assert!(r.status.is_success(), "{r:?}");
            *undo_index.lock().unwrap() = r.log_index;
        }
    });
    let via = proxy(leader_http.clone(), Sabotage::OutcomeUnknown, hook).await;
    let client = KvClient::new(&via).with_timeout(Duration::from_secs(5));
    let reply = client.cas("cas", Some("a"), "b").await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.body["swapped"], true);
    assert_eq!(reply.attempts, 2, "one lost answer, one retry");
    assert!(reply.duplicate, "the retry is answered from the session");
    let undo = undo_index.lock().unwrap().expect("the undo ran");
    assert!(
        reply.log_index.unwrap() < undo,
        "the answer is the first application's, before the undo"
    );
    assert_eq!(
        other.get("cas").await.unwrap().unwrap().as_deref(),
        Some("a"),
        "the retry was not applied again"
    );

    // DELETE; its connection closes with no answer after another client has written the key
    // again. Applied a second time, the retry would delete that value.
    ok(&other.put("del", "x").await.unwrap());
    let hook: Hook = Box::pin({
        let other = other.clone();
        async move {
            let r = other.put("del", "y").await.unwrap();
            assert!(r.status.is_success(), "{r:?}");
        }
    });
    let via = proxy(leader_http, Sabotage::Close, hook).await;
    let client = KvClient::new(&via).with_timeout(Duration::from_secs(5));
    let reply = client.delete("del").await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.body["previous"], "x");
    assert_eq!(reply.attempts, 2);
    assert!(reply.duplicate);
    assert_eq!(
        other.get("del").await.unwrap().unwrap().as_deref(),
        Some("y"),
        "the retry was not applied again"
    );
}
