//! Shards: one pinned glommio executor per configured core, each owning its partitions, its
//! listener socket (SO_REUSEPORT), its batch cache and its group commit.
//!
//! Boot: every shard joins the mailbox mesh; shard 0 (the controller) loads the metadata image,
//! applies it to itself (opening/recovering its partitions), then to every other shard, and only
//! when all have applied it tells every shard to start listening, so no client request ever
//! reaches a shard whose partitions are still recovering. Shutdown (SIGTERM/SIGINT): listeners
//! stop, a last flush round makes every buffered append durable, every log is closed. A shard
//! whose boot fails (an unreadable journal, a listener that cannot bind) stops the others the
//! same way, so the process exits with the error instead of waiting for a signal.
//!
//! No state is shared between shards except immutable `Arc`s (configuration, metadata images).
//! Each shard counts its own metrics ([`crate::metrics::ShardProbe`]); shard 0 serves the
//! metrics endpoint from the start of boot (so `/health` answers and `/ready` says 503 while
//! partitions recover) and gathers every shard's snapshot through the mailbox at each scrape.

pub mod background;
pub mod commit;
pub mod journal;
pub mod mailbox;
pub mod notify;
pub mod partition;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use glommio::channels::channel_mesh::MeshBuilder;
use glommio::{LocalExecutorBuilder, Placement};

use crate::config::BrokerConfig;
use crate::metadata::controller::Controller;
use crate::metadata::MetadataImage;
use crate::metrics::ShardProbe;
use crate::protocol::error::ErrorCode;
use crate::protocol::record_batch::BatchHeader;
use crate::server::lifecycle::Lifecycle;
use crate::storage::pacing::IoPacer;
use crate::storage::{BatchCache, LogConfig, PartitionLog, StorageError};
use crate::topic_config::TopicConfig;

use commit::GroupCommit;
use mailbox::{Job, Mailbox};
use notify::Notify;
use partition::Partition;

pub struct Shard {
    pub id: usize,
    pub nr_shards: usize,
    pub cpu: usize,
    pub config: Arc<BrokerConfig>,
    pub mailbox: Mailbox,
    pub cache: Rc<BatchCache>,
    pub commit: GroupCommit,
    /// Paces background I/O (compaction) against the group commit's fdatasync latency.
    pub pacer: Rc<IoPacer>,
    /// Only on shard 0.
    pub controller: Option<Controller>,
    image: RefCell<Arc<MetadataImage>>,
    /// Every topic's effective configs, resolved from the current image (see
    /// [`crate::topic_config`]); replaced whole when an image is applied.
    topic_configs: RefCell<Rc<HashMap<String, Rc<TopicConfig>>>>,
    /// Partitions this shard owns: topic -> index -> partition.
    partitions: RefCell<HashMap<String, Vec<Option<Rc<Partition>>>>>,
    /// Partitions this shard owns but could not open (disk errors): answered
    /// KAFKA_STORAGE_ERROR until a restart opens them.
    offline: RefCell<std::collections::HashSet<(String, i32)>>,
    pub stopping: Cell<bool>,
    pub stop_requested: Notify,
    /// The data directory's filesystem is below `log.dir.min.free.bytes` free (see
    /// [`background::spawn_disk_guard`]): produce is refused until space returns.
    pub disk_low: Cell<bool>,
    /// `queued.max.request.bytes`: requests read and not yet answered, in bytes (`None`:
    /// unbounded). See `server::request_budget`.
    pub request_budget: Option<crate::server::request_budget::RequestBudget>,
    /// Committed offsets of the groups coordinated here (this shard's `__consumer_offsets`
    /// partitions), rebuilt from them when they open.
    pub offsets: RefCell<crate::coordinator::offsets::OffsetTable>,
    /// Classic groups coordinated here, restored from the same partitions.
    pub groups: RefCell<crate::coordinator::groups::GroupRuntime>,
    /// KIP-848 consumer groups coordinated here, restored from the same partitions.
    pub consumer_groups: RefCell<crate::coordinator::consumer_groups::ConsumerGroupRuntime>,
    /// The transaction coordinator of the transactional ids whose `__transaction_state`
    /// partitions this shard owns.
    pub txn: RefCell<crate::coordinator::transactions::TxnRuntime>,
    /// Ready / stopping, for systemd and the health endpoints (one per process).
    pub lifecycle: Arc<Lifecycle>,
    /// This shard's metrics (see [`crate::metrics`]).
    pub probe: Rc<ShardProbe>,
    /// Journal records read at start, replayed as partitions open (see `journal.rs`).
    pub journal_replay: RefCell<journal::ReplayState>,
    /// Partitions some of whose journal records could not be replayed at start: answered
    /// KAFKA_STORAGE_ERROR and never (re)opened until the next start replays them. Opened
    /// before, they would serve a log without those acknowledged records and give their
    /// offsets to new appends (the next start then skips the journal's records there).
    journal_held: RefCell<std::collections::HashSet<(crate::metadata::TopicId, i32)>>,
}

