//! Tests of the snapshot formats through [`KvStateMachine`]: the binary format 3 round trip, the
//! JSON formats 1 and 2 still read, damaged binary snapshots refused, determinism.

use std::collections::BTreeMap;

use raft_core::{Entry, EntryPayload, LogId, Membership, SnapshotMeta, StateMachine};

use crate::{KvCommand, KvStateMachine};

/// The header's size and where its fields are (see `snapshot_binary`).
const HEADER_LEN: usize = 57;
const VERSION_AT: usize = 8;
const RECORDS_AT: usize = 29;
const RECORDS_LEN_AT: usize = 37;

fn meta(term: u64, index: u64) -> SnapshotMeta {
    SnapshotMeta {
        last_log_id: LogId::new(term, index),
        membership: Membership::new([1, 2, 3]),
    }
}

/// Entries 1.. of term 1 carrying `commands`.
fn entries(commands: impl IntoIterator<Item = KvCommand>) -> Vec<Entry<KvCommand>> {
    commands
        .into_iter()
        .enumerate()
        .map(|(i, c)| Entry {
            log_id: LogId::new(1, i as u64 + 1),
            payload: EntryPayload::Command(c).into(),
        })
        .collect()
}

/// A machine that applied puts of `keys` (in that order, value derived from the key) and then
/// two session commands; its snapshot covers entry `(1, keys.len() + 2)`.
async fn machine_with(keys: &[String]) -> KvStateMachine {
    let mut commands: Vec<KvCommand> = keys
        .iter()
        .map(|k| KvCommand::put(k.clone(), format!("value of {k}")))
        .collect();
    commands.push(KvCommand::put("s", "1").in_session(7, 1, 1_000));
    commands.push(KvCommand::delete("s").in_session(8, 1, 1_001));
    let mut sm = KvStateMachine::new();
    sm.apply(&entries(commands)).await.expect("apply");
    sm
}

fn keys(n: usize) -> Vec<String> {
    // An order unrelated to the keys' sort order; includes a multi-byte key.
    let mut keys: Vec<String> = (0..n).map(|i| format!("key-{}", (i * 7919) % n)).collect();
    keys.push("ключ-é".to_string());
    keys
}

/// Recomputes both checksums of a format-3 snapshot after a test changed it on purpose, so the
/// change reaches the check it targets instead of being caught by a checksum.
fn reseal(bytes: &mut [u8]) {
    let header_crc = crc32fast::hash(&bytes[..HEADER_LEN - 4]);
    bytes[HEADER_LEN - 4..HEADER_LEN].copy_from_slice(&header_crc.to_le_bytes());
    let end = bytes.len() - 4;
    let crc = crc32fast::hash(&bytes[..end]);
    bytes[end..].copy_from_slice(&crc.to_le_bytes());
}

fn set_u64(bytes: &mut [u8], at: usize, value: u64) {
    bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

#[tokio::test]
async fn formats_1_2_and_3_restore_the_same_table() {
    let ks = keys(300);
    let mut sm = machine_with(&ks).await;
    let position = meta(1, ks.len() as u64 + 2);
    let binary = sm.snapshot().await.unwrap();
    assert!(KvStateMachine::check_snapshot(&position, &binary).is_ok());
    let table = sm.reader().to_map();
    let sessions = sm.reader().session_table();
    assert_eq!(sessions.len(), 2);
    // The JSON the previous versions wrote: these fields, in this order.
    #[derive(serde::Serialize)]
    struct Json<'a> {
        format: u32,
        last_applied: Option<LogId>,
        data: &'a BTreeMap<String, String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        sessions: Option<&'a crate::KvSessions>,
    }
    let json = |format, sessions| {
        serde_json::to_vec(&Json {
            format,
            last_applied: Some(position.last_log_id),
            data: &table,
            sessions,
        })
        .unwrap()
    };
    let format_2 = json(2, Some(&sessions));
    let format_1 = json(1, None);

    for (name, bytes, sessions_kept) in [
        ("format 3", &binary, true),
        ("format 2", &format_2, true),
        ("format 1", &format_1, false),
    ] {
        assert!(
            KvStateMachine::check_snapshot(&position, bytes).is_ok(),
            "{name}"
        );
        let mut other = KvStateMachine::new();
        other.restore(&position, bytes).await.expect(name);
        assert_eq!(other.reader().to_map(), table, "{name}");
        assert_eq!(
            other.reader().last_applied(),
            Some(position.last_log_id),
            "{name}"
        );
        if sessions_kept {
            assert_eq!(other.reader().session_table(), sessions, "{name}");
            // Written again in format 3: the same bytes as the original's.
            assert_eq!(other.snapshot().await.unwrap(), binary, "{name}");
        } else {
            assert_eq!(other.reader().sessions(), 0, "{name}");
        }
    }
}

