//! The shard journal: one file per shard that makes small appends durable with one fdatasync.
//!
//! Why: a group-commit round that fdatasyncs every dirty partition's segment file pays one
//! device flush plus one inode write per file. Over 1,000 partitions that is ~30 ms per round
//! on the development VM, for a few KiB each; over 16 it is the slowest of 16 flushes. A round
//! instead writes the new bytes of its small partitions once more, as one entry, into this
//! journal and fdatasyncs only the journal (an overwrite of blocks written before: no metadata,
//! one flush). Their segment files still get the bytes (O_DIRECT, not synced) and are synced
//! later, all at once, by a checkpoint; after a crash, recovery replays the entries newer than
//! the last checkpoint into the partitions whose files lost them.
//!
//! File layout (`<data dir>/shard-<id>.journal`, created full size and zero-filled once so
//! every later write is an overwrite):
//! ```text
//! page 0, page 1   checkpoint slots, written alternately; the valid one with the higher
//!                  counter is current
//!   0  magic "ODJC"   4  crc32c of bytes 8..48   8 counter   16 epoch   24 start seq
//!  32  start pos     40  file bytes
//! page 2 ..        the ring of entries, each starting on a page
//!   0  magic "ODJE"   4  crc32c of bytes 8..32+payload   8 epoch   16 seq
//!  24  payload bytes 28  record count   32 records:
//!        topic id [16]  partition i32  base offset i64  data bytes u32  data (RecordBatches)
//! ```
//! Integers are little endian.
//!
//! Invariants. Within one epoch every sequence number is written once, at the position after
//! the previous entry or, when it does not fit before the end of the file, at the ring's start
//! (the reader tries both). An entry is never written over a live one (newer than the current
//! checkpoint's start). The epoch changes every time the journal is reopened, so entries of an
//! earlier run never pass for current ones. An entry whose fdatasync returned is durable, and so
//! is every entry before it (rounds complete in order). Recovery reads from the checkpoint's
//! start until the first entry that is missing, torn (CRC) or of another epoch or sequence.
//!
//! Runs on its shard (`!Send`); every file operation goes through the shard's [`Disk`], so the
//! fake disk's power cuts test it like the segment files.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;

use crate::io::disk::{Disk, SegmentFile};
use crate::io::dma::{align_up, PAGE_BYTES};
use crate::metadata::TopicId;

use super::StorageError;

const CHECKPOINT_MAGIC: &[u8; 4] = b"ODJC";
const ENTRY_MAGIC: &[u8; 4] = b"ODJE";
const CHECKPOINT_BYTES: usize = 48;
const ENTRY_HEADER_BYTES: usize = 32;
/// Bytes in front of every record's data in an entry.
pub const RECORD_HEADER_BYTES: usize = 32;
/// Where the ring of entries starts: after the two checkpoint slots.
const RING_START: u64 = 2 * PAGE_BYTES;
/// Smallest journal: the slots and room for a few entries.
pub const JOURNAL_MIN_BYTES: u64 = RING_START + 16 * PAGE_BYTES;
/// Zero-fill in writes of this size when the file is created.
const FILL_CHUNK_BYTES: usize = 1 << 20;

/// The journal file of shard `shard` in `data_dir`.
pub fn journal_path(data_dir: &Path, shard: usize) -> PathBuf {
    data_dir.join(format!("shard-{shard}.journal"))
}

/// One partition's new bytes in an entry: whole RecordBatches, offsets from `base_offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalRecord {
    pub topic_id: TopicId,
    pub partition: i32,
    pub base_offset: i64,
    pub data: Bytes,
}

/// A record to write, its data in pieces (the segment's pending batches, not copied here).
pub struct RecordParts<'a> {
    pub topic_id: TopicId,
    pub partition: i32,
    pub base_offset: i64,
    pub parts: Vec<&'a [u8]>,
}

impl RecordParts<'_> {
    fn data_bytes(&self) -> usize {
        self.parts.iter().map(|p| p.len()).sum()
    }
}

/// The current checkpoint: entries from `start_seq` on (at `start_pos`, or the ring's start if
/// it did not fit) are live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Checkpoint {
    counter: u64,
    epoch: u64,
    start_seq: u64,
    start_pos: u64,
    file_bytes: u64,
}

