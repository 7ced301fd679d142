//! The benchmark's report: what it measured per durability mode, the targets it checks, and the one
//! table it prints (Markdown, so that it pastes into the docs as it is).

use std::fmt::Write as _;

use serde::Serialize;

use super::heartbeats::HeartbeatFigures;
use super::http::{Http2Figures, HttpFigures};
use super::memory::MemoryFigures;
use super::orchestrator::{LevelFigures, OrchestratorFigures};
use super::raw::RawFigures;
use super::rebuild::{ColdStartFigures, RebuildFigures};
use super::stats::thousands;

/// Everything one run measured. Serialised as the JSON output.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Where it ran.
    pub machine: Machine,
    /// The NATS server it started.
    pub server: ServerInfo,
    /// How it ran.
    pub settings: Settings,
    /// What the reader must know to read the figures.
    pub notes: Vec<String>,
    /// The writer's memory per live session (the same in every mode: no NATS involved).
    pub memory: Option<MemoryFigures>,
    /// One entry per durability mode asked for.
    pub modes: Vec<ModeReport>,
    /// The heartbeat phase (its own server, default fsync), unless skipped.
    pub heartbeats: Option<HeartbeatFigures>,
    /// The failover phase (its own server, default fsync), unless skipped.
    pub failover: Option<super::failover::FailoverFigures>,
    /// Each target, met or missed.
    pub targets: Vec<TargetResult>,
}

/// The machine.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// CPUs this process may use.
    pub cpus: usize,
    /// The CPU's model name.
    pub cpu_model: String,
    /// Physical memory, in bytes.
    pub memory_bytes: u64,
}

/// The server binary.
#[derive(Debug, Clone, Serialize)]
pub struct ServerInfo {
    /// Its path.
    pub bin: String,
    /// Its version.
    pub version: String,
}

/// The run's settings.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// A smoke run.
    pub quick: bool,
    /// Events in the rebuild and cold-start stream.
    pub events: u64,
    /// Each timed phase's length, in seconds.
    pub phase_seconds: f64,
    /// The most commands per level of concurrency (`None`: as many as the phase's time allows).
    pub max_commands_per_level: Option<u64>,
    /// The levels of concurrency.
    pub clients: Vec<usize>,
    /// VMs registered.
    pub vms: u32,
    /// Appends in flight at most, for the writer and the raw pipelined publisher.
    pub in_flight: usize,
}

/// One durability mode.
#[derive(Debug, Clone, Serialize)]
pub struct ModeReport {
    /// `default` or `always`.
    pub mode: String,
    /// Why it did not run, when it did not.
    pub not_supported: Option<String>,
    /// What it measured, when it ran.
    pub figures: Option<ModeFigures>,
}

/// The figures of one mode.
#[derive(Debug, Clone, Serialize)]
pub struct ModeFigures {
    /// The raw NATS limits, measured before the orchestrator phases: the ratios and targets use these.
    pub raw: RawFigures,
    /// The same limits measured again after the orchestrator phases (NATS and HTTP), to show how
    /// much the machine's capacity drifted during the run.
    pub raw_after: RawFigures,
    /// The orchestrator over NATS.
    pub orchestrator: OrchestratorFigures,
    /// The orchestrator through the HTTP bridge.
    pub http: HttpFigures,
    /// The projection rebuild.
    pub rebuild: RebuildFigures,
    /// The writer's cold start.
    pub cold_start: ColdStartFigures,
    /// A standby's warm takeover of the same log.
    pub warm_takeover: super::failover::WarmTakeoverFigures,
}

/// A target and whether this run met it.
#[derive(Debug, Clone, Serialize)]
pub struct TargetResult {
    /// The mode it was checked in (`None`: mode-independent).
    pub mode: Option<String>,
    /// What is required.
    pub target: String,
    /// What was measured.
    pub measured: String,
    /// Whether it was met.
    pub pass: bool,
}

fn level(figures: &ModeFigures, clients: usize) -> Option<&LevelFigures> {
    figures
        .orchestrator
        .levels
        .iter()
        .find(|l| l.clients == clients)
}

fn busiest(figures: &ModeFigures) -> Option<&LevelFigures> {
    figures.orchestrator.levels.iter().max_by_key(|l| l.clients)
}

