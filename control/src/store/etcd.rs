//! The etcd v3 store: [`EtcdStore`], the store flanneld shares.
//!
//! Invariants (on top of the [`Store`] contract in the parent module):
//! - no call waits longer than the request timeout (5 s by default): every
//!   unary RPC runs under `tokio::time::timeout`, because the client's
//!   balanced channel queues requests while no endpoint is reachable instead
//!   of failing them. A down etcd therefore yields
//!   [`StoreError::Unavailable`] after at most that long; connection refused
//!   is usually reported sooner.
//! - an open watch waits for events without a deadline, but it ends with
//!   `Unavailable` when its stream breaks: etcd exiting closes the TCP
//!   connection (seen at once), and HTTP/2 keep-alive pings while a watch is
//!   open (every 10 s, 5 s to answer) notice a peer that vanished silently.
//! - the client reconnects by itself: after an outage the same
//!   [`EtcdStore`] works again once etcd is back (open watches do not
//!   survive: the caller opens a new one from its last revision + 1).
//! - leases: [`Store::create`] and [`Store::put`] with a TTL grant a fresh
//!   lease of `ceil(ttl)` seconds (at least 1) per call and bind the key to
//!   it, as flannel renews; the old lease is left to expire (it no longer
//!   holds the key). etcd may grant more than asked: its minimum TTL is
//!   `1.5 × election timeout` rounded up, 2 s with the default settings.
//! - [`KeyValue::leased`] is true exactly for keys bound to a lease
//!   (`lease != 0`). [`KeyValue::ttl_left`] is filled by [`Store::get`]
//!   only, with a LeaseTimeToLive call (one-second resolution; a lease that
//!   expired before its key was deleted reads as `Some(Duration::ZERO)`).
//!   `list` and watches leave it `None`: one call per lease is most of a
//!   list's cost (5,000 leased keys list in about 0.4 s on two cores with
//!   the calls, [`TTL_LOOKUPS_IN_FLIGHT`] at a time, and in 30 ms without).
//! - [`Store::list`] reads in pages of [`LIST_PAGE`] keys, every page at the
//!   revision of the first, so the snapshot is consistent.
//! - a watch hands over, in one batch, every response that has already
//!   arrived (up to [`WATCH_BATCH`] events), not one response at a time:
//!   etcd sends a watcher that keeps up one response per revision, and a
//!   consumer that takes them one by one (the agent makes one sluiced call
//!   per batch) drains a backlog in the stream's buffers at the pace of its
//!   slowest step: about 60 events a second in the soak, against 1,000
//!   written.
//! - keys that are not UTF-8 are skipped with a warning (flannel's are
//!   ASCII); a bad answer from etcd never panics.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, CompactionOptions, Compare, CompareOp, ConnectOptions, Error as EtcdError,
    GetOptions, Identity, LeaseClient, PutOptions, TlsOptions, Txn, TxnOp, WatchOptions,
    WatchStream,
};
use serde::{Deserialize, Deserializer};
use tonic::Code;

use super::{KeyValue, Revision, Store, StoreError, Watch, WatchEvent};

/// Keys read per range request in [`Store::list`].
pub const LIST_PAGE: i64 = 1000;
/// LeaseTimeToLive calls in flight at once when filling `ttl_left`. On two
/// cores 8 take 0.75 s for 5,000 leases, 32 take 0.5 s, 128 take 0.4 s and
/// more gain nothing (etcd and the client share the CPU).
pub const TTL_LOOKUPS_IN_FLIGHT: usize = 128;
/// HTTP/2 keep-alive ping interval while a stream (a watch) is open. etcd
/// rejects pings closer than 5 s (`--grpc-keepalive-min-time`).
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// How long a keep-alive ping may go unanswered before the connection is
/// dropped.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// The most events [`Watch::next`] gathers from responses that have
/// already arrived (one response is never split).
pub const WATCH_BATCH: usize = 4096;
/// Times [`Store::list`] starts over when its snapshot revision is compacted
/// between two pages.
const LIST_ATTEMPTS: usize = 3;