/// What an append on the owning shard produced, before durability.
pub struct Appended {
    pub base_offset: i64,
    pub last_offset: i64,
    pub log_append_time: i64,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Shard {
    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.borrow().clone()
    }

    pub fn partition(&self, topic: &str, index: i32) -> Option<Rc<Partition>> {
        let parts = self.partitions.borrow();
        parts.get(topic)?.get(usize::try_from(index).ok()?)?.clone()
    }

    /// The partition if this shard serves it, else the error to answer for it.
    pub fn serving(&self, topic: &str, index: i32) -> Result<Rc<Partition>, ErrorCode> {
        match self.partition(topic, index) {
            Some(p) if self.is_held_for_journal(p.topic_id, index) => {
                Err(ErrorCode::KAFKA_STORAGE_ERROR)
            }
            Some(p) => Ok(p),
            None if self.offline.borrow().contains(&(topic.to_string(), index)) => {
                Err(ErrorCode::KAFKA_STORAGE_ERROR)
            }
            None => Err(ErrorCode::NOT_LEADER_OR_FOLLOWER),
        }
    }

    /// The log settings of a partition of a topic with configs `t`.
    pub fn log_config(&self, t: &TopicConfig) -> LogConfig {
        LogConfig {
            segment_bytes: t.segment_bytes,
            segment_ms: t.segment_ms,
            index_interval_bytes: t.index_interval_bytes,
            preallocate_bytes: self.config.log_preallocate_bytes,
            message_timestamp_log_append: t.timestamp_log_append,
        }
    }

    /// `topic`'s effective configs (`None` for a topic the current image does not know).
    pub fn topic_config(&self, topic: &str) -> Option<Rc<TopicConfig>> {
        self.topic_configs.borrow().get(topic).cloned()
    }

    /// Partitions this shard owns but could not open, or opened but could not replay the
    /// journal into (their log is retired).
    pub fn offline_count(&self) -> usize {
        let held = self.journal_held.borrow();
        let retired = self
            .owned_partitions()
            .iter()
            .filter(|p| held.contains(&(p.topic_id, p.index)))
            .count();
        self.offline.borrow().len() + retired
    }

    /// Keeps partition `index` of topic `topic_id` offline until the next start (see
    /// `journal_held`).
    pub fn hold_for_journal(&self, topic_id: crate::metadata::TopicId, index: i32) {
        self.journal_held.borrow_mut().insert((topic_id, index));
    }

    /// On every request's partitions: an empty set (the normal case) costs no hashing.
    fn is_held_for_journal(&self, topic_id: crate::metadata::TopicId, index: i32) -> bool {
        let held = self.journal_held.borrow();
        !held.is_empty() && held.contains(&(topic_id, index))
    }

    /// Every partition this shard owns.
    pub fn owned_partitions(&self) -> Vec<Rc<Partition>> {
        self.partitions
            .borrow()
            .values()
            .flat_map(|list| list.iter().flatten().cloned())
            .collect()
    }