/// The HTTP/2 pass's share of the NATS commands, shown beside the HTTP/1.1 target.
fn http2_aside(h2: &Http2Figures, nats: &LevelFigures) -> String {
    format!(
        "; HTTP/2 over {} connections: {:.0}%",
        h2.connections,
        ratio(h2.writes.per_second, nats.per_second) * 100.0
    )
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        f64::NAN
    }
}

/// Checks every target against the figures.
pub fn evaluate(
    memory: Option<&MemoryFigures>,
    modes: &[ModeReport],
    heartbeats: Option<&HeartbeatFigures>,
) -> Vec<TargetResult> {
    let mut out = Vec::new();
    for m in modes {
        let Some(f) = &m.figures else { continue };
        let mode = Some(m.mode.clone());
        let raw_rate = f.raw.pipelined.per_second;
        if let Some(l) = level(f, 256).or_else(|| busiest(f)) {
            let r = ratio(l.per_second, raw_rate);
            out.push(TargetResult {
                mode: mode.clone(),
                target: format!(
                    "throughput at {} clients >= 50% of raw pipelined",
                    l.clients
                ),
                measured: format!(
                    "{:.0}% ({}/s of {}/s)",
                    r * 100.0,
                    thousands(l.per_second),
                    thousands(raw_rate)
                ),
                pass: r >= 0.5,
            });
            if m.mode == "always" {
                out.push(TargetResult {
                    mode: mode.clone(),
                    target: format!(
                        "with sync always, throughput at {} clients >= raw per-message rate",
                        l.clients
                    ),
                    measured: format!("{}/s vs {}/s", thousands(l.per_second), thousands(raw_rate)),
                    pass: l.per_second >= raw_rate,
                });
                let r = ratio(l.per_second, raw_rate);
                out.push(TargetResult {
                    mode: mode.clone(),
                    target: format!(
                        "with sync always, throughput at {} clients >= 10x raw per-message rate",
                        l.clients
                    ),
                    measured: format!(
                        "{r:.1}x ({}/s vs {}/s{})",
                        thousands(l.per_second),
                        thousands(raw_rate),
                        // The ceiling NATS itself gives: the raw atomic batches of the same run.
                        f.raw.batches.as_ref().map_or(String::new(), |b| format!(
                            "; raw atomic batches of {} reach {:.1}x",
                            f.raw.batch_size,
                            ratio(b.per_second, raw_rate)
                        ))
                    ),
                    pass: r >= 10.0,
                });
                if let Some(b) = &f.raw.batches {
                    let r = ratio(l.per_second, b.per_second);
                    out.push(TargetResult {
                        mode: mode.clone(),
                        target: format!(
                            "with sync always, throughput at {} clients >= 50% of raw atomic batches of {}",
                            l.clients, f.raw.batch_size
                        ),
                        measured: format!(
                            "{:.0}% ({}/s of {}/s)",
                            r * 100.0,
                            thousands(l.per_second),
                            thousands(b.per_second)
                        ),
                        pass: r >= 0.5,
                    });
                }
            }
        }
        let http_busiest = f.http.writes.iter().max_by_key(|h| h.clients);
        if let Some((h, n)) = http_busiest.and_then(|h| Some((h, level(f, h.clients)?))) {
            let r = ratio(h.per_second, n.per_second);
            out.push(TargetResult {
                mode: mode.clone(),
                target: format!(
                    "HTTP writes at {} clients >= 60% of the same commands over NATS",
                    h.clients
                ),
                measured: format!(
                    "{:.0}% ({}/s of {}/s){}",
                    r * 100.0,
                    thousands(h.per_second),
                    thousands(n.per_second),
                    http2_aside(&f.http.http2, n)
                ),
                pass: r >= 0.6,
            });
        }
        if let Some(l) = level(f, 1) {
            let r = ratio(l.latency.p99_us, f.raw.sequential.p99_us);
            out.push(TargetResult {
                mode: mode.clone(),
                target: "p99 at 1 client <= 3x raw sequential p99".into(),
                measured: format!(
                    "{r:.1}x ({:.3} ms vs {:.3} ms)",
                    l.latency.p99_us / 1e3,
                    f.raw.sequential.p99_us / 1e3
                ),
                pass: r <= 3.0,
            });
        }
        let r = ratio(f.rebuild.rebuild.per_second, f.rebuild.replay.per_second);
        out.push(TargetResult {
            mode: mode.clone(),
            target: "projection rebuild >= 50% of raw replay".into(),
            measured: format!(
                "{:.0}% ({}/s of {}/s)",
                r * 100.0,
                thousands(f.rebuild.rebuild.per_second),
                thousands(f.rebuild.replay.per_second)
            ),
            pass: r >= 0.5,
        });
        let c = &f.cold_start;
        let scale = if c.events == 1_000_000 {
            String::new()
        } else {
            format!(
                " (run with {} events, target is for 1,000,000)",
                thousands(c.events as f64)
            )
        };
        out.push(TargetResult {
            mode,
            target: "writer cold start from a snapshot, 1M events <= 2 s".into(),
            measured: format!("{:.2} s{scale}", c.with_snapshot_seconds),
            pass: c.with_snapshot_seconds <= 2.0,
        });
    }
    if let Some(mem) = memory {
        out.push(TargetResult {
            mode: None,
            target: "writer memory <= 1 KiB per live session".into(),
            measured: format!("{:.0} B/session", mem.bytes_per_session),
            pass: mem.bytes_per_session <= 1024.0,
        });
    }
    if let Some(h) = heartbeats {
        let l = &h.loss;
        out.push(TargetResult {
            mode: None,
            target: format!(
                "a lost VM among {} heartbeating ones is declared within deadline + tick",
                thousands(f64::from(h.vms))
            ),
            measured: format!(
                "{} after its last heartbeat (deadline {}, bound {})",
                seconds_ms(l.detection_ms),
                seconds_ms(l.deadline_ms as i64),
                seconds_ms(l.bound_ms as i64)
            ),
            pass: l.detection_ms >= l.deadline_ms as i64 && l.detection_ms <= l.bound_ms as i64,
        });
        out.push(TargetResult {
            mode: None,
            target: "its session ends with vm_lost by system; no other VM is lost".into(),
            measured: format!(
                "{}; {} other VMs lost",
                l.session_end.as_deref().unwrap_or("no end seen"),
                l.other_vms_lost
            ),
            pass: l.session_ended_vm_lost && l.other_vms_lost == 0,
        });
    }
    out
}