/// How to reach etcd; the `[etcd]` section of the agent's configuration,
/// after flanneld's `--etcd-*` flags.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EtcdConfig {
    /// Client URLs (`--etcd-endpoints`); in TOML a list or one
    /// comma-separated string. `https://` URLs need `ca_file`.
    #[serde(deserialize_with = "de_endpoints")]
    pub endpoints: Vec<String>,
    /// PEM CA bundle that signed etcd's server certificates
    /// (`--etcd-cafile`).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (`--etcd-certfile`); needs `key_file`.
    pub cert_file: Option<PathBuf>,
    /// PEM client key (`--etcd-keyfile`); needs `cert_file`.
    pub key_file: Option<PathBuf>,
    /// etcd user (`--etcd-username`); needs `password`.
    pub username: Option<String>,
    /// etcd password (`--etcd-password`).
    pub password: Option<String>,
    /// Limit on opening a connection to one endpoint; seconds in TOML.
    #[serde(deserialize_with = "de_seconds")]
    pub dial_timeout: Duration,
    /// Limit on one request (a watch's events excepted); seconds in TOML.
    #[serde(deserialize_with = "de_seconds")]
    pub request_timeout: Duration,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig {
            endpoints: vec!["http://127.0.0.1:2379".to_string()],
            ca_file: None,
            cert_file: None,
            key_file: None,
            username: None,
            password: None,
            dial_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
        }
    }
}

// The password stays out of logs.
impl fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("ca_file", &self.ca_file)
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("dial_timeout", &self.dial_timeout)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

impl EtcdConfig {
    /// Splits flanneld's comma-separated `--etcd-endpoints` value.
    pub fn parse_endpoints(list: &str) -> Vec<String> {
        list.split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(str::to_string)
            .collect()
    }

    fn uses_tls(&self) -> bool {
        self.ca_file.is_some() || self.cert_file.is_some() || self.key_file.is_some()
    }
}

fn de_endpoints<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Endpoints {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Endpoints::deserialize(d)? {
        Endpoints::One(s) => EtcdConfig::parse_endpoints(&s),
        Endpoints::Many(v) => v
            .iter()
            .flat_map(|s| EtcdConfig::parse_endpoints(s))
            .collect(),
    })
}

fn de_seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Seconds {
        Int(u64),
        Float(f64),
    }
    match Seconds::deserialize(d)? {
        Seconds::Int(s) => Ok(Duration::from_secs(s)),
        Seconds::Float(s) => Duration::try_from_secs_f64(s)
            .map_err(|_| serde::de::Error::custom(format!("{s} is not a number of seconds >= 0"))),
    }
}

/// The etcd v3 store (see the module docs). Cloning is cheap and shares the
/// connections.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    endpoints: Vec<String>,
    request_timeout: Duration,
}

