//! The event-sourced session orchestrator of a cloud-gaming platform.
//!
//! Every lifecycle command becomes an event on one NATS JetStream stream per cell; every piece of state
//! is a projection of that log. The map:
//!
//! - [`domain`]: the pure decision: `decide(&State, &Command) -> Result<Event, Rejection>` and
//!   `evolve(&mut State, seq, &Envelope)`, placement, idempotency, the user quota. No I/O.
//! - [`log`]: JetStream: stream setup and its conflicts, server version, appends with an expected
//!   sequence, reads, the writer lease in a KV bucket.
//! - [`nats_server`]: starts and supervises a local `nats-server` (the embedded default, and tests).
//! - [`writer`]: the cell's single writer: receives commands, decides, appends, replies.
//! - [`projections`]: sled read models rebuilt from the log, with read-your-writes.
//! - [`feed`]: the JSON feed: every event republished once, in order, as a CloudEvent in a stream
//!   of its own, for consumers in any language.
//! - [`client`]: sends commands to a cell's writer over NATS (the CLI, the bridge, the benchmark).
//! - [`clock`]: the wall clock, read at the edges only.
//! - [`analytics`]: analyses of the recorded log, pure folds above the domain: usage for billing,
//!   what-if replays of the recorded demand against another placement policy or pool.
//! - [`admin`]: `verify`: the live projections and writer state against a replay of the log.
//! - [`schemas`]: JSON Schemas of events, command requests and rejections, generated from the types.
//! - [`http`]: the HTTP bridge the frontend uses.
//! - [`metrics`]: one Prometheus registry per process, every role's metrics, their exposition.
//! - [`cli`]: the `orchestrator` binary's subcommands.
//! - [`serve`]: `orchestrator serve`: the roles in one process, with an embedded, supervised NATS.
//!
//! The benchmark is a user of this library: the workspace member `bench/` (`orchestrator-bench`,
//! which `orchestrator bench` runs).

pub mod admin;
pub mod analytics;
pub mod cli;
pub mod client;
pub mod clock;
pub mod domain;
pub mod feed;
pub mod http;
pub mod log;
pub mod metrics;
pub mod nats_server;
pub mod projections;
pub mod schemas;
pub mod serve;
pub mod writer;
