//! Kill loops under load, with an independent ledger of acknowledged commands: the orchestrator
//! process killed with SIGKILL and restarted, cycle after cycle; then the nats-server. After the
//! last cycle: every acknowledged command is in the log exactly once at the sequence it was told,
//! no VM was ever over capacity (replayed), retries get their first answer, `verify` is clean.
//!
//! A short loop runs in CI (5 cycles each). A long one by setting `FAULT_LOOP_CYCLES`:
//! `FAULT_LOOP_CYCLES=100 cargo nextest run --test faults_loop --no-capture`
//! (docs/faults.md records the figures).

mod common;
mod faults_support;

use faults_support::*;

/// Cycles of each loop: `FAULT_LOOP_CYCLES`, else 5.
fn cycles() -> usize {
    std::env::var("FAULT_LOOP_CYCLES")
        .ok()
        .map(|n| n.parse().expect("FAULT_LOOP_CYCLES is a number of cycles"))
        .unwrap_or(5)
}

/// How many acceptances to wait for before the kill of cycle `cycle`: from 20 to 200, varied by a
/// fixed sequence so that kills land at different points of the sessions' life.
fn before_kill(cycle: usize) -> usize {
    20 + (cycle * 7919) % 181
}

/// What the loop measured.
struct Figures {
    kills: usize,
    gaps: Vec<Duration>,
}

impl Figures {
    fn print(&self, what: &str, ledger: &Ledger, replayed: &Replayed) {
        let mut gaps = self.gaps.clone();
        gaps.sort();
        let median = gaps.get(gaps.len() / 2).copied().unwrap_or_default();
        let max = gaps.last().copied().unwrap_or_default();
        println!(
            "{what} killed {} times on nats-server {}: {} commands acknowledged, 0 lost, 0 applied \
             twice, {} refused, {} retried sends, {} events; serving again after a kill: median \
             {median:?}, max {max:?}",
            self.kills,
            common::server_version(),
            ledger.accepted.len(),
            ledger.rejected.len(),
            ledger.retries,
            replayed.last,
        );
    }
}

/// Registers two VMs with 8 slots in all for the loops' 12 workers.
async fn setup(orch: &mut Orchestrator, commands: &CommandClient) {
    for vm in ["vm-a", "vm-b"] {
        let reply = orch
            .wait_serving(commands, &format!("register-{vm}"), &register(vm, 4))
            .await;
        assert!(accepted(&reply).is_some(), "{reply:?}");
    }
}

/// A cell under load on a lone server: the orchestrator serving, two VMs registered, the workers
/// running with command ids prefixed by `prefix`.
struct Rig {
    client: async_nats::Client,
    commands: CommandClient,
    data_dir: std::path::PathBuf,
    orch: Orchestrator,
    load: Load,
    figures: Figures,
}

impl Rig {
    async fn start(server: &TestServer, prefix: &str) -> Rig {
        init_tracing();
        let client = server.client().await;
        let commands = CommandClient::new(client.clone(), cell(), Duration::from_secs(2));
        let data_dir = server.dir().join("orchestrator");
        let mut orch = Orchestrator::spawn(&server.url(), &data_dir, 0);
        setup(&mut orch, &commands).await;
        let load = Load::start(&commands, 12, prefix);
        let figures = Figures {
            kills: 0,
            gaps: Vec::new(),
        };
        Rig {
            client,
            commands,
            data_dir,
            orch,
            load,
            figures,
        }
    }

    /// Waits for the acceptances before cycle `cycle`'s kill; returns when the kill may come.
    async fn before_kill(&self, cycle: usize) {
        self.load
            .wait_accepted(before_kill(cycle), Duration::from_secs(60))
            .await;
    }

    /// Counts a kill at `at` and waits until a command is accepted again.
    async fn after_kill(&mut self, at: Instant) {
        self.figures.kills += 1;
        self.load.wait_accepted(1, Duration::from_secs(60)).await;
        self.figures.gaps.push(at.elapsed());
    }

    /// Stops the load, checks the ledger against the log and prints the figures.
    async fn finish(mut self, what: &str) {
        self.load.wait_accepted(50, Duration::from_secs(60)).await;
        let ledger = self.load.finish().await;
        self.orch.assert_running();
        let replayed = check_ledger(&self.client, &self.commands, &ledger).await;
        self.figures.print(what, &ledger, &replayed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orchestrator_kill_loop() {
    let server = TestServer::start_default().await;
    let mut rig = Rig::start(&server, "o").await;
    for cycle in 0..cycles() {
        rig.before_kill(cycle).await;
        rig.orch.assert_running();
        rig.orch.child.start_kill().unwrap();
        rig.orch.child.wait().await.unwrap();
        let at = Instant::now();
        rig.orch = Orchestrator::spawn(&server.url(), &rig.data_dir, cycle + 1);
        rig.after_kill(at).await;
    }
    rig.finish("the orchestrator").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_server_kill_loop() {
    let mut server = TestServer::start_default().await;
    let mut rig = Rig::start(&server, "n").await;
    for cycle in 0..cycles() {
        rig.before_kill(cycle).await;
        server.kill().unwrap();
        let at = Instant::now();
        server.restart().await.unwrap();
        rig.after_kill(at).await;
        rig.orch.assert_running();
    }
    rig.finish("nats-server").await;
}
