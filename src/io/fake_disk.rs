//! An in-memory [`Disk`] for tests that fails the way disks fail, decided by a seeded RNG so a
//! seed replays exactly.
//!
//! Model. A file (inode) has the bytes reads see (`data`), the bytes that survive a power cut
//! (`durable`), and the writes and truncations since its last `fdatasync` (`pending`). A
//! directory has its live entries, its durable entries and the entry changes (link, unlink,
//! rename, mkdir) since its last `sync_dir`. What it injects:
//! - EIO on any operation, ENOSPC on writes, file creation and preallocation; a failed write may
//!   still have landed some of its pages (as a real failed write may);
//! - short writes: a prefix of the pages lands, the write reports an error;
//! - power cuts ([`FakeDisk::power_cut`]): each file keeps its durable bytes plus a random subset
//!   of its pending writes, each of those whole, dropped, or torn (only some 512-byte sectors of
//!   a page land); each directory keeps its durable entries plus a random prefix of its pending
//!   changes (a journaling filesystem commits them in order); files no entry names are gone;
//! - a process crash without power loss ([`FakeDisk::restart`]): nothing is lost.
//!
//! Either way, every file opened before is stale afterwards (operations on it fail with EIO), as
//! the descriptors of a dead process are. The caller's side of the contract is checked too: an
//! unaligned write position is an error, as O_DIRECT makes it.
//!
//! Single-threaded (`Rc<RefCell<..>>`), like the shard that uses it; test builds only.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;

use super::disk::{Disk, SegmentFile};
use super::dma::{align_up, PAGE_BYTES};
use super::state_file::{decode_state, encode_state, StateFileError};
use super::IoFailure;

/// Sector size for torn writes: a page may land partly, in sectors.
const SECTOR_BYTES: usize = 512;

/// SplitMix64: small, fast, and the same sequence everywhere for a seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    /// True with probability `num / den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }
}

/// Which faults may be injected, each with a probability per operation of `1 / one_in`
/// (0: never).
#[derive(Debug, Clone, Copy, Default)]
pub struct FaultRates {
    pub eio_one_in: u64,
    pub enospc_one_in: u64,
    pub short_write_one_in: u64,
}

/// What happened, for failure messages and for checking that a run injected anything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounts {
    pub eio: u64,
    pub enospc: u64,
    pub short_writes: u64,
    pub power_cuts: u64,
    pub restarts: u64,
    pub torn_pages: u64,
    pub dropped_writes: u64,
}

#[derive(Debug, Clone)]
enum Change {
    Write { pos: u64, bytes: Vec<u8> },
    Truncate(u64),
}

#[derive(Debug, Default)]
struct Inode {
    data: Vec<u8>,
    durable: Vec<u8>,
    pending: Vec<Change>,
}

#[derive(Debug, Clone)]
enum DirChange {
    Link(String, u64),
    Unlink(String),
    Rename { from: String, to: String, ino: u64 },
    MkDir(String),
    RmDir(String),
}

#[derive(Debug, Default, Clone)]
struct Dir {
    live: BTreeMap<String, u64>,
    durable: BTreeMap<String, u64>,
    pending: Vec<DirChange>,
}

fn apply_dir_change(entries: &mut BTreeMap<String, u64>, c: &DirChange) {
    match c {
        DirChange::Link(name, ino) => {
            entries.insert(name.clone(), *ino);
        }
        DirChange::Unlink(name) => {
            entries.remove(name);
        }
        DirChange::Rename { from, to, ino } => {
            entries.remove(from);
            entries.insert(to.clone(), *ino);
        }
        // Subdirectories are tracked in `Fs::dirs`; their existence is decided at a power cut.
        DirChange::MkDir(_) | DirChange::RmDir(_) => {}
    }
}

