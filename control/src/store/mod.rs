//! The cluster store: where leases live and how they are watched.
//!
//! Two implementations share one contract, etcd's v3 semantics reduced to
//! what flannel's layout needs:
//! - [`etcd::EtcdStore`]: a real etcd cluster (several endpoints, TLS client
//!   certificates), the store flanneld shares.
//! - [`local::LocalStore`]: an embedded store in a directory, crash-safe,
//!   which several agents on one machine share (labs, demos, single nodes).
//!
//! The contract ([`Store`]):
//! - every change gets a new, strictly larger store-wide revision;
//! - [`Store::list`] returns the keys under a prefix *and* the revision the
//!   snapshot was taken at; [`Store::watch`] from `revision + 1` then misses
//!   nothing and repeats nothing;
//! - a key may be bound to a lease with a TTL; when the lease expires the key
//!   is deleted and watchers see a delete event;
//! - [`Store::create`] succeeds only if the key does not exist (etcd's
//!   `Compare(Version(key), "=", 0)` transaction);
//! - a watch whose start revision has been compacted away fails with
//!   [`StoreError::Compacted`]: the caller lists again;
//! - [`StoreError::Unavailable`] is transient (retry with backoff), anything
//!   else is [`StoreError::Other`].

pub mod etcd;
pub mod local;

use std::future::Future;
use std::time::Duration;

/// A store-wide revision (etcd's `mod_revision`).
pub type Revision = i64;

/// One key with its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The full key.
    pub key: String,
    /// The value's bytes.
    pub value: Vec<u8>,
    /// The revision of the key's last change.
    pub mod_revision: Revision,
    /// Seconds the key's lease has left; `None` for a key without a lease
    /// (flannel's reservations).
    pub ttl_left: Option<Duration>,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// The key was created or changed.
    Put(KeyValue),
    /// The key was deleted (by hand or because its lease expired).
    Delete {
        /// The key.
        key: String,
        /// The revision of the deletion.
        mod_revision: Revision,
    },
}

impl WatchEvent {
    /// The event's revision.
    pub fn revision(&self) -> Revision {
        match self {
            WatchEvent::Put(kv) => kv.mod_revision,
            WatchEvent::Delete { mod_revision, .. } => *mod_revision,
        }
    }

    /// The event's key.
    pub fn key(&self) -> &str {
        match self {
            WatchEvent::Put(kv) => &kv.key,
            WatchEvent::Delete { key, .. } => key,
        }
    }
}

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached now; retry with backoff.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The watch's start revision was compacted; list again.
    #[error("revision {requested} compacted (oldest kept: {compact_revision})")]
    Compacted {
        /// The revision asked for.
        requested: Revision,
        /// The store's compaction revision.
        compact_revision: Revision,
    },
    /// Anything else (bad request, corrupt store, permission denied).
    #[error("{0}")]
    Other(String),
}

/// A cluster store (see the module docs for the contract).
pub trait Store: Send + Sync + 'static {
    /// The stream of a watch.
    type Watch: Watch;

    /// The key's value, if it exists.
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<KeyValue>, StoreError>> + Send;

    /// Every key under `prefix` (sorted by key) and the revision of the
    /// snapshot.
    fn list(
        &self,
        prefix: &str,
    ) -> impl Future<Output = Result<(Vec<KeyValue>, Revision), StoreError>> + Send;

    /// Creates `key` bound to a new lease of `ttl`, only if the key does not
    /// exist. `Ok(true)`: created; `Ok(false)`: the key exists (someone else
    /// won the race).
    fn create(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Writes `key` (created or replaced) bound to a new lease of `ttl`
    /// (flannel's renewal: a fresh lease, the same key), or without a lease
    /// when `ttl` is `None`.
    fn put(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Deletes `key`; deleting a missing key is fine.
    fn delete(&self, key: &str) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Watches every key under `prefix` from revision `from` (inclusive).
    fn watch(
        &self,
        prefix: &str,
        from: Revision,
    ) -> impl Future<Output = Result<Self::Watch, StoreError>> + Send;
}

/// An open watch.
pub trait Watch: Send + 'static {
    /// The next events, in revision order (waits until there are some).
    /// An error ends the watch: the caller opens a new one.
    fn next(&mut self) -> impl Future<Output = Result<Vec<WatchEvent>, StoreError>> + Send;
}
