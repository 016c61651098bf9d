//! One async lock per key (a volume id, a CSI name): calls on the same resource wait for each
//! other, so a retry never races the call it retries, and calls on different resources run
//! together. An entry lives only while someone holds or waits for its lock.

use std::{
    collections::HashMap,
    hash::Hash,
    sync::{Arc, Mutex as SyncMutex},
};

use tokio::sync::{Mutex, OwnedMutexGuard};

#[derive(Debug)]
pub struct KeyedLocks<K> {
    locks: SyncMutex<HashMap<K, Arc<Mutex<()>>>>,
}

impl<K> Default for KeyedLocks<K> {
    fn default() -> Self {
        Self { locks: SyncMutex::new(HashMap::new()) }
    }
}

impl<K: Eq + Hash + Clone> KeyedLocks<K> {
    /// Waits for the lock of `key`; it is released when the guard is dropped.
    pub async fn lock(&self, key: K) -> KeyedGuard<'_, K> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            locks.entry(key.clone()).or_default().clone()
        };
        KeyedGuard { guard: Some(lock.lock_owned().await), locks: self, key }
    }
}

pub struct KeyedGuard<'a, K: Eq + Hash + Clone> {
    guard: Option<OwnedMutexGuard<()>>,
    locks: &'a KeyedLocks<K>,
    key: K,
}

impl<K: Eq + Hash + Clone> Drop for KeyedGuard<'_, K> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut locks = self.locks.locks.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // Only the map holds the lock when strong_count is 1: nobody waits for it any more.
        if locks.get(&self.key).is_some_and(|lock| Arc::strong_count(lock) == 1) {
            locks.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn the_same_key_waits_and_other_keys_do_not() {
        let locks = KeyedLocks::default();
        let held = locks.lock("a").await;
        assert!(tokio::time::timeout(Duration::from_millis(50), locks.lock("a")).await.is_err());
        let _other = tokio::time::timeout(Duration::from_millis(50), locks.lock("b")).await.expect("b is free");
        drop(held);
        let _again = tokio::time::timeout(Duration::from_millis(50), locks.lock("a")).await.expect("a is free");
    }

    #[tokio::test]
    async fn entries_go_once_nobody_holds_them() {
        let locks = KeyedLocks::default();
        drop(locks.lock(1).await);
        assert!(locks.locks.lock().unwrap().is_empty());
    }
}