impl fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// Connects and checks that an endpoint answers. A bad configuration
    /// (no endpoints, unreadable certificates, TLS with `http://`) is
    /// `Other`; etcd not answering within `dial_timeout + request_timeout`
    /// is `Unavailable`. Once connected the store reconnects by itself.
    pub async fn connect(config: &EtcdConfig) -> Result<EtcdStore, StoreError> {
        if config.endpoints.is_empty() {
            return Err(StoreError::Other("etcd: no endpoints".into()));
        }
        let mut options = ConnectOptions::new()
            .with_connect_timeout(config.dial_timeout)
            .with_timeout(config.request_timeout)
            .with_keep_alive(KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT)
            // etcd answers pings on a connection without streams with
            // GOAWAY "too_many_pings": ping only while a watch is open.
            .with_keep_alive_while_idle(false);
        match (&config.username, &config.password) {
            (Some(user), Some(password)) => {
                options = options
                    .with_user(user.clone(), password.clone())
                    .with_auto_token_refresh(true);
            }
            (None, None) => {}
            _ => {
                return Err(StoreError::Other(
                    "etcd: username and password go together".into(),
                ))
            }
        }
        if config.uses_tls() {
            options = options.with_tls(tls_options(config).await?);
            if let Some(e) = config.endpoints.iter().find(|e| e.starts_with("http://")) {
                return Err(StoreError::Other(format!(
                    "etcd: TLS files are set but endpoint {e} is http://"
                )));
            }
        }
        let limit = config.dial_timeout + config.request_timeout;
        let client =
            match tokio::time::timeout(limit, Client::connect(&config.endpoints, Some(options)))
                .await
            {
                Ok(Ok(client)) => client,
                Ok(Err(e)) => return Err(map_connect_error(e)),
                Err(_) => {
                    return Err(StoreError::Unavailable(format!(
                        "etcd {:?}: no connection within {limit:?}",
                        config.endpoints
                    )))
                }
            };
        let store = EtcdStore {
            client,
            endpoints: config.endpoints.clone(),
            request_timeout: config.request_timeout,
        };
        // The channel connects lazily: ask something to know etcd is there.
        let rev = store.revision().await?;
        tracing::debug!(endpoints = ?store.endpoints, revision = rev, "connected to etcd");
        Ok(store)
    }

    /// The store's current revision.
    pub async fn revision(&self) -> Result<Revision, StoreError> {
        let mut kv = self.client.kv_client();
        let opts = GetOptions::new().with_count_only();
        let resp = self
            .call("get revision", kv.get(vec![0u8], Some(opts)))
            .await?;
        header_revision(resp.header())
    }

    /// Compacts the history up to `revision` and waits until the compaction
    /// is applied (watches from older revisions then fail with
    /// [`StoreError::Compacted`]). Compacting an already compacted revision
    /// is fine; a future revision is `Other`.
    pub async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let mut kv = self.client.kv_client();
        let opts = CompactionOptions::new().with_physical();
        match self.call("compact", kv.compact(revision, Some(opts))).await {
            // Already compacted that far: nothing to do.
            Ok(_) | Err(StoreError::Compacted { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Runs one request under the request timeout.
    async fn call<T>(
        &self,
        what: &str,
        fut: impl Future<Output = Result<T, EtcdError>>,
    ) -> Result<T, StoreError> {
        call(self.request_timeout, what, fut).await
    }

    /// Grants a lease of `ttl` rounded up to whole seconds (at least 1).
    async fn grant(&self, ttl: Duration) -> Result<i64, StoreError> {
        let secs = ttl
            .as_secs()
            .saturating_add(u64::from(ttl.subsec_nanos() > 0));
        let secs = i64::try_from(secs.max(1)).unwrap_or(i64::MAX);
        let mut lease = self.client.lease_client();
        let resp = self.call("lease grant", lease.grant(secs, None)).await?;
        if !resp.error().is_empty() {
            return Err(StoreError::Other(format!(
                "etcd lease grant: {}",
                resp.error()
            )));
        }
        Ok(resp.id())
    }

    /// One consistent snapshot of `prefix`, page by page.
    async fn list_once(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        let (mut from, end) = prefix_range(prefix.as_bytes());
        let mut kv = self.client.kv_client();
        let mut raw = Vec::new();
        let mut rev: Revision = 0;
        loop {
            let mut opts = GetOptions::new()
                .with_range(end.clone())
                .with_limit(LIST_PAGE);
            if rev != 0 {
                opts = opts.with_revision(rev);
            }
            let mut resp = self.call("list", kv.get(from.clone(), Some(opts))).await?;
            if rev == 0 {
                rev = header_revision(resp.header())?;
            }
            let more = resp.more();
            let page = resp.take_kvs();
            let Some(last) = page.last() else { break };
            from = last.key().to_vec();
            from.push(0);
            raw.extend(page);
            if !more {
                break;
            }
        }
        let ttls = HashMap::new();
        Ok((
            raw.iter().filter_map(|kv| convert(kv, &ttls)).collect(),
            rev,
        ))
    }
}

impl Store for EtcdStore {
    type Watch = EtcdWatch;

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let mut kv = self.client.kv_client();
        let resp = self.call("get", kv.get(key, None)).await?;
        let Some(found) = resp.kvs().first() else {
            return Ok(None);
        };
        let ttls = lease_ttls(
            &self.client.lease_client(),
            self.request_timeout,
            [found.lease()].into_iter(),
        )
        .await?;
        Ok(convert(found, &ttls))
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        for _ in 0..LIST_ATTEMPTS {
            match self.list_once(prefix).await {
                // The snapshot revision was compacted between two pages.
                Err(StoreError::Compacted { .. }) => continue,
                other => return other,
            }
        }
        Err(StoreError::Unavailable(format!(
            "list {prefix:?}: compacted during the read {LIST_ATTEMPTS} times"
        )))
    }

    async fn create(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, StoreError> {
        let lease = self.grant(ttl).await?;
        let txn = Txn::new()
            .when([Compare::version(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key,
                value,
                Some(PutOptions::new().with_lease(lease)),
            )]);
        let mut kv = self.client.kv_client();
        let resp = self.call("create", kv.txn(txn)).await?;
        if resp.succeeded() {
            return Ok(true);
        }
        // Lost the race: drop the unused lease now (it would expire anyway).
        let mut leases = self.client.lease_client();
        if let Err(e) = self.call("lease revoke", leases.revoke(lease)).await {
            tracing::debug!(lease, error = %e, "could not revoke an unused lease");
        }
        Ok(false)
    }

    async fn put(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), StoreError> {
        let mut opts = PutOptions::new();
        if let Some(ttl) = ttl {
            opts = opts.with_lease(self.grant(ttl).await?);
        }
        let mut kv = self.client.kv_client();
        self.call("put", kv.put(key, value, Some(opts)))
            .await
            .map(drop)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let mut kv = self.client.kv_client();
        self.call("delete", kv.delete(key, None)).await.map(drop)
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<EtcdWatch, StoreError> {
        let opts = WatchOptions::new().with_prefix().with_start_revision(from);
        let mut client = self.client.watch_client();
        let mut stream = self.call("watch", client.watch(prefix, Some(opts))).await?;
        // Wait for etcd to confirm the watch, so it is in place on return.
        let first = self.call("watch", stream.message()).await?;
        let mut watch = EtcdWatch {
            stream,
            next_revision: from,
            pending: Vec::new(),
            failed: None,
        };
        match first {
            None => {
                return Err(StoreError::Unavailable(
                    "etcd closed the watch stream".into(),
                ))
            }
            Some(resp) => watch.pending = watch.check(resp)?,
        }
        Ok(watch)
    }
}

/// An open etcd watch (see [`Store::watch`]).
pub struct EtcdWatch {
    stream: WatchStream,
    /// The revision the next event will have at least (for errors).
    next_revision: Revision,
    /// Events that came with etcd's confirmation of the watch.
    pending: Vec<etcd_client::Event>,
    /// An error met while gathering a batch, returned by the next call.
    failed: Option<StoreError>,
}

impl fmt::Debug for EtcdWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdWatch")
            .field("next_revision", &self.next_revision)
            .finish_non_exhaustive()
    }
}

impl EtcdWatch {
    /// The events of one response, or the error that ends the watch.
    fn check(
        &self,
        resp: etcd_client::WatchResponse,
    ) -> Result<Vec<etcd_client::Event>, StoreError> {
        if resp.compact_revision() > 0 {
            return Err(StoreError::Compacted {
                requested: self.next_revision,
                compact_revision: resp.compact_revision(),
            });
        }
        if resp.canceled() {
            let reason = resp.cancel_reason();
            return Err(if reason.contains("permission denied") {
                StoreError::Other(format!("etcd cancelled the watch: {reason}"))
            } else {
                StoreError::Unavailable(format!("etcd cancelled the watch: {reason}"))
            });
        }
        Ok(resp.events().to_vec())
    }
}

impl EtcdWatch {
    /// Adds to `raw` the responses that have already arrived, without
    /// waiting, up to [`WATCH_BATCH`] events; an error is kept for the next
    /// call.
    fn gather(&mut self, raw: &mut Vec<etcd_client::Event>) {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        while raw.len() < WATCH_BATCH {
            // `message` keeps no state of its own between polls (the
            // stream does), so dropping it when pending loses nothing.
            let polled = {
                let mut message = std::pin::pin!(self.stream.message());
                message.as_mut().poll(&mut cx)
            };
            let resp = match polled {
                std::task::Poll::Pending => return,
                std::task::Poll::Ready(Ok(Some(resp))) => resp,
                std::task::Poll::Ready(Ok(None)) => {
                    self.failed = Some(StoreError::Unavailable(
                        "etcd closed the watch stream".into(),
                    ));
                    return;
                }
                std::task::Poll::Ready(Err(e)) => {
                    self.failed = Some(map_error("watch", e));
                    return;
                }
            };
            match self.check(resp) {
                Ok(events) => raw.extend(events),
                Err(e) => {
                    self.failed = Some(e);
                    return;
                }
            }
        }
    }
}

impl Watch for EtcdWatch {
    async fn next(&mut self) -> Result<Vec<WatchEvent>, StoreError> {
        loop {
            if let Some(e) = self.failed.take() {
                return Err(e);
            }
            let mut raw = if self.pending.is_empty() {
                // No deadline: events come when they come; a broken stream
                // ends this with an error (module docs).
                let resp = self
                    .stream
                    .message()
                    .await
                    .map_err(|e| map_error("watch", e))?
                    .ok_or_else(|| {
                        StoreError::Unavailable("etcd closed the watch stream".into())
                    })?;
                self.check(resp)?
            } else {
                std::mem::take(&mut self.pending)
            };
            self.gather(&mut raw);
            if raw.is_empty() {
                continue; // the confirmation or a progress notification
            }
            let ttls = HashMap::new();
            let events: Vec<WatchEvent> = raw
                .iter()
                .filter_map(|e| e.kv())
                .filter_map(|kv| {
                    if is_delete(kv) {
                        Some(WatchEvent::Delete {
                            key: utf8_key(kv)?,
                            mod_revision: kv.mod_revision(),
                        })
                    } else {
                        convert(kv, &ttls).map(WatchEvent::Put)
                    }
                })
                .collect();
            if let Some(last) = raw.iter().filter_map(|e| e.kv()).next_back() {
                self.next_revision = last.mod_revision() + 1;
            }
            if !events.is_empty() {
                return Ok(events);
            }
        }
    }
}

/// A delete event's key-value is a tombstone: version 0 (a live key's
/// version is at least 1). Read this way rather than through
/// `Event::event_type`, which panics on a type it does not know.
fn is_delete(kv: &etcd_client::KeyValue) -> bool {
    kv.version() == 0
}

fn utf8_key(kv: &etcd_client::KeyValue) -> Option<String> {
    match kv.key_str() {
        Ok(k) => Some(k.to_string()),
        Err(_) => {
            tracing::warn!(key = ?String::from_utf8_lossy(kv.key()), "skipping a key that is not UTF-8");
            None
        }
    }
}

/// Converts one etcd key-value; `ttls` holds every lease of the batch.
fn convert(kv: &etcd_client::KeyValue, ttls: &HashMap<i64, Duration>) -> Option<KeyValue> {
    Some(KeyValue {
        key: utf8_key(kv)?,
        value: kv.value().to_vec(),
        mod_revision: kv.mod_revision(),
        leased: kv.lease() != 0,
        ttl_left: match kv.lease() {
            0 => None,
            id => ttls.get(&id).copied(),
        },
    })
}

/// Time left on each distinct non-zero lease of `ids`, asked with at most
/// [`TTL_LOOKUPS_IN_FLIGHT`] calls in flight.
async fn lease_ttls(
    client: &LeaseClient,
    timeout: Duration,
    ids: impl Iterator<Item = i64>,
) -> Result<HashMap<i64, Duration>, StoreError> {
    let mut ids: Vec<i64> = ids.filter(|&id| id != 0).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut out = HashMap::with_capacity(ids.len());
    if ids.is_empty() {
        return Ok(out);
    }
    let workers = TTL_LOOKUPS_IN_FLIGHT.min(ids.len());
    let ids = std::sync::Arc::new(ids);
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..workers {
        let (mut client, ids) = (client.clone(), ids.clone());
        tasks.spawn(async move {
            let mut got = Vec::with_capacity(ids.len() / workers + 1);
            for &id in ids.iter().skip(w).step_by(workers) {
                let resp = call(timeout, "lease ttl", client.time_to_live(id, None)).await?;
                // -1: the lease expired or is gone (its keys are going).
                let secs = u64::try_from(resp.ttl()).unwrap_or(0);
                got.push((id, Duration::from_secs(secs)));
            }
            Ok::<_, StoreError>(got)
        });
    }
    while let Some(done) = tasks.join_next().await {
        let got = done.map_err(|e| StoreError::Other(format!("lease ttl task: {e}")))??;
        out.extend(got);
    }
    Ok(out)
}

async fn call<T>(
    timeout: Duration,
    what: &str,
    fut: impl Future<Output = Result<T, EtcdError>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r.map_err(|e| map_error(what, e)),
        Err(_) => Err(StoreError::Unavailable(format!(
            "etcd {what}: no answer within {timeout:?}"
        ))),
    }
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Result<Revision, StoreError> {
    header
        .map(|h| h.revision())
        .ok_or_else(|| StoreError::Other("etcd answered without a header".into()))
}

/// The key range of `prefix`: `[prefix, end)`; the empty prefix is every
/// key (`["\0", "\0")` in etcd's notation).
fn prefix_range(prefix: &[u8]) -> (Vec<u8>, Vec<u8>) {
    if prefix.is_empty() {
        return (vec![0], vec![0]);
    }
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return (prefix.to_vec(), end);
        }
    }
    // All 0xff: every key from the prefix on.
    (prefix.to_vec(), vec![0])
}