struct Fs {
    rng: Rng,
    rates: FaultRates,
    /// Faults are injected only while armed (the checker's reopen runs disarmed).
    armed: bool,
    generation: u64,
    next_ino: u64,
    next_file_id: u64,
    inodes: BTreeMap<u64, Inode>,
    /// Every directory, by path. The root given to `new` always exists durably.
    dirs: BTreeMap<PathBuf, Dir>,
    /// Directories whose creation is durable (their parent's MkDir was synced).
    durable_dirs: std::collections::BTreeSet<PathBuf>,
    counts: FaultCounts,
    ops: u64,
    /// Faults aimed at one operation on one file (see [`FakeDisk::fail_once`]).
    aimed: Vec<(&'static str, String)>,
    /// The next power cut loses everything unsynced (see [`FakeDisk::power_cut_worst`]).
    worst_cut: bool,
}

/// Which kind of operation, for the faults it may suffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpKind {
    /// Reads, listings, opens of existing files: EIO only.
    Read,
    /// Writes: EIO, ENOSPC or short.
    Write,
    /// Creating files or directories, preallocation: EIO or ENOSPC.
    Allocate,
    /// fdatasync, truncate, rename, remove, directory sync: EIO.
    Meta,
}

enum Fault {
    Eio,
    NoSpace,
    Short,
}

impl Fs {
    /// An aimed fault for operation `op` on `path`, if one is set (it fires once).
    fn aimed(&mut self, op: &str, path: &Path) -> bool {
        let path = path.to_string_lossy();
        match self
            .aimed
            .iter()
            .position(|(o, part)| *o == op && path.contains(part.as_str()))
        {
            Some(i) => {
                self.aimed.remove(i);
                self.counts.eio += 1;
                true
            }
            None => false,
        }
    }

    fn fault(&mut self, kind: OpKind) -> Option<Fault> {
        self.ops += 1;
        if !self.armed {
            return None;
        }
        let r = self.rates;
        if r.eio_one_in > 0 && self.rng.chance(1, r.eio_one_in) {
            self.counts.eio += 1;
            return Some(Fault::Eio);
        }
        if matches!(kind, OpKind::Write | OpKind::Allocate)
            && r.enospc_one_in > 0
            && self.rng.chance(1, r.enospc_one_in)
        {
            self.counts.enospc += 1;
            return Some(Fault::NoSpace);
        }
        if kind == OpKind::Write
            && r.short_write_one_in > 0
            && self.rng.chance(1, r.short_write_one_in)
        {
            self.counts.short_writes += 1;
            return Some(Fault::Short);
        }
        None
    }