impl Checkpoint {
    fn encode(&self) -> [u8; CHECKPOINT_BYTES] {
        let mut b = [0u8; CHECKPOINT_BYTES];
        b[0..4].copy_from_slice(CHECKPOINT_MAGIC);
        b[8..16].copy_from_slice(&self.counter.to_le_bytes());
        b[16..24].copy_from_slice(&self.epoch.to_le_bytes());
        b[24..32].copy_from_slice(&self.start_seq.to_le_bytes());
        b[32..40].copy_from_slice(&self.start_pos.to_le_bytes());
        b[40..48].copy_from_slice(&self.file_bytes.to_le_bytes());
        let crc = crc32c::crc32c(&b[8..]);
        b[4..8].copy_from_slice(&crc.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<Checkpoint> {
        let b = b.get(..CHECKPOINT_BYTES)?;
        if &b[0..4] != CHECKPOINT_MAGIC || u32_at(b, 4)? != crc32c::crc32c(&b[8..]) {
            return None;
        }
        Some(Checkpoint {
            counter: u64_at(b, 8)?,
            epoch: u64_at(b, 16)?,
            start_seq: u64_at(b, 24)?,
            start_pos: u64_at(b, 32)?,
            file_bytes: u64_at(b, 40)?,
        })
    }

    fn slot_pos(&self) -> u64 {
        (self.counter % 2) * PAGE_BYTES
    }
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// What [`recover`] found: the live records, in the order they were written, and the state the
/// reopened journal continues from.
#[derive(Debug, Default)]
pub struct Recovered {
    pub records: Vec<JournalRecord>,
    /// Entries read (each a group-commit round).
    pub entries: u64,
    last: Option<Checkpoint>,
}

impl Recovered {
    /// The records, leaving what [`Journal::open`] continues from.
    pub fn take_records(&mut self) -> Vec<JournalRecord> {
        std::mem::take(&mut self.records)
    }
}

/// Reads the live entries of the journal at `path` (nothing if it does not exist or was never
/// finished). Changes nothing: the caller replays the records, makes the partitions durable,
/// then [`Journal::open`]s the journal, which starts a new epoch.
pub async fn recover<D: Disk>(disk: &D, path: &Path) -> Result<Recovered, StorageError> {
    if !disk.exists(path) {
        return Ok(Recovered::default());
    }
    let file = disk.open(path, false).await?;
    let result = read_live(&file).await;
    file.close().await?;
    result
}

async fn read_live<F: SegmentFile>(file: &F) -> Result<Recovered, StorageError> {
    let size = file.size().await?;
    let slots = file.read(0, RING_START as usize).await?;
    let newest = [0usize, PAGE_BYTES as usize]
        .iter()
        .filter_map(|&at| Checkpoint::decode(slots.get(at..)?))
        .max_by_key(|c| c.counter);
    // No valid slot: the file was being created when the process stopped (entries are only
    // ever written after a checkpoint is durable), so there is nothing to replay.
    let Some(cp) = newest else {
        return Ok(Recovered::default());
    };
    let mut out = Recovered {
        last: Some(cp),
        ..Recovered::default()
    };
    let end = size.min(cp.file_bytes);
    let (mut pos, mut seq) = (cp.start_pos, cp.start_seq);
    loop {
        let found = match read_entry(file, pos, end, cp.epoch, seq).await? {
            Some(e) => Some((pos, e)),
            None if pos != RING_START => read_entry(file, RING_START, end, cp.epoch, seq)
                .await?
                .map(|e| (RING_START, e)),
            None => None,
        };
        let Some((at, (records, len))) = found else {
            break;
        };
        out.records.extend(records);
        out.entries += 1;
        pos = at + len;
        seq += 1;
    }
    Ok(out)
}

/// The entry at `pos` if it is whole and is entry `seq` of `epoch`: its records and its length
/// on disk (page-aligned).
async fn read_entry<F: SegmentFile>(
    file: &F,
    pos: u64,
    end: u64,
    epoch: u64,
    seq: u64,
) -> Result<Option<(Vec<JournalRecord>, u64)>, StorageError> {
    if pos < RING_START || pos + PAGE_BYTES > end {
        return Ok(None);
    }
    let head = file.read(pos, PAGE_BYTES as usize).await?;
    let (Some(magic), Some(crc), Some(e), Some(s), Some(payload), Some(count)) = (
        head.get(0..4),
        u32_at(&head, 4),
        u64_at(&head, 8),
        u64_at(&head, 16),
        u32_at(&head, 24),
        u32_at(&head, 28),
    ) else {
        return Ok(None);
    };
    if magic != ENTRY_MAGIC || e != epoch || s != seq {
        return Ok(None);
    }
    let total = ENTRY_HEADER_BYTES as u64 + payload as u64;
    if pos + total > end {
        return Ok(None);
    }
    let whole = if total <= head.len() as u64 {
        head.slice(..total as usize)
    } else {
        let rest = file
            .read(
                pos + head.len() as u64,
                (total - head.len() as u64) as usize,
            )
            .await?;
        let mut b = Vec::with_capacity(total as usize);
        b.extend_from_slice(&head);
        b.extend_from_slice(&rest);
        Bytes::from(b)
    };
    if whole.len() as u64 != total || crc32c::crc32c(&whole[8..]) != crc {
        return Ok(None);
    }
    let mut records = Vec::with_capacity(count as usize);
    let mut at = ENTRY_HEADER_BYTES;
    for _ in 0..count {
        let Some(h) = whole.get(at..at + RECORD_HEADER_BYTES) else {
            return Ok(None);
        };
        let (Ok(topic_id), Some(partition), Some(base), Some(len)) = (
            <TopicId>::try_from(&h[0..16]),
            u32_at(h, 16),
            u64_at(h, 20),
            u32_at(h, 28),
        ) else {
            return Ok(None);
        };
        let data_at = at + RECORD_HEADER_BYTES;
        if data_at + len as usize > whole.len() {
            return Ok(None);
        }
        records.push(JournalRecord {
            topic_id,
            partition: partition as i32,
            base_offset: base as i64,
            data: whole.slice(data_at..data_at + len as usize),
        });
        at = data_at + len as usize;
    }
    Ok(Some((records, align_up(total))))
}

/// Where entries sit in the ring: the live ones (newer than the durable checkpoint) and where
/// the next one goes.
struct Ring {
    next_seq: u64,
    /// Where the next entry goes if it fits before the end of the file.
    write_pos: u64,
    /// Live entries, oldest first: (seq, pos, bytes on disk).
    live: VecDeque<(u64, u64, u64)>,
}

/// The writer side of a shard's journal (see the module docs).
pub struct Journal<D: Disk> {
    file: Rc<D::File>,
    path: PathBuf,
    file_bytes: u64,
    epoch: u64,
    checkpoint_counter: Cell<u64>,
    ring: RefCell<Ring>,
}

/// An entry written by [`Journal::write_entry`]: durable once a [`Journal::sync`] that
/// started after the write returned has returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryTicket {
    pub seq: u64,
}

/// The point a checkpoint will cover up to (see [`Journal::checkpoint_cut`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    seq: u64,
    pos: u64,
}

impl<D: Disk> Journal<D> {
    /// Opens the journal at `path` with `file_bytes` (rounded up to pages) for a new epoch,
    /// after the caller replayed what [`recover`] returned and made it durable: every earlier
    /// entry is dead from here on. Creates and zero-fills the file if it is missing or of
    /// another size.
    pub async fn open(
        disk: &D,
        path: &Path,
        file_bytes: u64,
        recovered: &Recovered,
    ) -> Result<Journal<D>, StorageError> {
        let file_bytes = align_up(file_bytes.max(JOURNAL_MIN_BYTES));
        // The file is kept when it has the configured size and a checkpoint: its old entries
        // are of an older epoch then. Anything else is created anew, zero-filled.
        let reuse = recovered.last.filter(|c| c.file_bytes == file_bytes);
        let mut kept = None;
        if reuse.is_some() && disk.exists(path) {
            let f = disk.open(path, false).await?;
            if f.size().await? == file_bytes {
                kept = Some(f);
            } else {
                f.close().await?;
            }
        }
        let file = match kept {
            Some(f) => f,
            None => create_filled(disk, path, file_bytes).await?,
        };
        let last = recovered.last;
        let counter = last.map_or(1, |c| c.counter + 1);
        let epoch = last.map_or(1, |c| c.epoch + 1);
        let journal = Journal {
            file: Rc::new(file),
            path: path.to_path_buf(),
            file_bytes,
            epoch,
            checkpoint_counter: Cell::new(counter),
            ring: RefCell::new(Ring {
                next_seq: 0,
                write_pos: RING_START,
                live: VecDeque::new(),
            }),
        };
        journal
            .write_checkpoint(Cut {
                seq: 0,
                pos: RING_START,
            })
            .await?;
        Ok(journal)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes of the ring holding live entries.
    pub fn live_bytes(&self) -> u64 {
        self.ring.borrow().live.iter().map(|e| e.2).sum()
    }

    /// Bytes entries can occupy in all.
    pub fn capacity_bytes(&self) -> u64 {
        self.file_bytes - RING_START
    }

    /// Whether an entry of `records` fits now (the caller falls back to syncing the segment
    /// files when it does not).
    pub fn fits(&self, records: &[RecordParts<'_>]) -> bool {
        self.place(entry_len(payload_bytes(records))).is_some()
    }

    /// Where an entry of `len` bytes on disk goes, if there is room.
    fn place(&self, len: u64) -> Option<u64> {
        let ring = self.ring.borrow();
        let end = self.file_bytes;
        match ring.live.front() {
            None if ring.write_pos + len <= end => Some(ring.write_pos),
            None if RING_START + len <= end => Some(RING_START),
            None => None,
            Some(&(_, oldest, _)) if ring.write_pos > oldest => {
                if ring.write_pos + len <= end {
                    Some(ring.write_pos)
                } else if RING_START + len <= oldest {
                    Some(RING_START)
                } else {
                    None
                }
            }
            Some(&(_, oldest, _)) => (ring.write_pos + len <= oldest).then_some(ring.write_pos),
        }
    }

    /// Writes one entry holding `records`; `None` when the ring has no room for it (nothing
    /// written). Not durable until [`Journal::sync`].
    pub async fn write_entry(
        &self,
        records: &[RecordParts<'_>],
    ) -> Result<Option<EntryTicket>, StorageError> {
        let payload = payload_bytes(records);
        let Ok(payload32) = u32::try_from(payload) else {
            return Ok(None);
        };
        let len = entry_len(payload);
        let Some(pos) = self.place(len) else {
            return Ok(None);
        };
        let seq = {
            let mut ring = self.ring.borrow_mut();
            let seq = ring.next_seq;
            ring.next_seq += 1;
            ring.write_pos = pos + len;
            ring.live.push_back((seq, pos, len));
            seq
        };
        let mut header = [0u8; ENTRY_HEADER_BYTES];
        header[0..4].copy_from_slice(ENTRY_MAGIC);
        header[8..16].copy_from_slice(&self.epoch.to_le_bytes());
        header[16..24].copy_from_slice(&seq.to_le_bytes());
        header[24..28].copy_from_slice(&payload32.to_le_bytes());
        header[28..32].copy_from_slice(&(records.len() as u32).to_le_bytes());
        let record_headers: Vec<[u8; RECORD_HEADER_BYTES]> = records
            .iter()
            .map(|r| {
                let mut h = [0u8; RECORD_HEADER_BYTES];
                h[0..16].copy_from_slice(&r.topic_id);
                h[16..20].copy_from_slice(&r.partition.to_le_bytes());
                h[20..28].copy_from_slice(&r.base_offset.to_le_bytes());
                h[28..32].copy_from_slice(&(r.data_bytes() as u32).to_le_bytes());
                h
            })
            .collect();
        let mut crc = crc32c::crc32c(&header[8..]);
        for (r, h) in records.iter().zip(&record_headers) {
            crc = crc32c::crc32c_append(crc, h);
            crc = r.parts.iter().fold(crc, |c, p| crc32c::crc32c_append(c, p));
        }
        header[4..8].copy_from_slice(&crc.to_le_bytes());
        let mut parts: Vec<&[u8]> = Vec::with_capacity(1 + records.len() * 2);
        parts.push(&header);
        for (r, h) in records.iter().zip(&record_headers) {
            parts.push(h);
            parts.extend(r.parts.iter().copied());
        }
        self.file.write_padded_parts(pos, &parts).await?;
        Ok(Some(EntryTicket { seq }))
    }

    /// Makes every entry written so far durable.
    pub async fn sync(&self) -> Result<(), StorageError> {
        self.file.fdatasync().await?;
        Ok(())
    }

    /// The point a checkpoint started now covers: every entry written so far. The caller
    /// fdatasyncs every segment file those entries went to, then [`Journal::commit_checkpoint`].
    pub fn checkpoint_cut(&self) -> Cut {
        let ring = self.ring.borrow();
        Cut {
            seq: ring.next_seq,
            pos: ring.write_pos,
        }
    }

    /// Makes the entries before `cut` dead, durably, and frees their space.
    pub async fn commit_checkpoint(&self, cut: Cut) -> Result<(), StorageError> {
        // The first entry at or after the cut may already be written: point at it exactly.
        let at = {
            let ring = self.ring.borrow();
            ring.live
                .iter()
                .find(|e| e.0 == cut.seq)
                .map_or(cut, |e| Cut { seq: e.0, pos: e.1 })
        };
        self.write_checkpoint(at).await?;
        let mut ring = self.ring.borrow_mut();
        while ring.live.front().is_some_and(|e| e.0 < cut.seq) {
            ring.live.pop_front();
        }
        Ok(())
    }

    async fn write_checkpoint(&self, at: Cut) -> Result<(), StorageError> {
        let counter = self.checkpoint_counter.get();
        self.checkpoint_counter.set(counter + 1);
        let cp = Checkpoint {
            counter,
            epoch: self.epoch,
            start_seq: at.seq,
            start_pos: at.pos,
            file_bytes: self.file_bytes,
        };
        self.file
            .write_padded_parts(cp.slot_pos(), &[&cp.encode()])
            .await?;
        self.file.fdatasync().await?;
        Ok(())
    }

    /// Closes the file (shutdown; the entries stay for the next [`recover`]).
    pub async fn close(self) -> Result<(), StorageError> {
        if let Ok(f) = Rc::try_unwrap(self.file) {
            f.close().await?;
        }
        Ok(())
    }
}

/// Bytes after an entry's header for `records`.
fn payload_bytes(records: &[RecordParts<'_>]) -> usize {
    records
        .iter()
        .map(|r| RECORD_HEADER_BYTES + r.data_bytes())
        .sum()
}

/// Bytes on disk of an entry with `payload` bytes after its header.
fn entry_len(payload: usize) -> u64 {
    align_up((ENTRY_HEADER_BYTES + payload) as u64)
}

/// Creates the file at full size, zero-filled and durable (entry writes then never change its
/// metadata), and its directory entry.
async fn create_filled<D: Disk>(
    disk: &D,
    path: &Path,
    file_bytes: u64,
) -> Result<D::File, StorageError> {
    let file = disk.create_truncate(path).await?;
    let filled = async {
        let zeros = vec![0u8; FILL_CHUNK_BYTES];
        let mut pos = 0u64;
        while pos < file_bytes {
            let n = (file_bytes - pos).min(FILL_CHUNK_BYTES as u64) as usize;
            file.write_padded(pos, &zeros[..n]).await?;
            pos += n as u64;
        }
        file.fdatasync().await?;
        if let Some(dir) = path.parent() {
            disk.sync_dir(dir)?;
        }
        Ok::<(), StorageError>(())
    };
    if let Err(e) = filled.await {
        // A full disk, say: do not leave a partial file taking the space.
        let _ = file.close().await;
        let _ = disk.remove_file(path);
        return Err(e);
    }
    Ok(file)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::io::fake_disk::{FakeDisk, Rng};
    use crate::io::test_executor::on_executor as run;

    /// Where the newest live entry starts (if any) and where the next one goes if it fits
    /// before the end of the file: the storage fault-injection runs count wraps with it.
    pub(crate) fn ring_positions<D: Disk>(j: &Journal<D>) -> (Option<u64>, u64) {
        let ring = j.ring.borrow();
        (ring.live.back().map(|e| e.1), ring.write_pos)
    }

    /// Where the ring of entries starts.
    pub(crate) const RING_START_BYTES: u64 = RING_START;

    fn root() -> PathBuf {
        PathBuf::from("/data")
    }

    fn record(partition: i32, base_offset: i64, len: usize, fill: u8) -> JournalRecord {
        JournalRecord {
            topic_id: [partition as u8; 16],
            partition,
            base_offset,
            data: Bytes::from(vec![fill; len]),
        }
    }

    /// Writes one entry of `records`, data split in two pieces as the segment's batches are.
    async fn write(j: &Journal<FakeDisk>, records: &[JournalRecord]) -> Option<EntryTicket> {
        let parts: Vec<RecordParts<'_>> = records
            .iter()
            .map(|r| {
                let half = r.data.len() / 2;
                RecordParts {
                    topic_id: r.topic_id,
                    partition: r.partition,
                    base_offset: r.base_offset,
                    parts: vec![&r.data[..half], &r.data[half..]],
                }
            })
            .collect();
        j.write_entry(&parts).await.expect("write entry")
    }

    async fn fresh(disk: &FakeDisk, bytes: u64) -> Journal<FakeDisk> {
        let path = journal_path(&root(), 0);
        let rec = recover(disk, &path).await.expect("recover");
        assert!(rec.records.is_empty());
        Journal::open(disk, &path, bytes, &rec).await.expect("open")
    }

    #[test]
    fn synced_entries_come_back_in_order() {
        run(|| async {
            let disk = FakeDisk::new(1, &root());
            let j = fresh(&disk, 1 << 20).await;
            let a = vec![record(0, 0, 100, 1), record(1, 5, 5000, 2)];
            let b = vec![record(0, 3, 10, 3)];
            assert_eq!(write(&j, &a).await, Some(EntryTicket { seq: 0 }));
            assert_eq!(write(&j, &b).await, Some(EntryTicket { seq: 1 }));
            j.sync().await.unwrap();
            disk.power_cut_worst();
            let rec = recover(&disk, j.path()).await.unwrap();
            assert_eq!(rec.entries, 2);
            assert_eq!(rec.records, [a, b].concat());
        });
    }

    #[test]
    fn an_unsynced_entry_is_lost_whole_and_the_synced_ones_stay() {
        run(|| async {
            let disk = FakeDisk::new(2, &root());
            let j = fresh(&disk, 1 << 20).await;
            let a = vec![record(0, 0, 100, 1)];
            write(&j, &a).await.unwrap();
            j.sync().await.unwrap();
            write(&j, &[record(0, 1, 9000, 2)]).await.unwrap();
            disk.power_cut_worst();
            let rec = recover(&disk, j.path()).await.unwrap();
            assert_eq!(rec.records, a);
        });
    }

    #[test]
    fn a_checkpoint_makes_earlier_entries_dead_and_a_reopen_starts_a_new_epoch() {
        run(|| async {
            let disk = FakeDisk::new(3, &root());
            let j = fresh(&disk, 1 << 20).await;
            write(&j, &[record(0, 0, 100, 1)]).await.unwrap();
            let cut = j.checkpoint_cut();
            let b = vec![record(0, 1, 50, 2)];
            write(&j, &b).await.unwrap();
            j.sync().await.unwrap();
            j.commit_checkpoint(cut).await.unwrap();
            disk.power_cut_worst();
            let rec = recover(&disk, j.path()).await.unwrap();
            assert_eq!(rec.records, b, "only the entry after the cut is live");
            // Reopened: the replayed entry is dead, new ones count from the ring's start.
            let j = Journal::open(&disk, &journal_path(&root(), 0), 1 << 20, &rec)
                .await
                .unwrap();
            assert!(recover(&disk, j.path()).await.unwrap().records.is_empty());
            let c = vec![record(2, 7, 10, 3)];
            write(&j, &c).await.unwrap();
            j.sync().await.unwrap();
            disk.restart();
            assert_eq!(recover(&disk, j.path()).await.unwrap().records, c);
        });
    }

    #[test]
    fn a_full_ring_refuses_entries_until_a_checkpoint_frees_it_then_wraps() {
        run(|| async {
            let disk = FakeDisk::new(4, &root());
            let j = fresh(&disk, JOURNAL_MIN_BYTES).await;
            assert_eq!(j.capacity_bytes(), 16 * PAGE_BYTES);
            // Each entry takes 3 pages: five fit, the sixth does not.
            let big = |i: i64| vec![record(0, i, 2 * PAGE_BYTES as usize + 100, i as u8)];
            for i in 0..5 {
                assert!(write(&j, &big(i)).await.is_some(), "entry {i}");
            }
            assert_eq!(j.live_bytes(), 15 * PAGE_BYTES);
            assert_eq!(write(&j, &big(5)).await, None);
            j.sync().await.unwrap();
            let cut = j.checkpoint_cut();
            j.commit_checkpoint(cut).await.unwrap();
            assert_eq!(j.live_bytes(), 0);
            // The sixth goes to the ring's start (one page is left at the end), then on.
            for i in 5..9 {
                assert!(write(&j, &big(i)).await.is_some(), "entry {i}");
            }
            j.sync().await.unwrap();
            disk.power_cut_worst();
            let rec = recover(&disk, j.path()).await.unwrap();
            assert_eq!(rec.records, (5..9).flat_map(big).collect::<Vec<_>>());
        });
    }

    #[test]
    fn an_entry_larger_than_the_ring_is_refused() {
        run(|| async {
            let disk = FakeDisk::new(5, &root());
            let j = fresh(&disk, JOURNAL_MIN_BYTES).await;
            let huge = vec![record(0, 0, 16 * PAGE_BYTES as usize, 1)];
            assert_eq!(write(&j, &huge).await, None);
            assert_eq!(j.live_bytes(), 0);
        });
    }

    #[test]
    fn a_damaged_entry_ends_recovery_there() {
        run(|| async {
            let disk = FakeDisk::new(6, &root());
            let j = fresh(&disk, 1 << 20).await;
            let a = vec![record(0, 0, 100, 1)];
            write(&j, &a).await.unwrap();
            write(&j, &[record(0, 1, 100, 2)]).await.unwrap();
            write(&j, &[record(0, 2, 100, 3)]).await.unwrap();
            j.sync().await.unwrap();
            let mut bytes = disk.file_bytes(j.path()).unwrap();
            // One bit of the second entry's data (it starts one page after the first).
            bytes[(RING_START + PAGE_BYTES) as usize + 80] ^= 1;
            assert!(disk.set_file_bytes(j.path(), bytes));
            disk.restart();
            assert_eq!(recover(&disk, j.path()).await.unwrap().records, a);
        });
    }

    #[test]
    fn a_journal_never_finished_replays_nothing_and_is_made_anew() {
        run(|| async {
            let disk = FakeDisk::new(7, &root());
            let path = journal_path(&root(), 0);
            let f = disk.create_truncate(&path).await.unwrap();
            f.write_padded(0, b"not a journal").await.unwrap();
            f.fdatasync().await.unwrap();
            disk.sync_dir(&root()).unwrap();
            let rec = recover(&disk, &path).await.unwrap();
            assert!(rec.records.is_empty());
            let j = Journal::open(&disk, &path, 1 << 20, &rec).await.unwrap();
            let a = vec![record(0, 0, 10, 1)];
            write(&j, &a).await.unwrap();
            j.sync().await.unwrap();
            disk.power_cut_worst();
            assert_eq!(recover(&disk, &path).await.unwrap().records, a);
        });
    }

    #[test]
    fn a_journal_that_cannot_be_filled_is_not_left_behind() {
        run(|| async {
            let disk = FakeDisk::new(8, &root());
            let path = journal_path(&root(), 0);
            disk.fail_once("write", "shard-0.journal");
            let failed = Journal::open(&disk, &path, 1 << 20, &Recovered::default()).await;
            assert!(failed.is_err());
            assert!(!disk.exists(&path), "the partial journal file was removed");
            // The next start creates it.
            Journal::open(&disk, &path, 1 << 20, &Recovered::default())
                .await
                .unwrap();
            assert!(disk.exists(&path));
        });
    }

    /// Seeded runs of writes, syncs, checkpoints and power cuts (random ones: pending pages
    /// land whole, torn or not at all) against a model: after a cut, recovery returns a prefix
    /// of the entries written since the last durable checkpoint that includes every synced one.
    #[test]
    fn power_cuts_keep_every_synced_entry_and_invent_nothing() {
        let mut totals = RunCounts::default();
        for seed in 0..300u64 {
            let c = run(move || async move { power_cut_run(seed).await });
            totals.unsynced_kept += c.unsynced_kept;
            totals.unsynced_lost += c.unsynced_lost;
            totals.refused += c.refused;
            totals.wrapped += c.wrapped;
        }
        // The runs reached the cases that matter, or they prove little.
        assert!(totals.unsynced_kept > 50, "{totals:?}");
        assert!(totals.unsynced_lost > 50, "{totals:?}");
        assert!(totals.refused > 50, "{totals:?}");
        assert!(totals.wrapped > 50, "{totals:?}");
    }

    #[derive(Debug, Default)]
    struct RunCounts {
        /// Recoveries that returned entries beyond the synced ones (their pages landed).
        unsynced_kept: u64,
        /// ...and that lost some written entry.
        unsynced_lost: u64,
        /// Entries refused for want of room.
        refused: u64,
        /// Entries placed at the ring's start after the first lap.
        wrapped: u64,
    }

    async fn power_cut_run(seed: u64) -> RunCounts {
        let mut counts = RunCounts::default();
        let disk = FakeDisk::new(seed, &root());
        let mut rng = Rng::new(seed);
        let path = journal_path(&root(), 0);
        let bytes = JOURNAL_MIN_BYTES + rng.below(8) * PAGE_BYTES;
        let mut j = fresh(&disk, bytes).await;
        // Entries since the last durable checkpoint, how many of them are synced, and a cut in
        // progress (the index of the first entry it keeps).
        let mut written: Vec<Vec<JournalRecord>> = Vec::new();
        let mut synced = 0usize;
        let mut cut: Option<(Cut, usize)> = None;
        let mut next_offset = 0i64;
        for step in 0..200 {
            match rng.below(10) {
                0..=4 => {
                    let n = 1 + rng.below(3) as usize;
                    let records: Vec<JournalRecord> = (0..n)
                        .map(|_| {
                            let len = 1 + rng.below(3 * PAGE_BYTES) as usize;
                            next_offset += 1;
                            record(rng.below(4) as i32, next_offset, len, step as u8)
                        })
                        .collect();
                    let wraps = j.ring.borrow().write_pos > RING_START
                        && j.place(entry_bytes_of(&records)) == Some(RING_START);
                    if write(&j, &records).await.is_some() {
                        written.push(records);
                        counts.wrapped += u64::from(wraps);
                    } else {
                        counts.refused += 1;
                    }
                }
                5 | 6 => {
                    j.sync().await.unwrap();
                    synced = written.len();
                }
                7 => match cut.take() {
                    None => cut = Some((j.checkpoint_cut(), written.len())),
                    Some((c, keep_from)) => {
                        j.commit_checkpoint(c).await.unwrap();
                        written.drain(..keep_from);
                        synced = synced.saturating_sub(keep_from);
                    }
                },
                _ => {
                    if rng.chance(1, 2) {
                        disk.power_cut();
                    } else {
                        disk.restart();
                    }
                    let rec = recover(&disk, &path).await.unwrap();
                    let got = rec.entries as usize;
                    assert!(
                        got >= synced && got <= written.len(),
                        "seed {seed} step {step}: {got} entries back, {synced} synced, {} written",
                        written.len()
                    );
                    assert_eq!(
                        rec.records,
                        written[..got].concat(),
                        "seed {seed} step {step}"
                    );
                    counts.unsynced_kept += u64::from(got > synced);
                    counts.unsynced_lost += u64::from(got < written.len());
                    j = Journal::open(&disk, &path, bytes, &rec).await.unwrap();
                    written.clear();
                    synced = 0;
                    cut = None;
                }
            }
        }
        counts
    }

    fn entry_bytes_of(records: &[JournalRecord]) -> u64 {
        entry_len(
            records
                .iter()
                .map(|r| RECORD_HEADER_BYTES + r.data.len())
                .sum(),
        )
    }
}
