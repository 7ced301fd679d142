//! `Idempotency-Key`s in flight in this bridge: a second request with a key whose first request is
//! still being handled gets 409 instead of racing it. Keys are scoped per principal. The writer does
//! the rest: a finished key is a command id it has seen, and a retry gets the first result.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

/// The keys being handled right now, by principal.
#[derive(Debug, Clone, Default)]
pub struct InFlight {
    keys: Arc<Mutex<HashSet<(String, String)>>>,
}

/// Holds a key while its request is handled; releases it when dropped (also when the client goes
/// away and the handler is cancelled).
#[derive(Debug)]
pub struct InFlightGuard {
    keys: Arc<Mutex<HashSet<(String, String)>>>,
    entry: Option<(String, String)>,
}

impl InFlight {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks `key` of `principal` in flight, or `None` when it already is.
    pub fn begin(&self, principal: &str, key: &str) -> Option<InFlightGuard> {
        let entry = (principal.to_owned(), key.to_owned());
        // A poisoned lock only means another request panicked while inserting or removing: the set
        // itself is intact.
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        if !keys.insert(entry.clone()) {
            return None;
        }
        Some(InFlightGuard {
            keys: self.keys.clone(),
            entry: Some(entry),
        })
    }

    /// How many keys are in flight.
    pub fn len(&self) -> usize {
        self.keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no key is in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if let Some(entry) = self.entry.take() {
            self.keys
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&entry);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_at_a_time_per_principal() {
        let f = InFlight::new();
        let g = f.begin("player:a", "k").unwrap();
        assert!(f.begin("player:a", "k").is_none());
        assert!(f.begin("player:b", "k").is_some(), "scoped per principal");
        drop(g);
        assert!(f.begin("player:a", "k").is_some());
        assert!(f.is_empty());
    }
}