    /// Reopens every partition whose log went offline because its filesystem was full, once
    /// that filesystem has `min_free` bytes available again, as a restart would: the old log
    /// is retired (no more writes, its cached batches dropped) and the directory opened again,
    /// which recovers it (torn tail truncated, producer state from what is durable). Appends
    /// that never became durable were never acknowledged: their producers got
    /// KAFKA_STORAGE_ERROR and retry.
    pub async fn reopen_out_of_space(&self, min_free: u64) {
        let failed: Vec<Rc<Partition>> = self
            .owned_partitions()
            .into_iter()
            .filter(|p| p.log.failed_out_of_space())
            .collect();
        // The journal may hold appends of these logs that their files have but not durably:
        // a checkpoint syncs them, so the reopened logs start from everything acknowledged and
        // no journal record is left for offsets they will assign again.
        if let (false, Some(j)) = (failed.is_empty(), self.commit.journal()) {
            if let Err(e) = j.checkpoint().await {
                log::error!(
                    "shard {}: journal checkpoint before reopening: {e}",
                    self.id
                );
                return;
            }
        }
        for old in failed {
            let dir = self.partition_dir(&old.topic, old.index);
            // The directory may be a link to another filesystem.
            match crate::io::filesystem_space(&dir) {
                Some((_, available)) if available >= min_free => {}
                _ => continue,
            }
            let Some(topic_config) = self.topic_config(&old.topic) else {
                continue;
            };
            old.log.retire().await;
            let log = match PartitionLog::open(
                dir.clone(),
                self.log_config(&topic_config),
                self.cache.clone(),
                now_ms(),
            )
            .await
            {
                Ok(log) => log,
                Err(e) => {
                    old.log_error("reopen after the disk filled", &e);
                    continue;
                }
            };
            let new = Rc::new(Partition::new(
                old.topic.clone(),
                old.topic_id,
                old.index,
                old.leader_epoch,
                log,
            ));
            let mut parts = self.partitions.borrow_mut();
            let slot = parts
                .get_mut(&old.topic)
                .and_then(|list| list.get_mut(usize::try_from(old.index).ok()?));
            match slot {
                // Still this partition (not deleted or moved while it reopened).
                Some(slot) if slot.as_ref().is_some_and(|p| Rc::ptr_eq(p, &old)) => {
                    log::info!(
                        "{}-{}: reopened after the disk filled; log end offset {}",
                        old.topic,
                        old.index,
                        new.log.log_end_offset()
                    );
                    *slot = Some(new);
                }
                _ => drop(new),
            }
        }
    }

    fn partition_dir(&self, topic: &str, index: i32) -> std::path::PathBuf {
        self.config.data_dir.join(format!("{topic}-{index}"))
    }

    /// Installs a newer metadata image: opens (recovers) the partitions it gives this shard,
    /// closes and deletes those of topics that are gone. Older or equal versions are ignored.
    pub async fn apply_image(self: &Rc<Self>, image: Arc<MetadataImage>) {
        if image.version < self.image.borrow().version && self.image.borrow().version != 0 {
            return;
        }
        // Topics removed, or replaced by a topic of the same name with another id.
        let mut removed = Vec::new();
        {
            let mut parts = self.partitions.borrow_mut();
            let names: Vec<String> = parts.keys().cloned().collect();
            for name in names {
                let keep_id = image.topic(&name).map(|t| t.id);
                let list = parts.get_mut(&name).map(std::mem::take).unwrap_or_default();
                let mut kept = Vec::with_capacity(list.len());
                for p in list {
                    match p {
                        Some(p)
                            if Some(p.topic_id) == keep_id
                                && image.shard_of(&name, p.index) == Some(self.id) =>
                        {
                            kept.push(Some(p))
                        }
                        Some(p) => {
                            let deleted = keep_id != Some(p.topic_id);
                            removed.push((p, deleted));
                            kept.push(None);
                        }
                        None => kept.push(None),
                    }
                }
                parts.insert(name, kept);
            }
        }
        for (p, deleted) in removed {
            if deleted {
                self.remove_deleted(p).await;
                continue;
            }
            // Moved to another shard: let in-flight appends settle, then close it here.
            self.commit.wait_round(self.commit_covering(&p)).await;
            let name = format!("{}-{}", p.topic, p.index);
            match Rc::try_unwrap(p) {
                Ok(p) => {
                    if let Err(e) = p.log.close().await {
                        log::error!("shard {}: closing partition {name}: {e}", self.id);
                    }
                }
                Err(_) => log::warn!(
                    "shard {}: partition {name} still busy while moving",
                    self.id
                ),
            }
        }
        *self.image.borrow_mut() = image.clone();
        self.probe
            .retain_topics(|name, id| image.topic(name).is_some_and(|t| t.id == *id));
        self.install_topic_configs(&image);
        let cleaner_rate = image.cleaner_io_max_bytes_per_second(&self.config);
        if self.pacer.set_max_rate(cleaner_rate) {
            log::info!(
                "shard {}: compaction I/O at most {cleaner_rate} bytes/s (log.cleaner.io.max.bytes.per.second)",
                self.id
            );
        }
        self.offline
            .borrow_mut()
            .retain(|(t, i)| image.shard_of(t, *i) == Some(self.id));
        // Open partitions newly assigned here.
        for topic in image.topics.values() {
            for (i, pm) in topic.partitions.iter().enumerate() {
                if pm.shard as usize != self.id
                    || self.partition(&topic.name, i as i32).is_some()
                    || self.is_held_for_journal(topic.id, i as i32)
                {
                    continue;
                }
                let dir = self.partition_dir(&topic.name, i as i32);
                let topic_config = self.topic_config(&topic.name).unwrap_or_default();
                match PartitionLog::open(
                    dir.clone(),
                    self.log_config(&topic_config),
                    self.cache.clone(),
                    now_ms(),
                )
                .await
                {
                    Ok(log) => {
                        let p = Rc::new(Partition::new(
                            topic.name.clone(),
                            topic.id,
                            i as i32,
                            pm.leader_epoch,
                            log,
                        ));
                        {
                            let mut parts = self.partitions.borrow_mut();
                            let list = parts.entry(topic.name.clone()).or_default();
                            if list.len() <= i {
                                list.resize(i + 1, None);
                            }
                            list[i] = Some(p.clone());
                        }
                        journal::replay_into(self, &p).await;
                        if topic.name == crate::coordinator::offsets::OFFSETS_TOPIC {
                            crate::coordinator::rebuild_from(self, &p).await;
                        }
                        if topic.name == crate::coordinator::transactions::TRANSACTION_TOPIC {
                            crate::coordinator::transactions::rebuild_from(self, &p).await;
                        }
                        self.offline
                            .borrow_mut()
                            .remove(&(topic.name.clone(), i as i32));
                    }
                    Err(e) => {
                        log::error!(
                            "shard {}: cannot open partition {}-{i} at {}: {e}; its requests fail with KAFKA_STORAGE_ERROR",
                            self.id, topic.name, dir.display()
                        );
                        self.offline
                            .borrow_mut()
                            .insert((topic.name.clone(), i as i32));
                    }
                }
            }
        }
    }

