//! The HTTP bridge phase: writes and reads through the bridge, next to the same commands over NATS.
//!
//! ============================================================================================
//! PLACE FOR THE HTTP BRIDGE BENCHMARK. The bridge (`src/http/`, exposing `router`/`run_bridge`)
//! was not built when this benchmark was written, so this phase reports that. Once it exists:
//! start `run_bridge` (or serve `router` on a loopback listener) against the mode's server and the
//! in-process writer of [`super::orchestrator`], then drive the same lifecycle mix with 1, 16 and
//! 256 concurrent HTTP clients for writes (POST start/assign/pause/resume/end with an
//! `Idempotency-Key`) and reads (GET a session, with and without a minimum sequence), and fill
//! [`HttpFigures::Measured`] so that the table prints each next to its NATS figure.
//! ============================================================================================

use serde::Serialize;

use super::orchestrator::LevelFigures;

/// What the HTTP phase measured, if it could run.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum HttpFigures {
    /// The bridge is not part of this build.
    NotBuilt {
        /// What the table prints.
        note: String,
    },
    /// Writes and reads through the bridge, per level of concurrency.
    Measured {
        /// Lifecycle commands through the bridge.
        writes: Vec<LevelFigures>,
        /// Session reads through the bridge.
        reads: Vec<LevelFigures>,
    },
}

/// The HTTP phase of this build.
pub fn figures() -> HttpFigures {
    HttpFigures::NotBuilt {
        note: "HTTP: bridge not built in this run".into(),
    }
}
