//! `whatif` on a workload recorded through the real writer on a real nats-server: with the recorded
//! policies and pool it reproduces every recorded placement exactly; with another policy or pool it
//! prints the comparison (table and JSON).

mod http_support;

use std::process::Command as Process;
use std::time::Duration;

use http_support::{Harness, Roles};
use orchestrator::analytics::whatif::{self, Pool, WhatIfReport};
use orchestrator::client::CommandClient;
use orchestrator::domain::command::{
    AssignVm, EndSession, RegisterVm, SessionRef, StartSession, VmRef,
};
use orchestrator::domain::Command;
use orchestrator::log::{Point, Reader};
use orchestrator::writer::Reply;
use orchestrator_events::{
    Actor, CellId, CommandId, EndReason, Event, Labels, PlacementPolicy, SessionId, VmId,
};

const BIN: &str = env!("CARGO_BIN_EXE_orchestrator");

struct Cell {
    h: Harness,
    client: CommandClient,
    n: u64,
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.parse().unwrap(), v.parse().unwrap()))
        .collect()
}

fn sid(s: &str) -> SessionId {
    s.parse().unwrap()
}

impl Cell {
    async fn send(&mut self, command: Command) -> Reply {
        self.n += 1;
        let id = CommandId::parse(format!("c-{}", self.n)).unwrap();
        self.client
            .send(&id, &Actor::operator("ops"), &command)
            .await
            .expect("the writer answers")
    }

    async fn ok(&mut self, command: Command) {
        let reply = self.send(command.clone()).await;
        assert!(
            matches!(reply, Reply::Accepted { .. }),
            "{command:?}: {reply:?}"
        );
    }

    async fn vm(&mut self, id: &str, capacity: u32, l: &[(&str, &str)]) {
        self.ok(Command::RegisterVm(RegisterVm {
            vm_id: id.parse().unwrap(),
            capacity,
            labels: labels(l),
            heartbeat_ms: None,
            endpoint: None,
        }))
        .await;
    }

    /// Starts a session and assigns it: by `policy`, or on the VM named by `vm`.
    async fn session(
        &mut self,
        s: &str,
        l: &[(&str, &str)],
        policy: PlacementPolicy,
        vm: Option<&str>,
        wait_ms: Option<u64>,
    ) {
        self.ok(Command::StartSession(StartSession {
            session_id: Some(sid(s)),
            user_id: format!("u-{s}").parse().unwrap(),
            game_id: "chess".parse().unwrap(),
            requirements: labels(l),
        }))
        .await;
        self.ok(Command::AssignVm(AssignVm {
            session_id: sid(s),
            vm_id: vm.map(|v| v.parse().unwrap()),
            policy: vm.is_none().then_some(policy),
            wait_ms,
        }))
        .await;
    }

    async fn end(&mut self, s: &str) {
        self.ok(Command::EndSession(EndSession {
            session_id: sid(s),
            reason: EndReason::User,
        }))
        .await;
    }

    fn reader_client(&self) -> async_nats::Client {
        self.h.client.clone()
    }

    async fn reader(&self) -> Reader {
        Reader::new(
            async_nats::jetstream::new(self.reader_client()),
            CellId::default_cell(),
        )
        .await
        .unwrap()
    }