    /// Resolves every topic's configs for `image`; partitions whose log settings changed take
    /// the new ones now (changes apply without a restart).
    fn install_topic_configs(&self, image: &MetadataImage) {
        let old = self.topic_configs.borrow().clone();
        let mut next = HashMap::with_capacity(image.topics.len());
        for t in image.topics.values() {
            let resolved = image.topic_config(t, &self.config);
            let rc = match old.get(&t.name) {
                Some(prev) if **prev == resolved => prev.clone(),
                _ => Rc::new(resolved),
            };
            next.insert(t.name.clone(), rc);
        }
        *self.topic_configs.borrow_mut() = Rc::new(next);
        for p in self.owned_partitions() {
            if let Some(c) = self.topic_config(&p.topic) {
                p.log.set_config(self.log_config(&c));
            }
        }
    }

    /// Removes a deleted topic's partition. Its directory is first renamed to
    /// `<topic>-<p>.<topic id>-delete` (synchronously, before anything can reopen the name), so a
    /// topic re-created with the same name starts empty even if the removal below is interrupted
    /// or the partition is still busy; leftover `-delete` directories are removed at the next start.
    async fn remove_deleted(&self, p: Rc<Partition>) {
        let dir = self.partition_dir(&p.topic, p.index);
        let doomed = self.config.data_dir.join(crate::metadata::deleted_dir_name(
            &p.topic,
            p.index,
            &p.topic_id,
        ));
        match std::fs::rename(&dir, &doomed) {
            Ok(()) => {
                if let Err(e) = crate::io::sync_dir(&self.config.data_dir) {
                    log::warn!("shard {}: {e}", self.id);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                log::error!(
                    "shard {}: cannot rename {} for deletion: {e}",
                    self.id,
                    dir.display()
                );
                return;
            }
        }
        // Let in-flight appends settle (they write to the renamed files) before removing them.
        self.commit.wait_round(self.commit_covering(&p)).await;
        let name = format!("{}-{}", p.topic, p.index);
        if Rc::try_unwrap(p).is_err() {
            log::warn!(
                "shard {}: deleted partition {name} still busy; {} is removed at the next start",
                self.id,
                doomed.display()
            );
            return;
        }
        let removed = glommio::executor()
            .spawn_blocking(move || std::fs::remove_dir_all(&doomed).map(|_| doomed))
            .await;
        match removed {
            Ok(doomed) => log::info!(
                "shard {}: deleted partition {name} ({})",
                self.id,
                doomed.display()
            ),
            Err(e) => log::warn!(
                "shard {}: removing deleted partition {name}: {e}; retried at the next start",
                self.id
            ),
        }
    }

    /// The flush round that will make everything already appended to `p` durable.
    pub fn commit_covering(&self, p: &Partition) -> u64 {
        self.commit.covering_round(p.dirty.get())
    }

    /// Appends validated batches to a partition this shard owns (synchronously, in call order)
    /// and registers them with the group commit. Returns the offsets and the round to wait for.
    pub fn append_local(
        self: &Rc<Self>,
        p: &Rc<Partition>,
        batches: &[(Bytes, BatchHeader)],
    ) -> Result<(Appended, u64), StorageError> {
        let now = now_ms();
        let mut first: Option<Appended> = None;
        let mut last_offset = -1;
        let mut any_new = false;
        for (bytes, header) in batches {
            let out = p.log.append(bytes, header, p.leader_epoch, now)?;
            if !out.duplicate {
                any_new = true;
                self.probe.produced(
                    &p.topic,
                    p.topic_id,
                    p.index,
                    bytes.len() as u64,
                    u64::try_from(header.records_count).unwrap_or(0),
                );
            }
            last_offset = out.last_offset;
            if first.is_none() {
                first = Some(Appended {
                    base_offset: out.base_offset,
                    last_offset: out.last_offset,
                    log_append_time: out.log_append_time,
                });
            }
        }
        let mut appended = first.unwrap_or(Appended {
            base_offset: -1,
            last_offset: -1,
            log_append_time: -1,
        });
        appended.last_offset = last_offset;
        let round = if any_new {
            self.commit.mark_dirty(p)
        } else {
            self.commit_covering(p)
        };
        Ok((appended, round))
    }

    /// Waits (bounded by `timeout`) until any of `parts` has data at or beyond the given offset
    /// below its high watermark.
    pub async fn wait_for_data(self: &Rc<Self>, parts: Vec<(String, i32, i64)>, timeout: Duration) {
        let ready = |s: &Shard| {
            parts.iter().any(|(t, i, off)| {
                s.partition(t, *i)
                    .map(|p| p.log.high_watermark() > *off)
                    .unwrap_or(false)
            })
        };
        if ready(self) || timeout.is_zero() {
            return;
        }
        let deadline = std::time::Instant::now() + timeout;
        let owned: Vec<Rc<Partition>> = parts
            .iter()
            .filter_map(|(t, i, _)| self.partition(t, *i))
            .collect();
        while !ready(self) && !self.stopping.get() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return;
            }
            let waits = owned.iter().map(|p| Box::pin(p.data_arrived.notified()));
            let mut all: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + '_>>> = waits
                .map(|w| w as std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>)
                .collect();
            all.push(Box::pin(glommio::timer::sleep(left)));
            all.push(Box::pin(self.stop_requested.notified()));
            futures::future::select_all(all).await;
        }
    }
}