    fn split(path: &Path) -> Result<(PathBuf, String), std::io::Error> {
        let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| std::io::Error::from(ErrorKind::InvalidInput))?
            .to_owned();
        Ok((parent, name))
    }

    fn lookup(&self, path: &Path) -> Option<u64> {
        let (parent, name) = Fs::split(path).ok()?;
        self.dirs.get(&parent)?.live.get(&name).copied()
    }

    fn dir_change(&mut self, dir: &Path, c: DirChange) -> Result<(), std::io::Error> {
        let d = self
            .dirs
            .get_mut(dir)
            .ok_or_else(|| std::io::Error::from(ErrorKind::NotFound))?;
        apply_dir_change(&mut d.live, &c);
        d.pending.push(c);
        Ok(())
    }

    fn create_file(&mut self, path: &Path) -> Result<u64, std::io::Error> {
        let (parent, name) = Fs::split(path)?;
        if !self.dirs.contains_key(&parent) {
            return Err(ErrorKind::NotFound.into());
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.inodes.insert(ino, Inode::default());
        self.dir_change(&parent, DirChange::Link(name, ino))?;
        Ok(ino)
    }

    /// Applies a write to the bytes reads see and records it as pending.
    fn write(&mut self, ino: u64, pos: u64, bytes: Vec<u8>) {
        if let Some(f) = self.inodes.get_mut(&ino) {
            put(&mut f.data, pos, &bytes);
            f.pending.push(Change::Write { pos, bytes });
        }
    }

    fn truncate(&mut self, ino: u64, size: u64) {
        if let Some(f) = self.inodes.get_mut(&ino) {
            f.data.resize(size as usize, 0);
            f.pending.push(Change::Truncate(size));
        }
    }

    fn fdatasync(&mut self, ino: u64) {
        if let Some(f) = self.inodes.get_mut(&ino) {
            f.durable = f.data.clone();
            f.pending.clear();
        }
    }

    fn sync_dir(&mut self, dir: &Path) -> Result<(), std::io::Error> {
        let d = self
            .dirs
            .get_mut(dir)
            .ok_or_else(|| std::io::Error::from(ErrorKind::NotFound))?;
        let pending = std::mem::take(&mut d.pending);
        for c in &pending {
            apply_dir_change(&mut d.durable, c);
        }
        for c in pending {
            match c {
                DirChange::MkDir(name) => {
                    self.durable_dirs.insert(dir.join(name));
                }
                DirChange::RmDir(name) => {
                    let gone = dir.join(name);
                    self.durable_dirs.retain(|p| !p.starts_with(&gone));
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn power_cut(&mut self) {
        self.generation += 1;
        self.counts.power_cuts += 1;
        // Files: durable bytes plus a random subset of the pending changes, in order; a write
        // lands whole, not at all, or torn.
        let inos: Vec<u64> = self.inodes.keys().copied().collect();
        for ino in inos {
            let Some(f) = self.inodes.get_mut(&ino) else {
                continue;
            };
            let pending = std::mem::take(&mut f.pending);
            let mut img = std::mem::take(&mut f.durable);
            for c in pending {
                match c {
                    Change::Truncate(size) => {
                        if !self.worst_cut && self.rng.chance(1, 2) {
                            img.resize(size as usize, 0);
                        }
                    }
                    Change::Write { pos, bytes } => match self.rng.below(4) {
                        _ if self.worst_cut => self.counts.dropped_writes += 1,
                        0 => self.counts.dropped_writes += 1,
                        1 => put(&mut img, pos, &bytes),
                        _ => {
                            // Page by page: whole, none, or some sectors.
                            for (i, page) in bytes.chunks(PAGE_BYTES as usize).enumerate() {
                                let at = pos + (i as u64) * PAGE_BYTES;
                                match self.rng.below(3) {
                                    0 => {}
                                    1 => put(&mut img, at, page),
                                    _ => {
                                        self.counts.torn_pages += 1;
                                        for (j, sector) in page.chunks(SECTOR_BYTES).enumerate() {
                                            if self.rng.chance(1, 2) {
                                                put(
                                                    &mut img,
                                                    at + (j * SECTOR_BYTES) as u64,
                                                    sector,
                                                );
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    },
                }
            }
            f.data = img.clone();
            f.durable = img;
        }
        // Directories: durable entries plus a prefix of the pending changes.
        let paths: Vec<PathBuf> = self.dirs.keys().cloned().collect();
        for p in &paths {
            let Some(d) = self.dirs.get_mut(p) else {
                continue;
            };
            let pending = std::mem::take(&mut d.pending);
            let keep = match self.worst_cut {
                true => 0,
                false => self.rng.below(pending.len() as u64 + 1) as usize,
            };
            let mut entries = std::mem::take(&mut d.durable);
            for c in &pending[..keep] {
                apply_dir_change(&mut entries, c);
            }
            d.live = entries.clone();
            d.durable = entries;
            for c in &pending[..keep] {
                match c {
                    DirChange::MkDir(name) => {
                        self.durable_dirs.insert(p.join(name));
                    }
                    DirChange::RmDir(name) => {
                        let gone = p.join(name);
                        self.durable_dirs.retain(|q| !q.starts_with(&gone));
                    }
                    _ => {}
                }
            }
        }
        let durable = self.durable_dirs.clone();
        self.dirs.retain(|p, _| durable.contains(p));
        // Files no directory names any more are gone.
        let named: std::collections::BTreeSet<u64> = self
            .dirs
            .values()
            .flat_map(|d| d.live.values().copied())
            .collect();
        self.inodes.retain(|ino, _| named.contains(ino));
        self.worst_cut = false;
    }
}

/// Writes `bytes` at `pos` of `img`, growing it (with zeros) as needed.
fn put(img: &mut Vec<u8>, pos: u64, bytes: &[u8]) {
    let end = pos as usize + bytes.len();
    if img.len() < end {
        img.resize(end, 0);
    }
    img[pos as usize..end].copy_from_slice(bytes);
}

fn err(kind: ErrorKind) -> std::io::Error {
    std::io::Error::from(kind)
}

fn fault_error(f: &Fault) -> std::io::Error {
    match f {
        Fault::Eio => std::io::Error::from_raw_os_error(libc::EIO),
        Fault::NoSpace => std::io::Error::from_raw_os_error(libc::ENOSPC),
        Fault::Short => err(ErrorKind::WriteZero),
    }
}

/// The fake disk; clones share the same files.
#[derive(Clone)]
pub struct FakeDisk(Rc<RefCell<Fs>>);

impl FakeDisk {
    /// An empty disk whose only directory is `root` (durable), faults decided by `seed`,
    /// disarmed.
    pub fn new(seed: u64, root: &Path) -> FakeDisk {
        let mut dirs = BTreeMap::new();
        dirs.insert(root.to_path_buf(), Dir::default());
        let mut durable_dirs = std::collections::BTreeSet::new();
        durable_dirs.insert(root.to_path_buf());
        FakeDisk(Rc::new(RefCell::new(Fs {
            rng: Rng::new(seed),
            rates: FaultRates::default(),
            armed: false,
            generation: 0,
            next_ino: 1,
            next_file_id: 1,
            inodes: BTreeMap::new(),
            dirs,
            durable_dirs,
            counts: FaultCounts::default(),
            ops: 0,
            aimed: Vec::new(),
            worst_cut: false,
        })))
    }

    /// Faults from now on at these rates (and armed).
    pub fn arm(&self, rates: FaultRates) {
        let mut fs = self.0.borrow_mut();
        fs.rates = rates;
        fs.armed = true;
    }

    pub fn disarm(&self) {
        self.0.borrow_mut().armed = false;
    }

    /// Loses what a power cut loses (see the module docs); open files become stale.
    pub fn power_cut(&self) {
        self.0.borrow_mut().power_cut();
    }

    /// A power cut that loses everything not synced: no pending write lands, no pending
    /// directory change survives (the worst case, for targeted tests).
    pub fn power_cut_worst(&self) {
        let mut fs = self.0.borrow_mut();
        fs.worst_cut = true;
        fs.power_cut();
    }

    /// The next operation `op` ("read", "write", "fdatasync", "remove", "fsync dir", ...) on a
    /// path containing `path_part` fails with EIO, armed or not.
    pub fn fail_once(&self, op: &'static str, path_part: &str) {
        self.0.borrow_mut().aimed.push((op, path_part.to_owned()));
    }

    /// A process crash: nothing is lost, open files become stale.
    pub fn restart(&self) {
        let mut fs = self.0.borrow_mut();
        fs.generation += 1;
        fs.counts.restarts += 1;
    }

    pub fn counts(&self) -> FaultCounts {
        self.0.borrow().counts
    }

    /// Operations seen so far (faulted or not).
    pub fn ops(&self) -> u64 {
        self.0.borrow().ops
    }

    /// The bytes a file holds now (tests that inspect or damage files directly).
    pub fn file_bytes(&self, path: &Path) -> Option<Vec<u8>> {
        let fs = self.0.borrow();
        let ino = fs.lookup(path)?;
        fs.inodes.get(&ino).map(|f| f.data.clone())
    }

    /// Replaces a file's bytes, durably (tests that damage files directly).
    pub fn set_file_bytes(&self, path: &Path, bytes: Vec<u8>) -> bool {
        let mut fs = self.0.borrow_mut();
        let Some(ino) = fs.lookup(path) else {
            return false;
        };
        match fs.inodes.get_mut(&ino) {
            Some(f) => {
                f.data = bytes.clone();
                f.durable = bytes;
                f.pending.clear();
                true
            }
            None => false,
        }
    }

    /// The names in `dir` (live view), sorted.
    pub fn names(&self, dir: &Path) -> Vec<String> {
        self.0
            .borrow()
            .dirs
            .get(dir)
            .map(|d| d.live.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn open_file(&self, path: &Path, ino: u64) -> FakeFile {
        let mut fs = self.0.borrow_mut();
        let id = fs.next_file_id;
        fs.next_file_id += 1;
        FakeFile {
            disk: self.clone(),
            path: path.to_path_buf(),
            ino,
            id,
            generation: fs.generation,
        }
    }

    fn check(&self, kind: OpKind, op: &'static str, path: &Path, at: u64) -> Result<(), IoFailure> {
        if self.0.borrow_mut().aimed(op, path) {
            return Err(IoFailure::new(op, path, at, fault_error(&Fault::Eio)));
        }
        match self.0.borrow_mut().fault(kind) {
            None => Ok(()),
            Some(f) => Err(IoFailure::new(op, path, at, fault_error(&f))),
        }
    }
}

/// An open file of a [`FakeDisk`].
pub struct FakeFile {
    disk: FakeDisk,
    path: PathBuf,
    ino: u64,
    id: u64,
    generation: u64,
}

impl FakeFile {
    /// Fails on a file opened before the last power cut or restart.
    fn live(&self, op: &'static str, at: u64) -> Result<(), IoFailure> {
        if self.disk.0.borrow().generation != self.generation {
            return Err(IoFailure::new(
                op,
                &self.path,
                at,
                std::io::Error::other("stale file: opened before a crash"),
            ));
        }
        Ok(())
    }
}

impl SegmentFile for FakeFile {
    fn id(&self) -> u64 {
        self.id
    }
    fn path(&self) -> &Path {
        &self.path
    }

    async fn write_padded_parts(&self, pos: u64, parts: &[&[u8]]) -> Result<(), IoFailure> {
        self.live("write", pos)?;
        if pos % PAGE_BYTES != 0 {
            return Err(IoFailure::new(
                "write (unaligned position)",
                &self.path,
                pos,
                err(ErrorKind::InvalidInput),
            ));
        }
        let mut bytes: Vec<u8> = parts.concat();
        bytes.resize(align_up(bytes.len() as u64) as usize, 0);
        let mut fs = self.disk.0.borrow_mut();
        let fault = match fs.aimed("write", &self.path) {
            true => Some(Fault::Eio),
            false => fs.fault(OpKind::Write),
        };
        match fault {
            None => {
                fs.write(self.ino, pos, bytes);
                Ok(())
            }
            Some(f) => {
                // Some leading pages may have landed before the failure.
                let pages = bytes.len() / PAGE_BYTES as usize;
                let landed = fs.rng.below(pages as u64 + 1) as usize * PAGE_BYTES as usize;
                if landed > 0 {
                    bytes.truncate(landed);
                    fs.write(self.ino, pos, bytes);
                }
                let op = match f {
                    Fault::Short => "write (short)",
                    _ => "write",
                };
                Err(IoFailure::new(
                    op,
                    &self.path,
                    pos + landed as u64,
                    fault_error(&f),
                ))
            }
        }
    }

    async fn read(&self, pos: u64, len: usize) -> Result<Bytes, IoFailure> {
        self.live("read", pos)?;
        if len == 0 {
            return Ok(Bytes::new());
        }
        self.disk.check(OpKind::Read, "read", &self.path, pos)?;
        let fs = self.disk.0.borrow();
        let data = fs.inodes.get(&self.ino).map(|f| &f.data[..]).unwrap_or(&[]);
        let start = (pos as usize).min(data.len());
        let end = start.saturating_add(len).min(data.len());
        Ok(Bytes::copy_from_slice(&data[start..end]))
    }

    async fn fdatasync(&self) -> Result<(), IoFailure> {
        self.live("fdatasync", 0)?;
        // A failed fdatasync leaves the writes pending: a later power cut may lose them.
        self.disk.check(OpKind::Meta, "fdatasync", &self.path, 0)?;
        self.disk.0.borrow_mut().fdatasync(self.ino);
        Ok(())
    }

    async fn preallocate(&self, size: u64) -> Result<(), IoFailure> {
        self.live("fallocate", size)?;
        self.disk
            .check(OpKind::Allocate, "fallocate", &self.path, size)
    }

    async fn truncate(&self, size: u64) -> Result<(), IoFailure> {
        self.live("truncate", size)?;
        self.disk
            .check(OpKind::Meta, "truncate", &self.path, size)?;
        self.disk.0.borrow_mut().truncate(self.ino, size);
        Ok(())
    }

    async fn size(&self) -> Result<u64, IoFailure> {
        self.live("stat", 0)?;
        let fs = self.disk.0.borrow();
        Ok(fs.inodes.get(&self.ino).map_or(0, |f| f.data.len() as u64))
    }

    async fn close(self) -> Result<(), IoFailure> {
        Ok(())
    }
}

impl Disk for FakeDisk {
    type File = FakeFile;

    async fn open(&self, path: &Path, create: bool) -> Result<FakeFile, IoFailure> {
        let existing = self.0.borrow().lookup(path);
        let ino = match existing {
            Some(ino) => {
                self.check(OpKind::Read, "open", path, 0)?;
                ino
            }
            None if create => {
                self.check(OpKind::Allocate, "open", path, 0)?;
                self.0
                    .borrow_mut()
                    .create_file(path)
                    .map_err(|e| IoFailure::new("open", path, 0, e))?
            }
            None => return Err(IoFailure::new("open", path, 0, err(ErrorKind::NotFound))),
        };
        Ok(self.open_file(path, ino))
    }

    async fn create_truncate(&self, path: &Path) -> Result<FakeFile, IoFailure> {
        self.check(OpKind::Allocate, "open", path, 0)?;
        let existing = self.0.borrow().lookup(path);
        let ino = match existing {
            Some(ino) => {
                self.0.borrow_mut().truncate(ino, 0);
                ino
            }
            None => self
                .0
                .borrow_mut()
                .create_file(path)
                .map_err(|e| IoFailure::new("open", path, 0, e))?,
        };
        Ok(self.open_file(path, ino))
    }

    async fn read_whole_file(&self, path: &Path) -> Result<Option<Bytes>, IoFailure> {
        let f = match self.open(path, false).await {
            Ok(f) => f,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let size = f.size().await?;
        let data = f.read(0, size as usize).await?;
        Ok(Some(data))
    }

    async fn write_whole_file(&self, path: &Path, data: &[u8]) -> Result<(), IoFailure> {
        let tmp = tmp_path(path);
        let f = self.create_truncate(&tmp).await?;
        f.write_padded(0, data).await?;
        f.truncate(data.len() as u64).await?;
        f.fdatasync().await?;
        self.rename(&tmp, path)
    }

    fn exists(&self, path: &Path) -> bool {
        let fs = self.0.borrow();
        fs.dirs.contains_key(path) || fs.lookup(path).is_some()
    }

    fn create_dir_all(&self, dir: &Path) -> Result<(), IoFailure> {
        let mut missing = Vec::new();
        let mut p = dir.to_path_buf();
        while !self.0.borrow().dirs.contains_key(&p) {
            missing.push(p.clone());
            if !p.pop() {
                return Err(IoFailure::new(
                    "create dir",
                    dir,
                    0,
                    err(ErrorKind::NotFound),
                ));
            }
        }
        for d in missing.into_iter().rev() {
            self.check(OpKind::Allocate, "create dir", &d, 0)?;
            let mut fs = self.0.borrow_mut();
            let (parent, name) =
                Fs::split(&d).map_err(|e| IoFailure::new("create dir", &d, 0, e))?;
            fs.dirs.insert(d.clone(), Dir::default());
            fs.dir_change(&parent, DirChange::MkDir(name))
                .map_err(|e| IoFailure::new("create dir", &d, 0, e))?;
        }
        Ok(())
    }

    fn list_dir(&self, dir: &Path) -> Result<Vec<String>, IoFailure> {
        self.check(OpKind::Read, "list dir", dir, 0)?;
        match self.0.borrow().dirs.get(dir) {
            Some(d) => Ok(d.live.keys().cloned().collect()),
            None => Err(IoFailure::new("list dir", dir, 0, err(ErrorKind::NotFound))),
        }
    }

    fn remove_file(&self, path: &Path) -> Result<(), IoFailure> {
        self.check(OpKind::Meta, "remove", path, 0)?;
        let mut fs = self.0.borrow_mut();
        if fs.lookup(path).is_none() {
            return Err(IoFailure::new("remove", path, 0, err(ErrorKind::NotFound)));
        }
        let (parent, name) = Fs::split(path).map_err(|e| IoFailure::new("remove", path, 0, e))?;
        fs.dir_change(&parent, DirChange::Unlink(name))
            .map_err(|e| IoFailure::new("remove", path, 0, e))
    }

    fn rename(&self, from: &Path, to: &Path) -> Result<(), IoFailure> {
        self.check(OpKind::Meta, "rename", from, 0)?;
        let mut fs = self.0.borrow_mut();
        let Some(ino) = fs.lookup(from) else {
            return Err(IoFailure::new("rename", from, 0, err(ErrorKind::NotFound)));
        };
        let (dir, from_name) = Fs::split(from).map_err(|e| IoFailure::new("rename", from, 0, e))?;
        let (to_dir, to_name) = Fs::split(to).map_err(|e| IoFailure::new("rename", to, 0, e))?;
        if dir != to_dir {
            // Storage only renames within a directory; across directories is not modelled.
            return Err(IoFailure::new(
                "rename",
                from,
                0,
                err(ErrorKind::Unsupported),
            ));
        }
        fs.dir_change(
            &dir,
            DirChange::Rename {
                from: from_name,
                to: to_name,
                ino,
            },
        )
        .map_err(|e| IoFailure::new("rename", from, 0, e))
    }

    fn remove_dir_all(&self, dir: &Path) -> Result<(), IoFailure> {
        self.check(OpKind::Meta, "remove dir", dir, 0)?;
        let mut fs = self.0.borrow_mut();
        if !fs.dirs.contains_key(dir) {
            return Err(IoFailure::new(
                "remove dir",
                dir,
                0,
                err(ErrorKind::NotFound),
            ));
        }
        let (parent, name) = Fs::split(dir).map_err(|e| IoFailure::new("remove dir", dir, 0, e))?;
        fs.dirs.retain(|p, _| !p.starts_with(dir));
        fs.dir_change(&parent, DirChange::RmDir(name))
            .map_err(|e| IoFailure::new("remove dir", dir, 0, e))
    }

    fn sync_dir(&self, dir: &Path) -> Result<(), IoFailure> {
        self.check(OpKind::Meta, "fsync dir", dir, 0)?;
        self.0
            .borrow_mut()
            .sync_dir(dir)
            .map_err(|e| IoFailure::new("fsync dir", dir, 0, e))
    }

    fn read_state(&self, path: &Path) -> Result<Option<Vec<u8>>, StateFileError> {
        let Some(ino) = self.0.borrow().lookup(path) else {
            return Ok(None);
        };
        self.check(OpKind::Read, "read", path, 0)?;
        let data = self
            .0
            .borrow()
            .inodes
            .get(&ino)
            .map(|f| f.data.clone())
            .unwrap_or_default();
        decode_state(path, &data).map(Some)
    }

    fn write_state(&self, path: &Path, payload: &[u8]) -> Result<(), StateFileError> {
        let tmp = tmp_path(path);
        let data = encode_state(payload);
        self.check(OpKind::Allocate, "create", &tmp, 0)?;
        let ino = {
            let mut fs = self.0.borrow_mut();
            let ino = match fs.lookup(&tmp) {
                Some(ino) => ino,
                None => fs
                    .create_file(&tmp)
                    .map_err(|e| IoFailure::new("create", &tmp, 0, e))?,
            };
            fs.truncate(ino, 0);
            ino
        };
        self.check(OpKind::Write, "write", &tmp, 0)?;
        self.0.borrow_mut().write(ino, 0, data);
        self.check(OpKind::Meta, "fsync", &tmp, 0)?;
        self.0.borrow_mut().fdatasync(ino);
        self.rename(&tmp, path)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        self.sync_dir(dir)?;
        Ok(())
    }

    fn remove_state(&self, path: &Path) -> Result<(), StateFileError> {
        for p in [path.to_path_buf(), tmp_path(path)] {
            match self.remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(d) = path.parent() {
            self.sync_dir(d)?;
        }
        Ok(())
    }

    async fn blocking<T: Send + 'static>(&self, f: impl FnOnce(&Self) -> T + Send + 'static) -> T {
        f(self)
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".tmp");
    PathBuf::from(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::io::test_executor::on_executor as run;

    #[test]
    fn synced_data_and_entries_survive_a_power_cut_unsynced_ones_may_not() {
        run(|| async {
            let root = Path::new("/fake");
            // Over many seeds: synced content always survives; unsynced content sometimes
            // does not, and sometimes lands torn.
            let (mut lost, mut kept) = (0, 0);
            for seed in 0..64 {
                let disk = FakeDisk::new(seed, root);
                let dir = root.join("d");
                disk.create_dir_all(&dir).unwrap();
                disk.sync_dir(root).unwrap();
                let a = disk.create_truncate(&dir.join("a")).await.unwrap();
                a.write_padded(0, &[1u8; 5000]).await.unwrap();
                a.fdatasync().await.unwrap();
                disk.sync_dir(&dir).unwrap();
                a.write_padded(8192, &[2u8; 100]).await.unwrap(); // not synced
                let b = disk.create_truncate(&dir.join("b")).await.unwrap();
                b.write_padded(0, b"x").await.unwrap();
                b.fdatasync().await.unwrap(); // data synced, entry not
                disk.power_cut();
                // Stale handles fail.
                assert!(a.read(0, 10).await.is_err());
                let bytes = disk.file_bytes(&dir.join("a")).unwrap();
                assert!(bytes.len() >= 8192);
                assert!(bytes[..5000].iter().all(|b| *b == 1));
                match bytes.get(8192) {
                    Some(2) => kept += 1,
                    _ => lost += 1,
                }
                let _ = disk.exists(&dir.join("b"));
            }
            assert!(lost > 0 && kept > 0, "lost {lost} kept {kept}");
        });
    }

    #[test]
    fn unsynced_directories_and_renames_can_vanish_synced_ones_cannot() {
        run(|| async {
            let root = Path::new("/fake");
            let (mut vanished, mut stayed) = (0, 0);
            for seed in 0..64 {
                let disk = FakeDisk::new(seed, root);
                let dir = root.join("d");
                disk.create_dir_all(&dir).unwrap();
                disk.sync_dir(root).unwrap();
                disk.write_whole_file(&dir.join("ix"), b"old")
                    .await
                    .unwrap();
                disk.sync_dir(&dir).unwrap();
                disk.write_whole_file(&dir.join("ix"), b"new")
                    .await
                    .unwrap();
                disk.create_dir_all(&root.join("e")).unwrap(); // not synced
                disk.power_cut();
                let ix = disk
                    .read_whole_file(&dir.join("ix"))
                    .await
                    .unwrap()
                    .unwrap();
                // Old or new, never torn: the rename is atomic and the data was synced first.
                assert!(&ix[..] == b"old" || &ix[..] == b"new", "{ix:?}");
                if disk.exists(&root.join("e")) {
                    stayed += 1;
                } else {
                    vanished += 1;
                }
            }
            assert!(vanished > 0 && stayed > 0);
        });
    }

    #[test]
    fn faults_are_errors_with_context_and_replay_by_seed() {
        run(|| async {
            let root = Path::new("/fake");
            let trace = |seed| async move {
                let disk = FakeDisk::new(seed, root);
                disk.arm(FaultRates {
                    eio_one_in: 5,
                    enospc_one_in: 5,
                    short_write_one_in: 5,
                });
                let mut outcomes = Vec::new();
                let f = loop {
                    if let Ok(f) = disk.create_truncate(&root.join("f")).await {
                        break f;
                    }
                };
                for i in 0..50u64 {
                    let r = f.write_padded(i * 4096, &[7u8; 9000]).await;
                    if let Err(e) = &r {
                        assert!(e.to_string().contains("/fake/f"), "{e}");
                    }
                    outcomes.push(r.map_err(|e| e.source.kind()).is_ok());
                }
                (outcomes, disk.counts())
            };
            let (a, ca) = trace(7).await;
            let (b, cb) = trace(7).await;
            assert_eq!(a, b);
            assert_eq!(ca, cb);
            assert!(a.iter().any(|ok| !ok) && a.iter().any(|ok| *ok));
            assert!(ca.eio + ca.enospc + ca.short_writes > 0);
            // Unaligned writes are refused, as O_DIRECT refuses them.
            let disk = FakeDisk::new(1, root);
            let f = disk.create_truncate(&root.join("g")).await.unwrap();
            assert!(f.write_padded(100, b"x").await.is_err());
        });
    }
}