    /// Waits until the writer's queue has placed `s` (the writer's tick: real time passes).
    async fn placed_from_queue(&self, s: &str) {
        let reader = self.reader().await;
        for _ in 0..100 {
            let mut events = orchestrator::log::Reader::session_history(&reader, &sid(s))
                .await
                .unwrap();
            use futures::StreamExt;
            while let Some(e) = events.next().await {
                if matches!(e.unwrap().envelope.event, Event::SessionAssigned { .. }) {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{s} was never placed from the queue");
    }
}

/// Records the workload (placements worked out by hand in the comments; packed takes the fullest
/// VM with room, spread the emptiest, ties to the lowest id).
async fn recorded() -> Cell {
    let h = Harness::start_with(
        http_support::args(),
        Roles {
            writer: true,
            projector: false,
        },
    )
    .await;
    let client = CommandClient::new(
        h.client.clone(),
        CellId::default_cell(),
        Duration::from_secs(5),
    );
    let mut c = Cell { h, client, n: 0 };
    use PlacementPolicy::{Packed, Spread};
    let eu = [("region", "eu")];
    c.vm("vm-a", 3, &eu).await;
    c.vm("vm-b", 3, &eu).await;
    c.vm("vm-c", 2, &[("region", "us")]).await;
    c.vm("vm-d", 4, &[("region", "eu"), ("gpu", "a10")]).await;
    c.session("s1", &eu, Packed, None, None).await; // a
    c.session("s2", &eu, Spread, None, None).await; // b
    c.session("s3", &[], Packed, None, None).await; // a
    c.session("s4", &[], Packed, Some("vm-c"), None).await; // c (named)
    c.session("s5", &[("gpu", "a10")], Spread, None, None).await; // d
    c.ok(Command::PauseSession(SessionRef {
        session_id: sid("s1"),
    }))
    .await;
    c.ok(Command::ResumeSession(SessionRef {
        session_id: sid("s1"),
    }))
    .await;
    c.end("s2").await;
    c.session("s6", &eu, Packed, None, None).await; // a (now full)
    c.session("s7", &[], Spread, None, None).await; // b
    c.session("s8", &[("region", "us")], Packed, None, None)
        .await; // c (now full)
    c.ok(Command::DrainVm(VmRef {
        vm_id: "vm-b".parse().unwrap(),
    }))
    .await;
    c.session("s9", &eu, Packed, None, None).await; // d
    c.end("s3").await;
    c.session("s10", &[], Spread, None, None).await; // a (2 = d's 2, lower id)
    c.session("s11", &[("region", "us")], Packed, None, Some(60_000))
        .await; // queued: c is full
    c.end("s8").await; // the writer's queue places s11 on c
    c.placed_from_queue("s11").await;
    c.session("s12", &eu, Spread, None, None).await; // d
    c.end("s4").await;
    c
}

fn vm(s: &str) -> VmId {
    s.parse().unwrap()
}

#[tokio::test]
async fn the_recorded_policies_and_pool_reproduce_every_placement() {
    let c = recorded().await;
    let reader = c.reader().await;
    let to = Point::Time(orchestrator::clock::now_ms() + 1_000);
    let outcome = whatif::whatif(&reader, Point::Seq(1), to, None, None, |_| {})
        .await
        .expect("a replay");
    let recorded = &outcome.recorded_placements;
    assert_eq!(recorded.len(), 12, "{recorded:?}");
    let by_hand = [
        ("s1", "vm-a"),
        ("s2", "vm-b"),
        ("s3", "vm-a"),
        ("s4", "vm-c"),
        ("s5", "vm-d"),
        ("s6", "vm-a"),
        ("s7", "vm-b"),
        ("s8", "vm-c"),
        ("s9", "vm-d"),
        ("s10", "vm-a"),
        ("s11", "vm-c"),
        ("s12", "vm-d"),
    ];
    for (s, v) in by_hand {
        assert_eq!(recorded[&sid(s)].0, vm(v), "{s}");
    }
    assert!(
        recorded[&sid("s11")].1.queued.is_some(),
        "placed from the queue"
    );
    // Every placement equal: the VM and its whole explanation (policy, candidates, eligible,
    // load before, capacity, reason, the wait in the queue).
    assert_eq!(&outcome.whatif_placements, recorded);
    let r = &outcome.report;
    assert_eq!((r.placements_compared, r.placements_differing), (12, 0));
    assert!(r.whatif.rejections.is_empty(), "{:?}", r.whatif.rejections);
    assert_eq!(r.recorded.peak_vms_used, 4);
    assert_eq!(r.whatif.peak_vms_used, 4);
    assert_eq!(r.recorded.queue, r.whatif.queue);
    assert_eq!((r.whatif.queue.count, r.whatif.queue.placed), (1, 1));
    assert!((r.recorded.mean_load - r.whatif.mean_load).abs() < 1e-9);
}

fn whatif_cli(url: &str, args: &[&str]) -> String {
    let out = Process::new(BIN)
        .arg("whatif")
        .args(args)
        .args(["--nats-url", url])
        .env("RUST_LOG", "warn")
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test]
async fn another_policy_and_another_pool_print_the_comparison() {
    let c = recorded().await;
    let url = c.h.server.url();
    let to = orchestrator::cli::format::time(orchestrator::clock::now_ms() + 1_000);
    // All packed: s2 goes to a, s7 to c, so s8 finds us full and is refused (`no_capacity`); vm-b
    // is never used. s11 waits until s4 ends.
    let json = whatif_cli(
        &url,
        &[
            "--policy", "packed", "--from", "1", "--to", &to, "--format", "json",
        ],
    );
    let r: WhatIfReport = serde_json::from_str(&json).expect("one JSON document");
    assert_eq!(r.policy, "packed");
    assert_eq!(r.pool, "recorded");
    assert_eq!((r.recorded.peak_vms_used, r.whatif.peak_vms_used), (4, 3));
    assert!(r.recorded.rejections.is_empty());
    assert_eq!(r.whatif.rejections.get("no_capacity"), Some(&1));
    assert_eq!(r.whatif.rejections.len(), 1, "{:?}", r.whatif.rejections);
    assert_eq!((r.placements_compared, r.placements_differing), (12, 3));
    assert_eq!((r.whatif.placements, r.recorded.placements), (11, 12));
    assert_eq!((r.whatif.queue.count, r.whatif.queue.placed), (1, 1));
    assert!(
        r.whatif.queue.max_ms > r.recorded.queue.max_ms,
        "s11 waits longer"
    );

    let table = whatif_cli(&url, &["--policy", "packed", "--from", "1", "--to", &to]);
    let line = |name: &str| {
        table
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name:?} in\n{table}"))
            .split_whitespace()
            .rev()
            .take(2)
            .collect::<Vec<_>>()
    };
    println!("{table}");
    assert!(table.starts_with("what-if from "), "{table}");
    assert_eq!(line("peak VMs used"), ["3", "4"], "{table}");
    assert_eq!(line("  no_capacity"), ["1", "-"], "{table}");
    assert_eq!(line("placements"), ["11", "12"], "{table}");
    assert!(table.contains("placed on another VM (or in one run only): 3 of 12 sessions placed"));

    // Another pool: one large eu VM and one us VM. Sessions naming vm-c find it (`vm-c` is in
    // the pool); those requiring a10 find nothing.
    let dir = tempfile::tempdir().unwrap();
    let pool = dir.path().join("pool.toml");
    std::fs::write(
        &pool,
        "[[vms]]\nvm_id = \"big\"\ncapacity = 16\nlabels = { region = \"eu\" }\n\n\
         [[vms]]\nvm_id = \"vm-c\"\ncapacity = 8\nlabels = { region = \"us\" }\n",
    )
    .unwrap();
    assert!(Pool::parse(&std::fs::read_to_string(&pool).unwrap()).is_ok());
    let json = whatif_cli(
        &url,
        &[
            "--vms",
            pool.to_str().unwrap(),
            "--from",
            "1",
            "--to",
            &to,
            "--format",
            "json",
        ],
    );
    let r: WhatIfReport = serde_json::from_str(&json).expect("one JSON document");
    assert_eq!(r.pool, "2 VMs, 24 slots");
    assert_eq!(r.whatif.peak_vms_used, 2);
    assert_eq!(
        r.whatif.rejections.get("no_capacity"),
        Some(&1),
        "s5 needs a10"
    );
    assert_eq!(r.whatif.queue.count, 0, "s11 finds room at once");
}