/// Starts one pinned executor per configured core and blocks until all have shut down.
pub fn run_broker(config: BrokerConfig) -> Result<(), BootError> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| BootError::DataDir(config.data_dir.display().to_string(), e))?;
    ensure_address_free(config.listen)?;
    let config = Arc::new(config);
    let lifecycle = Arc::new(Lifecycle::from_env());
    let nr = config.cores.cpus.len();
    let mesh = MeshBuilder::<Job, _>::full(nr, config.mailbox_capacity);
    let (stop_senders, stop_receivers): (Vec<_>, Vec<_>) = (0..nr)
        .map(|_| futures::channel::oneshot::channel::<()>())
        .unzip();
    let stop = StopAll::new(stop_senders);
    let mut handles = Vec::new();
    for ((id, &cpu), stop_rx) in config.cores.cpus.iter().enumerate().zip(stop_receivers) {
        let config = config.clone();
        let mesh = mesh.clone();
        let lifecycle = lifecycle.clone();
        let stop = stop.clone();
        let handle = LocalExecutorBuilder::new(Placement::Fixed(cpu))
            .name(&format!("shard-{id}"))
            .io_memory(config.io_buffer_bytes)
            .spawn(move || async move {
                let r = shard_main(id, cpu, config, lifecycle, mesh, stop_rx).await;
                if r.is_err() {
                    // The other shards would wait for a signal that never comes.
                    stop.send();
                }
                r
            })
            .map_err(|e| BootError::Executor(id, e.to_string()))?;
        handles.push(handle);
    }
    install_signal_thread(stop, lifecycle)?;
    let mut result = Ok(());
    for (id, h) in handles.into_iter().enumerate() {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => result = Err(e),
            Err(e) => result = Err(BootError::Executor(id, e.to_string())),
        }
    }
    result
}