/// Milliseconds as seconds with two decimals, e.g. `15.06 s`.
fn seconds_ms(ms: i64) -> String {
    format!("{:.2} s", ms as f64 / 1000.0)
}

fn row3(text: &mut String, cells: [&str; 3]) {
    let _ = writeln!(text, "| {} |", cells.join(" | "));
}

/// The heartbeat phase's own small table: each figure next to its bound.
fn render_heartbeats(t: &mut String, h: &HeartbeatFigures) {
    let l = &h.loss;
    let interval = seconds_ms(h.interval_ms as i64);
    let _ = writeln!(
        t,
        "heartbeats: {} VMs, one every {interval} each ({}/s), lost after {} missed intervals, \
         deadlines checked every {} ms; writer in a child process, its own nats-server",
        thousands(f64::from(h.vms)),
        thousands(h.nominal_per_second()),
        h.misses,
        h.tick_ms
    );
    let _ = writeln!(t);
    row3(t, ["figure", "measured", "bound"]);
    row3(t, ["---", "---:", "---:"]);
    row3(
        t,
        [
            "lost VM declared (`VmLost.occurred_at`), after its last heartbeat was sent",
            &seconds_ms(l.detection_ms),
            &format!(
                "deadline {} ({} x {interval}); {} with the tick",
                seconds_ms(l.deadline_ms as i64),
                h.misses,
                seconds_ms(l.bound_ms as i64)
            ),
        ],
    );
    row3(
        t,
        [
            "`VmLost` received by a subscriber, after the last heartbeat was sent",
            &seconds_ms(l.observed_ms),
            "-",
        ],
    );
    row3(
        t,
        [
            "last heartbeat heard by the writer, after it was sent",
            &l.last_heard_at
                .map_or("never".into(), |at| format!("{} ms", at - l.last_sent_at)),
            "-",
        ],
    );
    row3(
        t,
        [
            "end of the session on the lost VM",
            l.session_end.as_deref().unwrap_or("none seen"),
            "vm_lost by system",
        ],
    );
    row3(
        t,
        [
            "other VMs declared lost (all kept sending)",
            &l.other_vms_lost.to_string(),
            "0",
        ],
    );
    row3(
        t,
        [
            "heartbeats published during the CPU window",
            &format!(
                "{}/s{}",
                thousands(h.heartbeating.heartbeats_per_second),
                if h.publish_errors > 0 {
                    format!(" ({} not sent)", h.publish_errors)
                } else {
                    String::new()
                }
            ),
            &format!("{}/s (VMs / interval)", thousands(h.nominal_per_second())),
        ],
    );
    let cpu = |c: &super::heartbeats::CpuFigures| {
        format!(
            "{:.2}% ±{:.2} of a core (nats-server {})",
            c.writer_percent,
            c.resolution_percent,
            c.server_percent.map_or("-".into(), |p| format!("{p:.2}%"))
        )
    };
    row3(
        t,
        [
            &format!(
                "writer CPU, empty cell, no heartbeats ({:.1} s)",
                h.idle.seconds
            ),
            &cpu(&h.idle),
            "-",
        ],
    );
    row3(
        t,
        [
            &format!(
                "writer CPU, {} VMs heartbeating ({:.1} s)",
                thousands(f64::from(h.vms)),
                h.heartbeating.seconds
            ),
            &cpu(&h.heartbeating),
            &format!("idle {:.2}%", h.idle.writer_percent),
        ],
    );
    row3(
        t,
        [
            &format!(
                "of which the deadline scan over {} VMs every tick (in-process: {:.0} µs a scan)",
                thousands(f64::from(h.vms)),
                h.scan_us
            ),
            &format!("{:.2}% of a core", h.scan_percent),
            "-",
        ],
    );
    row3(
        t,
        [
            "writer CPU added per 1,000 heartbeats/s (heartbeating - idle)",
            &format!("{:.2}% of a core", h.writer_percent_per_1000_per_second),
            "-",
        ],
    );
    row3(
        t,
        [
            "the same less the scan (receiving them), per 1,000 heartbeats/s",
            &format!("{:.2}% of a core", h.receive_percent_per_1000_per_second),
            "-",
        ],
    );
}