/// Errors of `connect` itself: bad arguments are the configuration's fault.
fn map_connect_error(e: EtcdError) -> StoreError {
    match e {
        EtcdError::InvalidArgs(_) | EtcdError::InvalidUri(_) | EtcdError::EndpointError(_) => {
            StoreError::Other(format!("etcd: {e}"))
        }
        e => map_error("connect", e),
    }
}

/// Maps a client error: connection trouble and etcd's own transient errors
/// (no leader, leader changed, timeouts: gRPC `Unavailable`) are
/// `Unavailable`; a compacted revision is `Compacted`; the rest is `Other`.
fn map_error(what: &str, e: EtcdError) -> StoreError {
    match e {
        EtcdError::GRpcStatus(status) => {
            let msg = status.message();
            match status.code() {
                Code::Unavailable
                | Code::DeadlineExceeded
                | Code::Cancelled
                | Code::Unknown
                | Code::Aborted
                | Code::ResourceExhausted => StoreError::Unavailable(format!("etcd {what}: {msg}")),
                // HTTP/2 trouble (a reset connection) surfaces as Internal.
                Code::Internal if msg.contains("h2") || msg.contains("connection") => {
                    StoreError::Unavailable(format!("etcd {what}: {msg}"))
                }
                Code::OutOfRange if msg.contains("compacted") => StoreError::Compacted {
                    requested: 0,
                    compact_revision: 0,
                },
                _ => StoreError::Other(format!("etcd {what}: {msg}")),
            }
        }
        EtcdError::TransportError(_) | EtcdError::IoError(_) | EtcdError::WatchError(_) => {
            StoreError::Unavailable(format!("etcd {what}: {e}"))
        }
        e => StoreError::Other(format!("etcd {what}: {e}")),
    }
}