/// Refuses to start when another process already listens on `addr`. Every shard binds with
/// SO_REUSEPORT, which would otherwise quietly join the other process's group and have the kernel
/// split clients between two brokers. A plain bind conflicts with any listener on the port.
///
/// The listening socket of a broker killed a moment ago outlives its process: the kernel tears
/// an io_uring instance down in the background, after the requests it still holds (an fdatasync
/// in an io-wq worker, a parked accept) finish or are cancelled — seen to take over 2 s on a busy
/// disk. So a conflict is retried for up to [`ADDRESS_RELEASE_GRACE`] (saying so in the log)
/// before giving up.
fn ensure_address_free(addr: std::net::SocketAddr) -> Result<(), BootError> {
    let started = std::time::Instant::now();
    let mut announced = false;
    loop {
        match std::net::TcpListener::bind(addr) {
            Ok(probe) => {
                drop(probe);
                return Ok(());
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && started.elapsed() < ADDRESS_RELEASE_GRACE =>
            {
                if !announced && started.elapsed() >= Duration::from_millis(500) {
                    log::info!(
                        "{addr} is in use; waiting up to {} s for it to be released",
                        ADDRESS_RELEASE_GRACE.as_secs()
                    );
                    announced = true;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => {
                return Err(BootError::Listen(
                    0,
                    addr.to_string(),
                    format!("{e} (is another broker listening there?)"),
                ))
            }
        }
    }
}

/// Sends systemd's keep-alive every `every` while every shard still answers its mailbox: a
/// shard whose executor hangs stops the pings and systemd restarts the broker.
fn spawn_watchdog(shard: &Rc<Shard>, every: Duration) {
    let shard = shard.clone();
    glommio::spawn_local(async move {
        loop {
            let mut alive = true;
            for target in 0..shard.nr_shards {
                let answered = shard
                    .mailbox
                    .call(&shard, target, |_| async {})
                    .await
                    .is_ok();
                alive &= answered;
            }
            if shard.stopping.get() {
                return;
            }
            if alive {
                shard.lifecycle.watchdog_ping();
            } else {
                log::error!("watchdog: a shard did not answer; no keep-alive sent to systemd");
            }
            glommio::timer::sleep(every).await;
        }
    })
    .detach();
}

/// How long start-up waits for a listen address still held by a dying process.
const ADDRESS_RELEASE_GRACE: Duration = Duration::from_secs(10);

/// Tells every shard to stop (each once): on SIGTERM/SIGINT, or when a shard's boot failed.
#[derive(Clone)]
struct StopAll(Arc<std::sync::Mutex<Vec<futures::channel::oneshot::Sender<()>>>>);

impl StopAll {
    fn new(senders: Vec<futures::channel::oneshot::Sender<()>>) -> StopAll {
        StopAll(Arc::new(std::sync::Mutex::new(senders)))
    }

    fn send(&self) {
        let senders = match self.0.lock() {
            Ok(mut s) => std::mem::take(&mut *s),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        };
        for tx in senders {
            // A shard that already ended dropped its receiver.
            let _ = tx.send(());
        }
    }
}

fn install_signal_thread(stop: StopAll, lifecycle: Arc<Lifecycle>) -> Result<(), BootError> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .map_err(|e| BootError::Signals(e.to_string()))?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                log::info!("received signal {sig}, shutting down");
                lifecycle.mark_stopping();
                stop.send();
            }
        })
        .map_err(|e| BootError::Signals(e.to_string()))?;
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("cannot create data directory {0}: {1}")]
    DataDir(String, std::io::Error),
    #[error("shard {0}: {1}")]
    Executor(usize, String),
    #[error("signal handling: {0}")]
    Signals(String),
    #[error("shard {0} could not join the mailbox mesh")]
    Mesh(usize),
    #[error("shard {0}: mesh peer id {1} differs from the shard id")]
    MeshOrder(usize, usize),
    #[error("metadata: {0}")]
    Metadata(String),
    #[error("shard {0}: {1}; not starting (a start reads the journal again)")]
    Journal(usize, String),
    #[error("shard {0}: cannot listen on {1}: {2}")]
    Listen(usize, String, String),
}