fn row(text: &mut String, cells: [&str; 5]) {
    let _ = writeln!(text, "| {} |", cells.join(" | "));
}

fn clients(n: usize) -> String {
    format!("{n} client{}", if n == 1 { "" } else { "s" })
}

/// ` (N rejected/failed)` when a level had refusals or errors, else nothing.
fn faults(l: &LevelFigures) -> String {
    let n: u64 = l.rejected.values().sum::<u64>() + l.errors;
    if n > 0 {
        format!(" ({n} rejected/failed)")
    } else {
        String::new()
    }
}

fn rate(x: f64, unit: &str) -> String {
    format!("{} {unit}", thousands(x))
}

impl BenchReport {
    /// The report as printed: a short header, the table, the targets.
    pub fn render(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "nats-server {} ({}); {} CPUs ({}); {:.1} GiB RAM",
            self.server.version,
            self.server.bin,
            self.machine.cpus,
            self.machine.cpu_model,
            self.machine.memory_bytes as f64 / (1u64 << 30) as f64
        );
        let s = &self.settings;
        let _ = writeln!(
            t,
            "{} events; {:.1} s per phase{}; clients {:?}; {} VMs; {} appends in flight{}",
            thousands(s.events as f64),
            s.phase_seconds,
            s.max_commands_per_level
                .map(|n| format!(" (at most {} commands per level)", thousands(n as f64)))
                .unwrap_or_default(),
            s.clients,
            s.vms,
            s.in_flight,
            if s.quick { "; QUICK smoke run" } else { "" }
        );
        for note in &self.notes {
            let _ = writeln!(t, "note: {note}");
        }
        let _ = writeln!(t);
        row(
            &mut t,
            [
                "mode",
                "figure",
                "orchestrator",
                "raw NATS limit (same run)",
                "ratio",
            ],
        );
        row(&mut t, ["---", "---", "---:", "---:", "---:"]);
        for m in &self.modes {
            let mode = m.mode.as_str();
            let Some(f) = &m.figures else {
                let why = m.not_supported.as_deref().unwrap_or("not run");
                row(&mut t, [mode, "all figures", why, "-", "-"]);
                continue;
            };
            let raw_rate = f.raw.pipelined.per_second;
            let raw_rate_text = format!(
                "{} pipelined ({} in flight; {} after)",
                rate(raw_rate, "msg/s"),
                f.raw.in_flight,
                thousands(f.raw_after.pipelined.per_second)
            );
            let raw_latency_text = format!(
                "{} sequential ({} after)",
                f.raw.sequential.show(),
                f.raw_after.sequential.show()
            );
            for l in &f.orchestrator.levels {
                row(
                    &mut t,
                    [
                        mode,
                        &format!(
                            "commands/s, {} client{}",
                            l.clients,
                            if l.clients == 1 { "" } else { "s" }
                        ),
                        &rate(l.per_second, "cmd/s"),
                        &raw_rate_text,
                        &format!("{:.3}", ratio(l.per_second, raw_rate)),
                    ],
                );
            }
            if let Some(c) = &f.orchestrator.coalesced {
                row(
                    &mut t,
                    [
                        mode,
                        &format!(
                            "commands/s, {}, coalesced into batch requests ({} in flight)",
                            clients(c.clients),
                            super::orchestrator::COALESCED_IN_FLIGHT
                        ),
                        &rate(c.per_second, "cmd/s"),
                        &raw_rate_text,
                        &format!("{:.3}", ratio(c.per_second, raw_rate)),
                    ],
                );
                row(
                    &mut t,
                    [
                        mode,
                        &format!("latency p50/p99/p999, {}, coalesced", clients(c.clients)),
                        &c.latency.show(),
                        &raw_latency_text,
                        &format!(
                            "p99 {:.1}x",
                            ratio(c.latency.p99_us, f.raw.sequential.p99_us)
                        ),
                    ],
                );
            }
            if let (Some(b), Some(l)) = (&f.raw.batches, busiest(f)) {
                row(
                    &mut t,
                    [
                        mode,
                        &format!(
                            "commands/s, {}, against group commit's ceiling",
                            clients(l.clients)
                        ),
                        &rate(l.per_second, "cmd/s"),
                        &format!(
                            "{} atomic batches of {}, one at a time",
                            rate(b.per_second, "msg/s"),
                            f.raw.batch_size
                        ),
                        &format!("{:.3}", ratio(l.per_second, b.per_second)),
                    ],
                );
            }
            for l in &f.orchestrator.levels {
                let faults: u64 = l.rejected.values().sum::<u64>() + l.errors;
                let faults = if faults > 0 {
                    format!(" ({faults} rejected/failed)")
                } else {
                    String::new()
                };
                row(
                    &mut t,
                    [
                        mode,
                        &format!(
                            "latency p50/p99/p999, {} client{}",
                            l.clients,
                            if l.clients == 1 { "" } else { "s" }
                        ),
                        &format!("{}{faults}", l.latency.show()),
                        &raw_latency_text,
                        &format!(
                            "p99 {:.1}x",
                            ratio(l.latency.p99_us, f.raw.sequential.p99_us)
                        ),
                    ],
                );
            }
            for l in &f.http.writes {
                let over_nats = level(f, l.clients);
                row(
                    &mut t,
                    [
                        mode,
                        &format!("HTTP writes/s, {}", clients(l.clients)),
                        &rate(l.per_second, "req/s"),
                        &over_nats.map_or("-".into(), |n| {
                            format!("{} over NATS", rate(n.per_second, "cmd/s"))
                        }),
                        &over_nats.map_or("-".into(), |n| {
                            format!("{:.3}", ratio(l.per_second, n.per_second))
                        }),
                    ],
                );
                row(
                    &mut t,
                    [
                        mode,
                        &format!("HTTP write latency p50/p99/p999, {}", clients(l.clients)),
                        &format!("{}{}", l.latency.show(), faults(l)),
                        &over_nats
                            .map_or("-".into(), |n| format!("{} over NATS", n.latency.show())),
                        &over_nats.map_or("-".into(), |n| {
                            format!("p99 {:.1}x", ratio(l.latency.p99_us, n.latency.p99_us))
                        }),
                    ],
                );
            }
            for l in &f.http.reads {
                row(
                    &mut t,
                    [
                        mode,
                        &format!("HTTP reads/s and p50/p99/p999, {}", clients(l.clients)),
                        &format!(
                            "{}, {}{}",
                            rate(l.per_second, "req/s"),
                            l.latency.show(),
                            faults(l)
                        ),
                        "-",
                        "-",
                    ],
                );
            }
            let h2 = &f.http.http2;
            let over_nats = level(f, h2.writes.clients);
            let shared = format!(
                "{} over {} connections",
                clients(h2.writes.clients),
                h2.connections
            );
            row(
                &mut t,
                [
                    mode,
                    &format!("HTTP/2 writes/s, {shared}"),
                    &format!(
                        "{}{}",
                        rate(h2.writes.per_second, "req/s"),
                        faults(&h2.writes)
                    ),
                    &over_nats.map_or("-".into(), |n| {
                        format!("{} over NATS", rate(n.per_second, "cmd/s"))
                    }),
                    &over_nats.map_or("-".into(), |n| {
                        format!("{:.3}", ratio(h2.writes.per_second, n.per_second))
                    }),
                ],
            );
            let h1_reads = f.http.reads.iter().find(|l| l.clients == h2.reads.clients);
            row(
                &mut t,
                [
                    mode,
                    &format!("HTTP/2 reads/s and p50/p99/p999, {shared}"),
                    &format!(
                        "{}, {}{}",
                        rate(h2.reads.per_second, "req/s"),
                        h2.reads.latency.show(),
                        faults(&h2.reads)
                    ),
                    &h1_reads.map_or("-".into(), |l| {
                        format!("{} over HTTP/1.1", rate(l.per_second, "req/s"))
                    }),
                    &h1_reads.map_or("-".into(), |l| {
                        format!("{:.2}x", ratio(h2.reads.per_second, l.per_second))
                    }),
                ],
            );
            let rb = &f.rebuild;
            row(
                &mut t,
                [
                    mode,
                    &format!("projection rebuild, {} events", thousands(rb.events as f64)),
                    &rate(rb.rebuild.per_second, "ev/s"),
                    &format!("{} replay", rate(rb.replay.per_second, "ev/s")),
                    &format!("{:.3}", ratio(rb.rebuild.per_second, rb.replay.per_second)),
                ],
            );
            row(
                &mut t,
                [
                    mode,
                    &format!("raw fill of that stream ({})", rb.fill_method),
                    "-",
                    &rate(rb.fill.per_second, "msg/s"),
                    "-",
                ],
            );
            let c = &f.cold_start;
            let replay_s = rb.replay.seconds;
            row(
                &mut t,
                [
                    mode,
                    &format!(
                        "writer cold start, no snapshot, {} events",
                        thousands(c.events as f64)
                    ),
                    &format!("{:.2} s", c.without_snapshot_seconds),
                    &format!("{replay_s:.2} s replay"),
                    &format!("{:.1}x", ratio(c.without_snapshot_seconds, replay_s)),
                ],
            );
            row(
                &mut t,
                [
                    mode,
                    &format!(
                        "writer cold start, snapshot ({:.1} MiB), {} events",
                        c.snapshot_bytes as f64 / (1u64 << 20) as f64,
                        thousands(c.events as f64)
                    ),
                    &format!("{:.2} s", c.with_snapshot_seconds),
                    "-",
                    "-",
                ],
            );
            super::failover::render_warm(&mut t, mode, &f.warm_takeover);
            if let Some(mem) = &self.memory {
                let figures = [
                    (
                        mem.sessions,
                        "live sessions",
                        mem.bytes_per_session,
                        "session",
                    ),
                    (
                        mem.ended_sessions,
                        "ended sessions",
                        mem.bytes_per_ended_session,
                        "ended session",
                    ),
                    (
                        mem.remembered_ids,
                        "remembered command ids",
                        mem.bytes_per_remembered_id,
                        "command id",
                    ),
                ];
                for (n, what, bytes, per) in figures {
                    row(
                        &mut t,
                        [
                            mode,
                            &format!("writer memory, {} {what}", thousands(n as f64)),
                            &format!("{bytes:.0} B/{per}"),
                            "-",
                            "-",
                        ],
                    );
                }
            }
        }
        if let Some(h) = &self.heartbeats {
            let _ = writeln!(t);
            render_heartbeats(&mut t, h);
        }
        if let Some(f) = &self.failover {
            let _ = writeln!(t);
            super::failover::render(&mut t, f);
        }
        let _ = writeln!(t);
        let _ = writeln!(t, "targets:");
        for r in &self.targets {
            let _ = writeln!(
                t,
                "  [{}] {}{}: {}",
                if r.pass { "PASS" } else { "MISS" },
                r.mode
                    .as_deref()
                    .map(|m| format!("{m}: "))
                    .unwrap_or_default(),
                r.target,
                r.measured
            );
        }
        t
    }
}