/// The TLS settings of `config` (files read now, so errors show at start).
async fn tls_options(config: &EtcdConfig) -> Result<TlsOptions, StoreError> {
    async fn read(path: &PathBuf, what: &str) -> Result<Vec<u8>, StoreError> {
        tokio::fs::read(path)
            .await
            .map_err(|e| StoreError::Other(format!("etcd {what} {}: {e}", path.display())))
    }
    let mut tls = TlsOptions::new();
    if let Some(ca) = &config.ca_file {
        tls = tls.ca_certificate(Certificate::from_pem(read(ca, "CA file").await?));
    }
    match (&config.cert_file, &config.key_file) {
        (Some(cert), Some(key)) => {
            let cert = read(cert, "certificate file").await?;
            let key = read(key, "key file").await?;
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        (None, None) => {}
        _ => {
            return Err(StoreError::Other(
                "etcd: cert_file and key_file go together".into(),
            ))
        }
    }
    Ok(tls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ranges() {
        assert_eq!(prefix_range(b"a/"), (b"a/".to_vec(), b"a0".to_vec()));
        assert_eq!(prefix_range(b"a\xff"), (b"a\xff".to_vec(), b"b".to_vec()));
        assert_eq!(prefix_range(b"\xff"), (b"\xff".to_vec(), vec![0]));
        assert_eq!(prefix_range(b""), (vec![0], vec![0]));
    }

    #[test]
    fn config_from_toml() {
        let c: EtcdConfig = toml::from_str(
            r#"endpoints = "https://a:2379, https://b:2379"
               ca_file = "/ca.pem"
               dial_timeout = 1.5"#,
        )
        .unwrap();
        assert_eq!(c.endpoints, ["https://a:2379", "https://b:2379"]);
        assert_eq!(c.dial_timeout, Duration::from_millis(1500));
        assert_eq!(c.request_timeout, Duration::from_secs(5));
        let c: EtcdConfig = toml::from_str(r#"endpoints = ["http://x:1"]"#).unwrap();
        assert_eq!(c.endpoints, ["http://x:1"]);
        assert_eq!(
            toml::from_str::<EtcdConfig>("").unwrap(),
            EtcdConfig::default()
        );
        assert!(toml::from_str::<EtcdConfig>("endpoint = \"x\"").is_err());
        assert!(toml::from_str::<EtcdConfig>("dial_timeout = -1").is_err());
    }

    #[test]
    fn debug_hides_the_password() {
        let c = EtcdConfig {
            password: Some("hunter2".into()),
            ..EtcdConfig::default()
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