#[tokio::test]
async fn equal_tables_built_in_different_orders_give_identical_snapshots() {
    let ks = keys(500);
    let mut reversed = ks.clone();
    reversed.reverse();
    let mut a = machine_with(&ks).await;
    let mut b = machine_with(&reversed).await;
    assert_eq!(a.reader().to_map(), b.reader().to_map());
    let (sa, sb) = (a.snapshot().await.unwrap(), b.snapshot().await.unwrap());
    assert_eq!(sa, sb);
    assert_eq!(sa, a.begin_snapshot().await.unwrap().await.unwrap());
}

#[tokio::test]
async fn the_background_view_of_a_large_table_does_not_see_later_applies() {
    let ks = keys(5_000);
    let mut sm = machine_with(&ks).await;
    let next = ks.len() as u64 + 3;
    let before = sm.reader().to_map();
    let build = sm.begin_snapshot().await.unwrap();
    // Change every key (every leaf of the tree) and add as many, before the build runs.
    let later: Vec<Entry<KvCommand>> = ks
        .iter()
        .flat_map(|k| {
            [
                KvCommand::put(k.clone(), "new"),
                KvCommand::put(format!("{k}+"), "x"),
            ]
        })
        .enumerate()
        .map(|(i, c)| Entry {
            log_id: LogId::new(1, next + i as u64),
            payload: EntryPayload::Command(c).into(),
        })
        .collect();
    sm.apply(&later).await.unwrap();
    let built = build.await.unwrap();
    let mut restored = KvStateMachine::new();
    restored.restore(&meta(1, next - 1), &built).await.unwrap();
    assert_eq!(restored.reader().to_map(), before);
    assert_eq!(sm.reader().len(), before.len() + ks.len());
}

/// Writes made while a snapshot's view is alive go to the table's overlay and are folded back a
/// batch at a time afterwards; the table must read, and snapshot, exactly as one that applied the
/// same entries with no snapshot in between, at every step of the fold.
#[tokio::test]
async fn a_table_folded_back_after_a_snapshot_snapshots_like_one_that_never_took_one() {
    let ks = keys(3_000);
    let mut sm = machine_with(&ks).await;
    let mut plain = machine_with(&ks).await;
    let mut next = ks.len() as u64 + 3;
    let mut batch = |commands: Vec<KvCommand>| -> Vec<Entry<KvCommand>> {
        commands
            .into_iter()
            .map(|c| {
                next += 1;
                Entry {
                    log_id: LogId::new(1, next - 1),
                    payload: EntryPayload::Command(c).into(),
                }
            })
            .collect()
    };
    let build = sm.begin_snapshot().await.unwrap();
    // Replace half the keys, delete a quarter, add new ones: all into the overlay.
    let during: Vec<KvCommand> = ks
        .iter()
        .enumerate()
        .map(|(i, k)| match i % 4 {
            0 | 1 => KvCommand::put(k.clone(), "during"),
            2 => KvCommand::delete(k.clone()),
            _ => KvCommand::put(format!("{k}-new"), "added"),
        })
        .collect();
    let during = batch(during);
    sm.apply(&during).await.unwrap();
    plain.apply(&during).await.unwrap();
    build.await.unwrap();
    // Small batches now: each folds back at least its own length of the overlay (64 at least),
    // so several are needed; the two tables must agree after every one.
    for round in 0..60 {
        let small = batch(vec![
            KvCommand::put(ks[round].clone(), format!("after {round}")),
            KvCommand::delete(ks[round + 100].clone()),
        ]);
        sm.apply(&small).await.unwrap();
        plain.apply(&small).await.unwrap();
        assert_eq!(
            sm.reader().to_map(),
            plain.reader().to_map(),
            "round {round}"
        );
        assert_eq!(sm.reader().len(), plain.reader().len(), "round {round}");
    }
    assert_eq!(
        sm.snapshot().await.unwrap(),
        plain.snapshot().await.unwrap()
    );
    assert_eq!(
        sm.begin_snapshot().await.unwrap().await.unwrap(),
        plain.snapshot().await.unwrap()
    );
}

