//! The HTTP bridge the frontend uses: thin, it sends commands to the cell's writer through the
//! [`CommandClient`](crate::client::CommandClient) and reads the projections; it never writes state
//! itself and keeps none beyond in-process caches, so many bridges can run side by side.
//!
//! - [`args`]: [`BridgeArgs`], the flags of `orchestrator serve` that configure the bridge.
//! - [`server`]: [`router`], [`serve`] and [`run_bridge`]; [`HttpError`].
//! - [`state`]: [`AppState`], what every handler shares.
//! - [`tokens`] and [`auth`]: bearer tokens, principals, the authorization rules.
//! - [`extract`]: body, path, query and `Idempotency-Key` extractors that answer with problems.
//! - [`errors`]: [`ApiError`], problem+json, and the table mapping every code to a status.
//! - [`commands`]: sending a command and answering with read-your-writes.
//! - [`idempotency`] and [`rate_limit`]: keys in flight, per-principal token buckets.
//! - [`observe`]: the middleware counting every request by route, method and status.
//! - [`sessions`], [`history`], [`vms`], [`events`], [`usage`], [`ops`]: the routes; [`feeds`]: the caps on
//!   open event feeds.
//! - [`as_of`] and [`timeline`]: the cell as of a moment and sampled over a window, replayed from the
//!   log (the dashboard's time slider and charts).
//! - [`dashboard`]: the operators' web page, embedded in the binary.
//! - [`types`]: the request and response bodies; [`openapi`]: the OpenAPI 3.1 document built from
//!   them; [`metrics`]: `GET /metrics`.

pub mod args;
pub mod as_of;
pub mod auth;
pub mod commands;
pub mod dashboard;
pub mod errors;
pub mod events;
pub mod extract;
pub mod feeds;
pub mod history;
pub mod idempotency;
pub mod metrics;
pub mod observe;
pub mod openapi;
pub mod ops;
pub mod rate_limit;
pub mod server;
pub mod sessions;
pub mod state;
pub mod timeline;
pub mod tokens;
pub mod types;
pub mod usage;
pub mod vms;

pub use args::BridgeArgs;
pub use errors::{ApiError, Problem, Refusal};
pub use server::{router, run_bridge, serve, HttpError};
pub use state::AppState;
pub use tokens::{Principal, Role, Tokens};
