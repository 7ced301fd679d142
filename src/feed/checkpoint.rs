//! The feed's local checkpoint: a small file, `<data-dir>/feed/<cell>.checkpoint`, saved at most
//! once a second and on a clean stop.
//!
//! The feed stream itself is the checkpoint that counts: its last message names the last log
//! sequence republished, and it is stored in the same act as the publish, so nothing can fall
//! between them. The file only matters when the stream has nothing left to read (retention removed
//! every message of an idle feed) or its last messages were skipped entries of the log (foreign
//! messages, quarantine records), and it names the feed stream it belongs to (by creation time), so
//! a feed stream deleted and created again never inherits it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::stream::FeedEnd;
use super::FeedError;

/// What the file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The feed stream's creation time, in nanoseconds since the Unix epoch, as a string.
    pub feed_stream_created: String,
    /// Every log message up to this sequence was republished or skipped.
    pub seq: u64,
}

/// The checkpoint file of one cell's feed.
#[derive(Debug, Clone)]
pub struct CheckpointFile {
    path: Option<PathBuf>,
}

impl CheckpointFile {
    /// The file under `dir` for `cell`; `None`: no file (the feed stream alone).
    pub fn new(dir: Option<&Path>, cell: &orchestrator_events::CellId) -> Self {
        Self {
            path: dir.map(|d| d.join(format!("{cell}.checkpoint"))),
        }
    }

    /// The saved checkpoint, if there is a readable one.
    pub fn load(&self) -> Option<Checkpoint> {
        let bytes = std::fs::read(self.path.as_ref()?).ok()?;
        match serde_json::from_slice(&bytes) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(error = %e, "feed: the checkpoint file is unreadable; ignored");
                None
            }
        }
    }

    /// Saves `checkpoint`: written to a temporary file, then renamed over the old one.
    pub fn save(&self, checkpoint: &Checkpoint) -> Result<(), FeedError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let io = |source| FeedError::Checkpoint {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = path.with_extension("checkpoint.tmp");
        // A struct of a string and an integer always encodes.
        let body = serde_json::to_vec(checkpoint).expect("a checkpoint always encodes");
        std::fs::write(&tmp, body).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}

/// The last log sequence the feed is done with, from the end of the feed stream and the saved
/// checkpoint of that same stream (`created`).
pub fn start_position(
    end: FeedEnd,
    saved: Option<Checkpoint>,
    created: &str,
) -> Result<u64, FeedError> {
    let saved = saved
        .filter(|c| c.feed_stream_created == created)
        .map(|c| c.seq);
    match end {
        // Only skipped log messages (no feed message) can have moved the file past an empty stream.
        FeedEnd::Empty => Ok(saved.unwrap_or(0)),
        // The file is ahead only over skipped messages after the last feed message.
        FeedEnd::Republished(seq) => Ok(seq.max(saved.unwrap_or(0))),
        FeedEnd::Expired => saved.ok_or(FeedError::PositionLost),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seq: u64, created: &str) -> Option<Checkpoint> {
        Some(Checkpoint {
            feed_stream_created: created.into(),
            seq,
        })
    }

    #[test]
    fn the_stream_wins_and_the_file_fills_in() {
        assert_eq!(start_position(FeedEnd::Empty, None, "1").unwrap(), 0);
        assert_eq!(
            start_position(FeedEnd::Republished(9), None, "1").unwrap(),
            9
        );
        // A crash after a publish, before the file was saved: the stream knows better.
        let behind = start_position(FeedEnd::Republished(9), at(5, "1"), "1");
        assert_eq!(behind.unwrap(), 9);
        // Skipped messages after the last feed message.
        let ahead = start_position(FeedEnd::Republished(9), at(11, "1"), "1");
        assert_eq!(ahead.unwrap(), 11);
        assert_eq!(
            start_position(FeedEnd::Expired, at(11, "1"), "1").unwrap(),
            11
        );
    }

    #[test]
    fn a_file_of_another_feed_stream_is_ignored() {
        let other = start_position(FeedEnd::Republished(9), at(50, "2"), "1");
        assert_eq!(other.unwrap(), 9);
        assert_eq!(start_position(FeedEnd::Empty, at(50, "2"), "1").unwrap(), 0);
        assert!(matches!(
            start_position(FeedEnd::Expired, at(50, "2"), "1"),
            Err(FeedError::PositionLost)
        ));
    }

    #[test]
    fn saves_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let file = CheckpointFile::new(
            Some(dir.path()),
            &orchestrator_events::CellId::default_cell(),
        );
        assert_eq!(file.load(), None);
        let c = at(7, "123").unwrap();
        file.save(&c).unwrap();
        assert_eq!(file.load(), Some(c));
        assert!(dir.path().join("default.checkpoint").is_file());
    }
}