/// A machine holding a small table, its format-3 snapshot and the position it covers.
async fn small() -> (KvStateMachine, Vec<u8>, SnapshotMeta) {
    let ks = keys(5);
    let mut sm = machine_with(&ks).await;
    let bytes = sm.snapshot().await.unwrap();
    (sm, bytes, meta(1, ks.len() as u64 + 2))
}

/// Asserts that both `check_snapshot` and `restore` refuse `bytes`, that `restore` leaves `sm`
/// unchanged, and that the error says `expected`.
async fn assert_refused(
    sm: &mut KvStateMachine,
    position: &SnapshotMeta,
    bytes: &[u8],
    expected: &str,
    case: &str,
) {
    let before: BTreeMap<String, String> = sm.reader().to_map();
    let last = sm.reader().last_applied();
    let checked = KvStateMachine::check_snapshot(position, bytes);
    let err = checked.expect_err(&format!("check_snapshot accepted {case}"));
    assert!(err.to_string().contains(expected), "{case}: {err}");
    let err = sm
        .restore(position, bytes)
        .await
        .expect_err(&format!("restore accepted {case}"));
    assert!(err.to_string().contains(expected), "{case}: {err}");
    assert_eq!(sm.reader().to_map(), before, "{case}");
    assert_eq!(sm.reader().last_applied(), last, "{case}");
}

#[tokio::test]
async fn a_damaged_binary_snapshot_is_refused_whatever_byte_is_flipped() {
    let (mut sm, bytes, position) = small().await;
    // The state to keep is another one than the snapshot's, so an accepted restore would show.
    sm.apply(&[Entry {
        log_id: LogId::new(1, position.last_log_id.index + 1),
        payload: EntryPayload::Command(KvCommand::put("extra", "1")).into(),
    }])
    .await
    .unwrap();
    for at in 0..bytes.len() {
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x20;
        let checked = KvStateMachine::check_snapshot(&position, &damaged);
        assert!(checked.is_err(), "check_snapshot accepted a flip at {at}");
        let before = sm.reader().to_map();
        assert!(
            sm.restore(&position, &damaged).await.is_err(),
            "restore accepted a flip at {at}"
        );
        assert_eq!(sm.reader().to_map(), before);
    }
    // A flip in the data (past the header) is reported as a checksum mismatch.
    let mut damaged = bytes.clone();
    damaged[HEADER_LEN + 6] ^= 1;
    assert_refused(
        &mut sm,
        &position,
        &damaged,
        "checksum mismatch",
        "data flip",
    )
    .await;
}

