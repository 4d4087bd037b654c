use std::time::Duration;

use async_trait::async_trait;
use raft_core::*;
use raft_net_mock::Router;
use raft_storage_mem::MemStorage;

#[derive(Default)]
struct Sum(u64);

#[async_trait]
impl StateMachine for Sum {
    type Command = u64;
    type Response = u64;
    async fn last_applied(&mut self) -> Result<Option<LogId>, StateMachineError> {
        Ok(None)
    }
    async fn apply(&mut self, entries: &[Entry<u64>]) -> Result<Vec<u64>, StateMachineError> {
        Ok(entries
            .iter()
            .map(|e| {
                if let EntryPayload::Command(n) = e.payload {
                    self.0 += n;
                }
                self.0
            })
            .collect())
    }
    async fn snapshot(&mut self) -> Result<Vec<u8>, StateMachineError> {
        Ok(vec![])
    }
    async fn restore(&mut self, _: &SnapshotMeta, _: &[u8]) -> Result<(), StateMachineError> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn three_nodes_elect_and_commit() {
    let router = Router::<Sum>::new(7);
    let mut nodes = vec![];
    for id in 1..=3 {
        let raft = Raft::start(id, Config::default(), MemStorage::new(), router.network(id), Sum::default())
            .await
            .unwrap();
        router.register(id, raft.clone());
        nodes.push(raft);
    }
    for n in &nodes {
        n.initialize([1, 2, 3]).await.unwrap();
    }
    let leader = nodes[0].wait_for_leader(Duration::from_secs(1)).await.unwrap();
    let l = &nodes[(leader - 1) as usize];
    let mut total = 0;
    for i in 1..=100 {
        total += i;
        assert_eq!(l.client_write(i).await.unwrap().data, total);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for n in &nodes {
        let m = n.metrics().borrow().clone();
        println!("{m:?}");
        assert_eq!(m.last_applied, l.metrics().borrow().last_applied);
    }
}
