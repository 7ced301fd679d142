//! Stream setup: the cell's event stream, created once and checked on every start.
//!
//! [`ensure_stream`] creates the stream when it is missing. When it exists, it compares only the
//! settings this build sets (the server fills in many others, which must not count as conflicts)
//! and refuses to start on the first difference with [`LogError::StreamConflict`]. It never updates
//! an existing stream: changing a log's durability or limits is an operator's decision.

use std::time::Duration;

use async_nats::jetstream::{
    self,
    context::{CreateStreamErrorKind, GetStreamErrorKind},
    stream::{Config, DiscardPolicy, RetentionPolicy, StorageType, Stream},
    ErrorCode,
};
use orchestrator_events::{subject, CellId, MAX_EVENT_BYTES};
use serde::Serialize;

use crate::log::error::unavailable_or_other;
use crate::log::{LogError, ServerVersion};

/// How long the server remembers `Nats-Msg-Id`s to drop duplicate appends.
pub const DEFAULT_DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// Room for the headers on top of the largest event ([`MAX_EVENT_BYTES`]).
pub const HEADER_HEADROOM: usize = 4 * 1024;

/// The stream's largest accepted message (payload and headers), in bytes.
pub const DEFAULT_MAX_MSG_SIZE: i32 = (MAX_EVENT_BYTES + HEADER_HEADROOM) as i32;

/// How a cell's event stream is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// The cell whose events the stream holds.
    pub cell: CellId,
    /// Copies of each message in a cluster: 1 on a laptop, 3 in production.
    pub replicas: usize,
    /// How long appends are deduplicated by command id.
    pub duplicate_window: Duration,
    /// The largest message the stream accepts, payload and headers, in bytes.
    pub max_msg_size: i32,
}

impl LogConfig {
    /// The defaults for a cell: one replica, a 2-minute duplicate window, 64 KiB events.
    pub fn new(cell: CellId) -> Self {
        Self {
            cell,
            replicas: 1,
            duplicate_window: DEFAULT_DUPLICATE_WINDOW,
            max_msg_size: DEFAULT_MAX_MSG_SIZE,
        }
    }

    /// The stream's name, e.g. `ORCH_DEFAULT`.
    pub fn stream_name(&self) -> String {
        subject::stream_name(&self.cell)
    }