/// Faults in the cache's worth of heap before the shard serves (`cache.pretouch`; why:
/// `memory::pretouch_heap`), where the allocator keeps freed memory for reuse.
fn pretouch_cache(id: usize, bytes: usize) {
    if !crate::allocator::keeps_freed_memory() {
        log::info!(
            "shard {id}: cache.pretouch skipped: the allocator returns freed memory to the system (MIMALLOC_PURGE_DELAY is 0 or more)"
        );
        return;
    }
    let started = std::time::Instant::now();
    let touched = crate::memory::pretouch_heap(bytes);
    log::info!(
        "shard {id}: cache.pretouch: {:.0} MiB of heap faulted in, {:.1} ms",
        touched as f64 / (1 << 20) as f64,
        started.elapsed().as_secs_f64() * 1e3
    );
}

async fn shard_main(
    id: usize,
    cpu: usize,
    config: Arc<BrokerConfig>,
    lifecycle: Arc<Lifecycle>,
    mesh: glommio::channels::channel_mesh::FullMesh<Job>,
    stop_rx: futures::channel::oneshot::Receiver<()>,
) -> Result<(), BootError> {
    let (senders, receivers) = mesh.join().await.map_err(|_| BootError::Mesh(id))?;
    if senders.peer_id() != id {
        return Err(BootError::MeshOrder(id, senders.peer_id()));
    }
    let nr_shards = config.cores.cpus.len();
    let workers = config.io_file_workers_per_core;
    if workers > 0 {
        // A slower start is all a refusal costs: the kernel's limit stays.
        match crate::io::workers::raise_bounded_workers(workers) {
            Ok((was, _)) => log::debug!("shard {id}: io_uring file workers {was} -> {workers}"),
            Err(e) => log::warn!(
                "shard {id}: io_uring file workers not raised to {workers} (io.file.workers.per.core): {e}; fdatasyncs queue behind the kernel's default"
            ),
        }
    }
    // Every segment, index and journal write waits for room in this half; the other half is
    // left to reads (fetches from disk, read-ahead), which take their buffers unbounded.
    crate::io::dma::limit_write_buffers(config.io_buffer_bytes / 2);
    let controller = if id == 0 {
        Some(Controller::load(&config).map_err(|e| BootError::Metadata(e.to_string()))?)
    } else {
        None
    };
    if config.cache_pretouch {
        pretouch_cache(id, config.cache_bytes_per_shard);
    }
    let pacer = Rc::new(IoPacer::new(config.log_cleaner_io_max_bytes_per_second));
    let probe = Rc::new(ShardProbe::new(config.metrics_collect));
    let shard = Rc::new(Shard {
        id,
        nr_shards,
        cpu,
        cache: Rc::new(BatchCache::new(config.cache_bytes_per_shard)),
        config: config.clone(),
        mailbox: Mailbox::new(senders),
        commit: GroupCommit::new(pacer.clone(), probe.clone()),
        probe,
        pacer,
        controller,
        image: RefCell::new(Arc::new(MetadataImage::default())),
        topic_configs: RefCell::new(Rc::new(HashMap::new())),
        partitions: RefCell::new(HashMap::new()),
        offline: RefCell::new(Default::default()),
        stopping: Cell::new(false),
        stop_requested: Notify::new(),
        disk_low: Cell::new(false),
        request_budget: config
            .queued_max_request_bytes
            .map(crate::server::request_budget::RequestBudget::new),
        offsets: RefCell::new(Default::default()),
        groups: RefCell::new(Default::default()),
        consumer_groups: RefCell::new(Default::default()),
        lifecycle,
        journal_replay: RefCell::new(Default::default()),
        journal_held: RefCell::new(Default::default()),
        txn: RefCell::new(crate::coordinator::transactions::TxnRuntime::new(
            crate::txn::TxnConfig {
                max_timeout_ms: config.transaction_max_timeout_ms,
                id_expiration_ms: config.transactional_id_expiration_ms,
                ..Default::default()
            },
        )),
    });
    // Before anything can open a partition (the controller's image comes by the mailbox).
    journal::load(&shard).await;
    mailbox::spawn_receivers(&shard, receivers);
    crate::coordinator::groups::spawn_offsets_expiry(&shard);
    let background = background::task_queue(config.background_shares);
    if id == 0 {
        crate::metrics::http::start(&shard, background);
        // One trimmer for the process: malloc_trim releases every thread's arena.
        background::spawn_heap_trim(&shard, background);
    }
    background::spawn_retention(&shard, background);
    background::spawn_compaction(&shard, background);
    background::spawn_producer_expiry(&shard, background);
    background::spawn_disk_guard(&shard);
    let committer = {
        let run = || {
            let shard = shard.clone();
            async move { shard.commit.run().await }
        };
        match glommio::spawn_local_into(run(), commit::task_queue()) {
            Ok(task) => task,
            Err(e) => {
                log::warn!("shard {id}: committer queue: {e}; running it with the requests");
                glommio::spawn_local(run())
            }
        }
    };

    if id == 0 {
        // Controller boot: apply the stored image everywhere, then open the doors everywhere.
        let image = shard
            .controller
            .as_ref()
            .map(|c| c.image())
            .unwrap_or_default();
        for target in 0..nr_shards {
            let img = image.clone();
            let r = shard
                .mailbox
                .call(&shard, target, move |s| {
                    let s = s.clone();
                    async move { s.apply_image(img).await }
                })
                .await;
            if r.is_err() {
                return Err(BootError::Mesh(target));
            }
        }
        // Every partition has its journal records back: the journals start a new epoch.
        let mut unreplayed = 0;
        for target in 0..nr_shards {
            let r = shard
                .mailbox
                .call(&shard, target, |s| {
                    let r = (journal::replay_failures(s), journal::unreadable(s));
                    async move { r }
                })
                .await;
            let (failures, unreadable) = r.map_err(|_| BootError::Mesh(target))?;
            if let Some(why) = unreadable {
                log::error!("shard {target}: {why}");
                return Err(BootError::Journal(target, why));
            }
            unreplayed += failures;
        }
        for target in 0..nr_shards {
            let r = shard
                .mailbox
                .call(&shard, target, move |s| {
                    let s = s.clone();
                    async move { journal::start(&s, unreplayed > 0).await }
                })
                .await;
            if r.is_err() {
                return Err(BootError::Mesh(target));
            }
        }
        for target in 0..nr_shards {
            let r = shard
                .mailbox
                .call(&shard, target, move |s| {
                    let s = s.clone();
                    async move { crate::server::listener::start(&s).map_err(|e| e.to_string()) }
                })
                .await;
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    log::error!("shard {target}: {e}");
                    return Err(BootError::Listen(target, config.listen.to_string(), e));
                }
                Err(_) => return Err(BootError::Mesh(target)),
            }
        }
        log::info!(
            "broker ready: {} shard(s), listening on {}, data in {}",
            nr_shards,
            config.listen,
            config.data_dir.display()
        );
        shard.lifecycle.mark_ready(&format!(
            "serving on {} with {nr_shards} shard(s)",
            config.listen
        ));
        if let Some(every) = shard.lifecycle.watchdog_interval() {
            spawn_watchdog(&shard, every);
        }
    }

    // Wait for SIGTERM/SIGINT (or the signal thread going away).
    let _ = stop_rx.await;
    shard.stopping.set(true);
    shard.stop_requested.notify_all();
    crate::server::listener::stop(&shard);
    crate::metrics::http::stop();
    // Give connections a moment to hand their last appends to the log, then flush everything.
    glommio::timer::sleep(Duration::from_millis(50)).await;
    shard.commit.stop();
    committer.await;
    shard.commit.round().await;
    let parts: Vec<Rc<Partition>> = shard
        .partitions
        .borrow_mut()
        .drain()
        .flat_map(|(_, v)| v.into_iter().flatten())
        .collect();
    for p in parts {
        let name = format!("{}-{}", p.topic, p.index);
        match Rc::try_unwrap(p) {
            Ok(p) => {
                if let Err(e) = p.log.close().await {
                    log::error!("shard {id}: closing {name}: {e}");
                }
            }
            Err(p) => {
                // A request still holds it: its data is already flushed above.
                p.flush().await;
            }
        }
    }
    log::info!("shard {id} (core {cpu}) stopped");
    Ok(())
}
