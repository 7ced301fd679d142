//! Caps on the open event feeds (`GET /v1/events`): per caller (token principal) and in all.
//!
//! A feed replaying the log from its start holds a consumer and a share of the feed connection's
//! buffers for as long as it runs, so one caller opening many could starve everyone's feeds. Each
//! feed takes a [`FeedSlot`] before it opens and gives it back when it ends, however it ends (the
//! client disconnects, the log fails, the bridge stops): the slot is dropped with the stream.
//! Over either cap the request is answered 429 `too_many_feeds` with `Retry-After`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use super::errors::ApiError;

/// The caps and the feeds open now. Cheap to clone.
#[derive(Debug, Clone)]
pub struct FeedLimits {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    per_caller: usize,
    total: usize,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_caller: HashMap<String, usize>,
}

/// One open feed; dropping it frees its place.
#[derive(Debug)]
pub struct FeedSlot {
    limits: Arc<Inner>,
    caller: String,
}

impl FeedLimits {
    /// At most `per_caller` feeds for one caller and `total` in all (each at least 1).
    pub fn new(per_caller: usize, total: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                per_caller: per_caller.max(1),
                total: total.max(1),
                open: Mutex::default(),
            }),
        }
    }

    /// A place for one more feed of `caller`, or `too_many_feeds`.
    pub fn acquire(&self, caller: &str) -> Result<FeedSlot, ApiError> {
        // A poisoned lock only means a panic mid-update of two counters: keep counting.
        let mut open = self
            .inner
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mine = open.by_caller.get(caller).copied().unwrap_or(0);
        if mine >= self.inner.per_caller {
            return Err(ApiError::TooManyFeeds {
                limit: self.inner.per_caller,
                scope: "caller",
            });
        }
        if open.total >= self.inner.total {
            return Err(ApiError::TooManyFeeds {
                limit: self.inner.total,
                scope: "bridge",
            });
        }
        open.total += 1;
        *open.by_caller.entry(caller.to_owned()).or_insert(0) += 1;
        Ok(FeedSlot {
            limits: self.inner.clone(),
            caller: caller.to_owned(),
        })
    }

    /// Feeds open now.
    pub fn open(&self) -> usize {
        self.inner
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .total
    }
}

impl Drop for FeedSlot {
    fn drop(&mut self) {
        let mut open = self
            .limits
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.by_caller.get_mut(&self.caller) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.by_caller.remove(&self.caller);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_caller_and_in_all_and_frees_on_drop() {
        let limits = FeedLimits::new(2, 3);
        let a1 = limits.acquire("a").unwrap();
        let _a2 = limits.acquire("a").unwrap();
        assert!(matches!(
            limits.acquire("a"),
            Err(ApiError::TooManyFeeds {
                scope: "caller",
                ..
            })
        ));
        let _b1 = limits.acquire("b").unwrap();
        assert!(matches!(
            limits.acquire("c"),
            Err(ApiError::TooManyFeeds {
                scope: "bridge",
                ..
            })
        ));
        assert_eq!(limits.open(), 3);
        drop(a1);
        assert_eq!(limits.open(), 2);
        let _a3 = limits.acquire("a").unwrap();
    }
}