    /// The JetStream configuration this build creates the stream with.
    ///
    /// File storage, deny delete and purge, no age or count limits (the log is kept forever), and
    /// direct get so that one message can be fetched by sequence cheaply.
    pub fn stream_config(&self) -> Config {
        Config {
            name: self.stream_name(),
            description: Some(format!("session orchestrator events of cell {}", self.cell)),
            subjects: vec![subject::all_events(&self.cell)],
            storage: StorageType::File,
            retention: RetentionPolicy::Limits,
            discard: DiscardPolicy::Old,
            num_replicas: self.replicas,
            deny_delete: true,
            deny_purge: true,
            allow_rollup: false,
            allow_direct: true,
            duplicate_window: self.duplicate_window,
            max_message_size: self.max_msg_size,
            max_age: Duration::ZERO,
            max_messages: -1,
            max_bytes: -1,
            max_messages_per_subject: -1,
            ..Default::default()
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self::new(CellId::default_cell())
    }
}

/// Creates the cell's event stream, or checks that the existing one has the wanted settings.
///
/// On servers with atomic batches (2.12+) the stream allows them (`allow_atomic`), an existing one
/// included: the writer's group commit sends its appends that way.
///
/// Idempotent: calling it again (from this or another process) with the same config succeeds.
pub async fn ensure_stream(
    js: &jetstream::Context,
    config: &LogConfig,
) -> Result<Stream, LogError> {
    let features = ServerVersion::of(&js.client())?.features();
    let mut wanted = config.stream_config();
    wanted.allow_atomic_publish = features.atomic_batch;
    let stream = ensure_stream_config(js, wanted.clone()).await?;
    if !features.atomic_batch || stream.cached_info().config.allow_atomic_publish {
        return Ok(stream);
    }
    // A stream created before the server supported atomic batches (or by an older build): allow
    // them, so that the writer can group its appends. Nothing else changes.
    let mut updated = stream.cached_info().config.clone();
    updated.allow_atomic_publish = true;
    js.update_stream(updated)
        .await
        .map_err(|e| LogError::Jetstream(format!("allowing atomic batches: {e}")))?;
    tracing::info!(stream = %wanted.name, "stream now allows atomic batches");
    ensure_stream_config(js, wanted).await
}

/// How long a stream's creation is retried while a cluster that just formed (or lost a node) cannot
/// place its replicas yet: JetStream answers "no suitable peers" or "temporarily unavailable" until
/// its metadata knows enough online peers.
const CLUSTER_SETTLE: std::time::Duration = std::time::Duration::from_secs(30);

/// Creates a stream with `wanted`, or checks an existing one against the settings `wanted` sets.
/// Retries for up to [`CLUSTER_SETTLE`] while a cluster cannot place the replicas yet.
pub async fn ensure_stream_config(
    js: &jetstream::Context,
    wanted: Config,
) -> Result<Stream, LogError> {
    let deadline = tokio::time::Instant::now() + CLUSTER_SETTLE;
    loop {
        match create_or_check(js, &wanted).await {
            Err(Settling(reason)) if tokio::time::Instant::now() < deadline => {
                tracing::info!(stream = %wanted.name, %reason, "the cluster cannot place the stream yet: retrying");
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            Err(Settling(reason)) => return Err(LogError::Unavailable(reason)),
            Ok(outcome) => return outcome,
        }
    }
}

/// A cluster that cannot place a stream's replicas yet, and why.
struct Settling(String);

/// One attempt of [`ensure_stream_config`].
async fn create_or_check(
    js: &jetstream::Context,
    wanted: &Config,
) -> Result<Result<Stream, LogError>, Settling> {
    match existing_stream(js, &wanted.name).await {
        Ok(Some(stream)) => return Ok(check(stream, wanted)),
        Ok(None) => {}
        Err(e) => return Ok(Err(e)),
    }
    let err = match js.create_stream(wanted.clone()).await {
        Ok(stream) => return Ok(Ok(stream)),
        Err(err) => err,
    };
    let code = match err.kind() {
        CreateStreamErrorKind::JetStream(api) => Some(api.error_code()),
        _ => None,
    };
    if matches!(
        code,
        Some(ErrorCode::CLUSTER_NO_PEERS | ErrorCode::CLUSTER_NOT_AVAILABLE)
    ) {
        return Err(Settling(err.to_string()));
    }
    Ok(refused(js, wanted, err, code).await)
}

/// What a refused creation means: another process created the stream first (check it), its subjects
/// are another stream's, or the server is unavailable or refused it.
async fn refused(
    js: &jetstream::Context,
    wanted: &Config,
    err: async_nats::jetstream::context::CreateStreamError,
    code: Option<ErrorCode>,
) -> Result<Stream, LogError> {
    match code {
        // Another process created it first: check what it created.
        Some(ErrorCode::STREAM_NAME_EXIST) => match existing_stream(js, &wanted.name).await? {
            Some(stream) => check(stream, wanted),
            None => Err(LogError::Jetstream(err.to_string())),
        },
        Some(ErrorCode::STREAM_SUBJECT_OVERLAP) => Err(LogError::StreamConflict {
            stream: wanted.name.clone(),
            setting: "subjects".into(),
            existing: "captured by another stream".into(),
            wanted: wanted.subjects.join(","),
        }),
        _ => Err(unavailable_or_other(
            matches!(
                err.kind(),
                CreateStreamErrorKind::TimedOut | CreateStreamErrorKind::JetStreamUnavailable
            ),
            err,
        )),
    }
}

/// The stream named `name`, or `None` when the server has no such stream.
async fn existing_stream(js: &jetstream::Context, name: &str) -> Result<Option<Stream>, LogError> {
    match js.get_stream(name).await {
        Ok(stream) => Ok(Some(stream)),
        Err(err) => match err.kind() {
            GetStreamErrorKind::JetStream(api)
                if api.error_code() == ErrorCode::STREAM_NOT_FOUND =>
            {
                Ok(None)
            }
            GetStreamErrorKind::Request => Err(LogError::Unavailable(err.to_string())),
            _ => Err(LogError::Jetstream(err.to_string())),
        },
    }
}

fn check(stream: Stream, wanted: &Config) -> Result<Stream, LogError> {
    match first_conflict(&stream.cached_info().config, wanted) {
        None => Ok(stream),
        Some(c) => Err(LogError::StreamConflict {
            stream: wanted.name.clone(),
            setting: c.setting.into(),
            existing: c.existing,
            wanted: c.wanted,
        }),
    }
}

/// One setting that differs between an existing stream and the wanted config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Conflict {
    pub setting: &'static str,
    pub existing: String,
    pub wanted: String,
}

/// The first setting `wanted` sets that `existing` has otherwise.
///
/// Limits (`max_*`) treat 0 and -1 alike ("unlimited": the server stores -1 for 0), subjects are
/// compared as sets, and a zero duplicate window in `wanted` means "whatever the server chose".
pub(crate) fn first_conflict(existing: &Config, wanted: &Config) -> Option<Conflict> {
    fn differ<T: Serialize + PartialEq>(setting: &'static str, e: &T, w: &T) -> Option<Conflict> {
        (e != w).then(|| Conflict {
            setting,
            existing: show(e),
            wanted: show(w),
        })
    }
    fn limit(x: i64) -> i64 {
        if x <= 0 {
            -1
        } else {
            x
        }
    }
    let mut existing_subjects = existing.subjects.clone();
    existing_subjects.sort();
    let mut wanted_subjects = wanted.subjects.clone();
    wanted_subjects.sort();
    let ns = |d: Duration| d.as_nanos();
    let dup_window = if wanted.duplicate_window.is_zero() {
        None
    } else {
        differ(
            "duplicate_window",
            &ns(existing.duplicate_window),
            &ns(wanted.duplicate_window),
        )
    };
    differ("subjects", &existing_subjects, &wanted_subjects)
        .or_else(|| differ("storage", &existing.storage, &wanted.storage))
        .or_else(|| differ("retention", &existing.retention, &wanted.retention))
        .or_else(|| {
            differ(
                "num_replicas",
                &existing.num_replicas.max(1),
                &wanted.num_replicas.max(1),
            )
        })
        .or_else(|| differ("discard", &existing.discard, &wanted.discard))
        .or_else(|| differ("deny_delete", &existing.deny_delete, &wanted.deny_delete))
        .or_else(|| differ("deny_purge", &existing.deny_purge, &wanted.deny_purge))
        .or_else(|| {
            differ(
                "allow_rollup_hdrs",
                &existing.allow_rollup,
                &wanted.allow_rollup,
            )
        })
        .or_else(|| differ("allow_direct", &existing.allow_direct, &wanted.allow_direct))
        .or_else(|| differ("sealed", &existing.sealed, &wanted.sealed))
        .or_else(|| differ("no_ack", &existing.no_ack, &wanted.no_ack))
        .or(dup_window)
        .or_else(|| {
            differ(
                "max_msg_size",
                &limit(existing.max_message_size.into()),
                &limit(wanted.max_message_size.into()),
            )
        })
        .or_else(|| differ("max_age", &ns(existing.max_age), &ns(wanted.max_age)))
        .or_else(|| {
            differ(
                "max_msgs",
                &limit(existing.max_messages),
                &limit(wanted.max_messages),
            )
        })
        .or_else(|| {
            differ(
                "max_bytes",
                &limit(existing.max_bytes),
                &limit(wanted.max_bytes),
            )
        })
        .or_else(|| {
            differ(
                "max_msgs_per_subject",
                &limit(existing.max_messages_per_subject),
                &limit(wanted.max_messages_per_subject),
            )
        })
        .or_else(|| {
            differ(
                "mirror",
                &existing.mirror.is_some(),
                &wanted.mirror.is_some(),
            )
        })
        .or_else(|| {
            let sources = |c: &Config| c.sources.as_ref().is_some_and(|s| !s.is_empty());
            differ("sources", &sources(existing), &sources(wanted))
        })
}

/// A setting's value as in the stream's JSON config, without quotes around strings.
fn show<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(e) => format!("<{e}>"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a server answers: the wanted config with its defaults filled in.
    fn as_server_fills(wanted: &Config) -> Config {
        let mut c = wanted.clone();
        c.max_consumers = -1;
        c.max_messages = -1;
        c.max_bytes = -1;
        c.max_messages_per_subject = -1;
        c.description = None;
        c
    }

    #[test]
    fn server_defaults_are_not_conflicts() {
        let wanted = LogConfig::default().stream_config();
        assert_eq!(first_conflict(&as_server_fills(&wanted), &wanted), None);
        let mut zeroes = as_server_fills(&wanted);
        zeroes.max_messages = 0;
        assert_eq!(first_conflict(&zeroes, &wanted), None);
    }

    #[test]
    fn names_the_first_conflict() {
        let wanted = LogConfig::default().stream_config();
        let mut existing = as_server_fills(&wanted);
        existing.storage = StorageType::Memory;
        existing.deny_purge = false;
        let c = first_conflict(&existing, &wanted).unwrap();
        assert_eq!(
            (c.setting, c.existing.as_str(), c.wanted.as_str()),
            ("storage", "memory", "file")
        );
        let mut existing = as_server_fills(&wanted);
        existing.subjects = vec!["orch.default.evt.session.>".into()];
        assert_eq!(
            first_conflict(&existing, &wanted).unwrap().setting,
            "subjects"
        );
        let mut existing = as_server_fills(&wanted);
        existing.duplicate_window = Duration::from_secs(60);
        let c = first_conflict(&existing, &wanted).unwrap();
        assert_eq!(c.setting, "duplicate_window");
        assert_eq!(c.existing, "60000000000");
    }
}