#[tokio::test]
async fn a_truncated_or_extended_binary_snapshot_is_refused() {
    let (mut sm, bytes, position) = small().await;
    for len in 0..bytes.len() {
        let cut = &bytes[..len];
        assert!(
            KvStateMachine::check_snapshot(&position, cut).is_err(),
            "check_snapshot accepted {len} of {} bytes",
            bytes.len()
        );
        assert!(
            sm.restore(&position, cut).await.is_err(),
            "restore of {len}"
        );
    }
    let mut longer = bytes.clone();
    longer.extend_from_slice(&[0; 4]);
    assert_refused(
        &mut sm,
        &position,
        &longer,
        "does not match",
        "4 more bytes",
    )
    .await;
}

#[tokio::test]
async fn absurd_lengths_and_counts_are_refused_before_allocating() {
    let (mut sm, bytes, position) = small().await;
    // Lengths that would overflow, or ask for more than the snapshot holds.
    for (field, value, expected) in [
        (RECORDS_LEN_AT, u64::MAX, "does not match"),
        (RECORDS_LEN_AT, u64::MAX - 60, "does not match"),
        (RECORDS_AT, u64::MAX, "cannot fit"),
        (RECORDS_AT, 1 << 40, "cannot fit"),
    ] {
        let mut bad = bytes.clone();
        set_u64(&mut bad, field, value);
        reseal(&mut bad);
        assert_refused(&mut sm, &position, &bad, expected, "absurd header").await;
    }
    // A record length of 4 GiB - 1 inside the records, checksums valid.
    let mut bad = bytes.clone();
    bad[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    reseal(&mut bad);
    let err = sm
        .restore(&position, &bad)
        .await
        .expect_err("absurd record");
    assert!(
        err.to_string()
            .contains("record 0: key of 4294967295 bytes"),
        "{err}"
    );
    // One record fewer than announced: the last one is left over.
    let mut bad = bytes.clone();
    let records = u64::from_le_bytes(bad[RECORDS_AT..RECORDS_AT + 8].try_into().unwrap());
    set_u64(&mut bad, RECORDS_AT, records - 1);
    reseal(&mut bad);
    let err = sm
        .restore(&position, &bad)
        .await
        .expect_err("record left over");
    assert!(err.to_string().contains("after the last of"), "{err}");
    // An unknown version of the binary format, and another position in the log.
    let mut bad = bytes.clone();
    bad[VERSION_AT] = 4;
    reseal(&mut bad);
    assert_refused(&mut sm, &position, &bad, "format 4", "version 4").await;
    let elsewhere = meta(1, position.last_log_id.index + 1);
    assert_refused(
        &mut sm,
        &elsewhere,
        &bytes,
        "covers the log up to",
        "position",
    )
    .await;
}

#[tokio::test]
async fn keys_out_of_order_or_repeated_are_refused() {
    // Two one-byte keys "a" and "b": swap them (values too) so "b" comes first.
    let mut sm = KvStateMachine::new();
    sm.apply(&entries([
        KvCommand::put("a", "1"),
        KvCommand::put("b", "2"),
    ]))
    .await
    .unwrap();
    let bytes = sm.snapshot().await.unwrap();
    let records = HEADER_LEN;
    // Each record: 4 + 1 (key) + 4 + 1 (value) = 10 bytes.
    assert_eq!(&bytes[records + 4..records + 5], b"a");
    let position = meta(1, 2);
    let mut swapped = bytes.clone();
    swapped[records + 4] = b'b';
    swapped[records + 14] = b'a';
    reseal(&mut swapped);
    let mut target = KvStateMachine::new();
    let err = target
        .restore(&position, &swapped)
        .await
        .expect_err("order");
    assert!(err.to_string().contains("strictly ascending"), "{err}");
    let mut repeated = bytes.clone();
    repeated[records + 14] = b'a';
    reseal(&mut repeated);
    let err = target
        .restore(&position, &repeated)
        .await
        .expect_err("repeat");
    assert!(err.to_string().contains("strictly ascending"), "{err}");
    assert!(target.reader().is_empty());
}
