//! The feed stream `ORCH_<CELL>_FEED`: its configuration, its creation, and what its last message
//! says about how far the feed got.
//!
//! The feed stream is derived from the log: its retention comes from the flags (`--feed-max-age`,
//! `--feed-max-bytes`, `--replicas`) and is applied to an existing stream at every start, since
//! changing how long a derived stream keeps its messages loses nothing that cannot be rebuilt. Any
//! other difference (subjects, storage...) is refused like the log's ([`LogError::StreamConflict`]).
//!
//! Its description names the log it was built from (the log stream's name and creation time): a
//! feed stream of another log (the log stream was deleted and created again) is refused until an
//! operator deletes the feed stream, which the feed role then rebuilds from the start of the log.

use async_nats::jetstream::{
    self,
    stream::{Config, DirectGetErrorKind, DiscardPolicy, RetentionPolicy, StorageType, Stream},
};
use orchestrator_events::subject::{all_feed, feed_stream_name};

use super::message::sequence_of;
use super::{FeedConfig, FeedError};
use crate::log::stream::ensure_stream_config;
use crate::log::{LogError, LogIdentity, DEFAULT_DUPLICATE_WINDOW};

/// The largest feed message: the JSON of the largest event, with room to spare.
pub const FEED_MAX_MSG_SIZE: i32 = 1024 * 1024;

/// How many messages back from the end of the feed stream a restart looks for the last feed
/// message, past messages someone else published onto the feed subjects.
const LOOK_BACK: u64 = 1_000;

/// The description that ties a feed stream to the log it republishes.
pub fn description(log: &LogIdentity) -> String {
    format!(
        "CloudEvents feed of stream {} created at {} ns",
        log.stream, log.created
    )
}

/// The JetStream configuration of the feed stream.
pub fn stream_config(config: &FeedConfig, log: &LogIdentity) -> Config {
    // The duplicate window cannot be longer than the stream keeps its messages.
    let duplicate_window = match config.max_age {
        age if age.is_zero() => DEFAULT_DUPLICATE_WINDOW,
        age => DEFAULT_DUPLICATE_WINDOW.min(age),
    };
    Config {
        name: feed_stream_name(&config.cell),
        description: Some(description(log)),
        subjects: vec![all_feed(&config.cell)],
        storage: StorageType::File,
        retention: RetentionPolicy::Limits,
        discard: DiscardPolicy::Old,
        num_replicas: config.replicas,
        deny_delete: true,
        deny_purge: true,
        allow_rollup: false,
        allow_direct: true,
        duplicate_window,
        max_message_size: FEED_MAX_MSG_SIZE,
        max_age: config.max_age,
        max_messages: -1,
        max_bytes: config
            .max_bytes
            .map_or(-1, |b| i64::try_from(b).unwrap_or(i64::MAX)),
        max_messages_per_subject: -1,
        ..Default::default()
    }
}

/// Creates the feed stream, or brings an existing one's retention in line with `config` and checks
/// the rest. Refuses a feed stream of another log.
pub async fn ensure_feed_stream(
    js: &jetstream::Context,
    config: &FeedConfig,
    log: &LogIdentity,
) -> Result<Stream, FeedError> {
    let wanted = stream_config(config, log);
    let mut stream = ensure_stream_retention(js, &wanted).await?;
    let info = info(&mut stream).await?;
    if info.config.description != wanted.description {
        if info.state.last_sequence != 0 {
            return Err(FeedError::OtherLog {
                stream: wanted.name.clone(),
                found: info.config.description.clone().unwrap_or_default(),
                wanted: description(log),
            });
        }
        // An empty feed stream made for another log: it holds nothing to keep.
        let mut updated = info.config.clone();
        updated.description = wanted.description.clone();
        update(js, updated).await?;
    }
    Ok(stream)
}

/// Applies the wanted retention to an existing stream, then creates or checks it as the log's is.
async fn ensure_stream_retention(
    js: &jetstream::Context,
    wanted: &Config,
) -> Result<Stream, FeedError> {
    if let Ok(mut stream) = js.get_stream(&wanted.name).await {
        let existing = info(&mut stream).await?.config;
        let mut updated = existing.clone();
        updated.max_age = wanted.max_age;
        updated.max_bytes = wanted.max_bytes;
        updated.num_replicas = wanted.num_replicas;
        updated.duplicate_window = wanted.duplicate_window;
        if retention_differs(&existing, &updated) {
            tracing::info!(
                stream = %wanted.name,
                max_age = ?wanted.max_age,
                max_bytes = wanted.max_bytes,
                replicas = wanted.num_replicas,
                "feed stream: applying the configured retention"
            );
            update(js, updated).await?;
        }
    }
    Ok(ensure_stream_config(js, wanted.clone()).await?)
}

async fn info(stream: &mut Stream) -> Result<jetstream::stream::Info, FeedError> {
    Ok(stream
        .info()
        .await
        .map_err(|e| LogError::Jetstream(e.to_string()))?
        .clone())
}

fn retention_differs(existing: &Config, updated: &Config) -> bool {
    existing.max_age != updated.max_age
        || existing.max_bytes.max(-1) != updated.max_bytes.max(-1)
        || existing.num_replicas.max(1) != updated.num_replicas.max(1)
        || existing.duplicate_window != updated.duplicate_window
}

async fn update(js: &jetstream::Context, config: Config) -> Result<(), FeedError> {
    js.update_stream(config)
        .await
        .map_err(|e| LogError::Jetstream(format!("updating the feed stream: {e}")))?;
    Ok(())
}

/// What the end of the feed stream says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedEnd {
    /// Nothing was ever stored: the feed starts at the beginning of the log.
    Empty,
    /// The last feed message republished the log's event at this sequence.
    Republished(u64),
    /// Messages were stored, but none is left to read (retention removed them all).
    Expired,
}

/// Reads the feed stream's last feed message (looking back past messages that are not feed
/// messages) to learn the last log sequence republished.
pub async fn feed_end(stream: &mut Stream) -> Result<FeedEnd, FeedError> {
    let info = info(stream).await?;
    let (first, last, messages) = (
        info.state.first_sequence,
        info.state.last_sequence,
        info.state.messages,
    );
    if last == 0 {
        return Ok(FeedEnd::Empty);
    }
    if messages == 0 {
        return Ok(FeedEnd::Expired);
    }
    let lowest = first.max(last.saturating_sub(LOOK_BACK)).max(1);
    for seq in (lowest..=last).rev() {
        match stream.direct_get(seq).await {
            Ok(msg) => {
                if let Some(sequence) = sequence_of(&msg.payload) {
                    return Ok(FeedEnd::Republished(sequence));
                }
                tracing::warn!(seq, subject = %msg.subject, "feed stream: a message that is not a feed message");
            }
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => continue,
            Err(e) => return Err(LogError::Jetstream(e.to_string()).into()),
        }
    }
    Err(FeedError::NoFeedMessage { last })
}
