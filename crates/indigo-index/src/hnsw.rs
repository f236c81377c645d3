//! A concurrent HNSW graph (Malkov & Yashunin) with tombstone deletes, a repair pass
//! that reconnects around deleted nodes and frees their slots, filtered search, and
//! an optional commit log (see `persist.rs`).
//!
//! Concurrency: one `RwLock` over the slot arrays, taken for reading by every
//! insert, search and delete, and for writing only to grow capacity or free slots.
//! Each node's links sit behind their own mutex; no thread holds two node locks at
//! once, and the commit-log lock is only ever taken inside a node lock (or alone), so
//! the log records each node's changes in the order they happened.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::{Mutex, RwLock};
use roaring::RoaringBitmap;

use crate::distance::{decode, encode, Code, Space};
use crate::persist::{self, FileParams, GraphState, LogWriter, Op, NO_ENTRY};
use crate::topk::{Scored, TopK};
use crate::{check_vector, IndexError, Neighbor, Result};
use indigo_fs::{FileSystem, StdFs};
use indigo_health::{Backoff, Health};

const VACANT: u8 = 0;
const LIVE: u8 = 1;
const DELETED: u8 = 2;
const MAX_LEVEL: u8 = 16;

/// HNSW parameters. Names follow Chroma's collection configuration.
#[derive(Debug, Clone)]
pub struct HnswParams {
    pub space: Space,
    pub dim: usize,
    /// M: links per node on upper levels (2M on level 0).
    pub max_neighbors: usize,
    pub ef_construction: usize,
    pub ef_search: usize,
    /// Filtered searches whose allow-list has at most this many ids (or under 2%
    /// of the index) scan those ids exactly instead of walking the graph; 0
    /// forces the walk (tests, sweeps). The default is where the two cost the
    /// same on Fashion-MNIST (784-d, 60k; `indigo-bench --bin index` prints the
    /// sweep): about 3k allowed vectors.
    pub flat_cutoff: usize,
    /// Seeds the level draw, so builds are reproducible.
    pub seed: u64,
}

impl HnswParams {
    pub fn new(space: Space, dim: usize) -> Self {
        HnswParams {
            space,
            dim,
            max_neighbors: 16,
            ef_construction: 100,
            ef_search: 100,
            flat_cutoff: 3000,
            seed: 0x1d160,
        }
    }
}

/// A node's lock-protected part: its level and its links above level 0. The mutex
/// is also the node's write lock for its level-0 links.
#[derive(Default)]
struct NodeMeta {
    level: u8,
    /// `upper[l - 1]` holds the links on level `l`.
    upper: Vec<Vec<u32>>,
}

/// Fixed-capacity slot arrays, laid out for the search loop: state bytes, labels
/// and level-0 link lists are dense arrays read without locks (as hnswlib does);
/// vectors are contiguous rows.
///
/// Level-0 lists are `[count, id, id, ...]` of atomics, written only under the
/// node's mutex. A reader racing a writer may see a mix of the old and new list;
/// every id in either is a valid slot, so a search at worst takes a slightly
/// different path. Vector rows are written once, by the thread that reserved the
/// slot, before the node is linked anywhere; readers reach a row only through a link
/// published after that write (a release store of the count, or a mutex), so a row
/// is never read while being written. A row's code is written with it, or,
/// after a load or [`Hnsw::drop_codes`] left it zero, by the first change
/// that scores the row ([`Slots::code`]); searches read rows, never codes.
struct Slots {
    dim: usize,
    /// Row stride in 64-byte blocks: rows start on cache-line boundaries, so a
    /// vector spans the fewest lines and SIMD loads never straddle two.
    stride: usize,
    cap: usize,
    m0: usize,
    used: AtomicU32,
    vectors: Rows,
    /// Code row stride in 64-byte blocks ([`CODE_HEAD`] + `dim` bytes).
    cstride: usize,
    /// Each row again in 8 bits ([`crate::distance::Code`]): what builds walk.
    /// Empty below [`CODED_MIN_DIM`] (`cstride` 0).
    codes: Rows,
    state: Vec<AtomicU8>,
    labels: Vec<AtomicU32>,
    links0: Vec<AtomicU32>,
    meta: Vec<Mutex<NodeMeta>>,
}

// SAFETY: see the type's comment: each row (and code) has one writer, before
// publication or while no reader of it runs.
unsafe impl Sync for Slots {}

/// One cache line of vector data.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; 16]);

/// The vector rows: `lines` cache lines from `ptr`, in the index's own memory
/// (a zeroed allocation) or, after a load, in a private mapping whose head is
/// the snapshot's rows. Held as a raw pointer, not a `Vec`, so that rows are
/// written through it (each by the one thread that reserved its slot) without
/// a reference to the whole array ever being formed.
///
/// A mapping's file part is page-cache pages until a row is written
/// (copy-on-write), so a restart does not wait for the system to zero fresh
/// memory for the rows (most of a 1M × 384 restart on a virtual machine). It
/// keeps the snapshot's blocks in use even once the file is removed, so the
/// index copies the rows into its own memory before its condensation removes
/// the snapshot ([`Hnsw::copy_rows_off`]); a closed index lets go when it is
/// dropped. Snapshots are never changed in place, so mapped pages are never
/// truncated under the index; a disk error faulting a page back in after
/// the load is a SIGBUS, as for any mapped file.
struct Rows {
    ptr: *mut Line,
    lines: usize,
    kind: RowsKind,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum RowsKind {
    /// From the global allocator (small arrays, other platforms).
    Heap,
    /// An anonymous mapping of the index's own: it grows by `mremap`, which
    /// moves the pages instead of copying them into fresh ones (each doubling
    /// of a 60k × 784 index otherwise copied up to 100 MB under the write lock
    /// and had the system zero as much again).
    Anon,
    /// A mapped snapshot's rows over an anonymous reservation ([`Rows::map`]).
    Snapshot,
}

// SAFETY: the rows are owned like a heap allocation; `Slots` governs access.
unsafe impl Send for Rows {}

impl Drop for Rows {
    fn drop(&mut self) {
        if self.kind == RowsKind::Heap {
            // SAFETY: made from such a vector by `zeroed` (length = capacity).
            drop(unsafe { Vec::from_raw_parts(self.ptr, self.lines, self.lines) });
        } else {
            // SAFETY: `ptr` and the length are one mapping made by `zeroed`,
            // `grow_in_place` or `map`.
            unsafe { libc::munmap(self.ptr.cast(), self.lines * 64) };
        }
    }
}

/// Bytes before a code row's codes: its offset and step (two f32s) and its
/// state (a u32: [`UNCODED`], [`ENCODING`] or [`CODED`]).
const CODE_HEAD: usize = 12;

/// A code row not written (all-zero memory: after a load or a drop).
const UNCODED: u32 = 0;
/// A code row one change is writing; others score the f32 row meanwhile.
const ENCODING: u32 = 1;
/// A code row written.
const CODED: u32 = 2;

/// Builds score codes from this many dimensions up (an f32 row of four cache
/// lines or more). Below, a row is a line or two either way, and per-row codes
/// of a few values are coarse: a row `[i, 1, 2]` codes its 2 with a step of
/// i / 255, and a build of 500 such points (`tests/repair.rs`) once left a
/// point its search could not reach.
const CODED_MIN_DIM: usize = 64;

/// A code row's stride in cache lines; 0 (no codes) below [`CODED_MIN_DIM`].
fn code_stride(dim: usize) -> usize {
    if dim >= CODED_MIN_DIM {
        (CODE_HEAD + dim).div_ceil(64)
    } else {
        0
    }
}

/// Row arrays at least this large are anonymous mappings of their own.
const ANON_ROWS_BYTES: usize = 1 << 20;

#[cfg(test)]
thread_local! {
    /// How many times this thread grew rows in place (tests check the path ran).
    pub(crate) static GROWN_IN_PLACE: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Row arrays at least this large ask for transparent huge pages.
const HUGE_ROWS_BYTES: usize = 32 << 20;

/// Asks for 2 MiB pages on a large row mapping. A walk reads rows scattered
/// over the whole array, and with 4 KiB pages nearly every row it scores
/// missed the TLB: Fashion-MNIST's 60k × 784 build took 8.1 s instead of
/// 9.3 s with them (mean of four alternated builds in one process, two
/// threads). At most the last, partly used 2 MiB page is memory not yet
/// needed. A system without them refuses the advice, which changes nothing.
#[cfg(target_os = "linux")]
fn advise_huge(p: *mut libc::c_void, bytes: usize) {
    if bytes >= HUGE_ROWS_BYTES {
        // SAFETY: advice on a mapping of our own; no memory is changed.
        unsafe { libc::madvise(p, bytes, libc::MADV_HUGEPAGE) };
    }
}

impl Rows {
    /// `n` zero lines of the index's own, untouched until used (see
    /// [`zeroed_vec`]): an anonymous mapping from [`ANON_ROWS_BYTES`] up.
    fn zeroed(n: usize) -> Rows {
        #[cfg(target_os = "linux")]
        if n * 64 >= ANON_ROWS_BYTES {
            // SAFETY: a fresh anonymous mapping (zero pages, made on first
            // touch); nothing else refers to it.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    n * 64,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                    -1,
                    0,
                )
            };
            if p != libc::MAP_FAILED {
                advise_huge(p, n * 64);
                return Rows {
                    ptr: p.cast(),
                    lines: n,
                    kind: RowsKind::Anon,
                };
            }
        }
        // SAFETY: all-zero bytes are 0.0 floats.
        let v = std::mem::ManuallyDrop::new(unsafe { zeroed_vec::<Line>(n) });
        debug_assert_eq!(v.len(), v.capacity());
        Rows {
            ptr: v.as_ptr() as *mut Line,
            lines: v.len(),
            kind: RowsKind::Heap,
        }
    }

    /// Grows an anonymous mapping to `n` lines, the new ones zero, moving its
    /// pages; false if these rows are not one (or the system refuses), and
    /// the caller copies them instead. The caller has these rows to itself.
    fn grow_in_place(&mut self, n: usize) -> bool {
        #[cfg(target_os = "linux")]
        if self.kind == RowsKind::Anon && n >= self.lines {
            // SAFETY: our own mapping of exactly this length; its old address
            // is not used again unless the call fails (then it is unchanged).
            let p = unsafe {
                libc::mremap(
                    self.ptr.cast(),
                    self.lines * 64,
                    n * 64,
                    libc::MREMAP_MAYMOVE,
                )
            };
            if p != libc::MAP_FAILED {
                advise_huge(p, n * 64);
                self.ptr = p.cast();
                self.lines = n;
                #[cfg(test)]
                GROWN_IN_PLACE.with(|g| g.set(g.get() + 1));
                return true;
            }
        }
        let _ = n;
        false
    }

    /// Gives an anonymous mapping's pages back to the system; its lines read
    /// as zeros afterwards. Heap rows (under [`ANON_ROWS_BYTES`]) and mapped
    /// snapshots are left as they are (false). The caller has these rows to
    /// itself.
    fn discard(&self) -> bool {
        #[cfg(target_os = "linux")]
        if self.kind == RowsKind::Anon {
            // SAFETY: our own private anonymous mapping of exactly this
            // length; nothing refers into it meanwhile (the caller's promise).
            return unsafe { libc::madvise(self.ptr.cast(), self.lines * 64, libc::MADV_DONTNEED) }
                == 0;
        }
        false
    }

    /// `n` lines of the index's own (zeros past the first `keep`, which
    /// are copied from these rows; `keep` ≤ both lengths).
    fn owned_copy(&self, n: usize, keep: usize) -> Rows {
        let new = Rows::zeroed(n);
        let keep = keep.min(n).min(self.lines);
        // SAFETY: both hold at least `keep` lines and do not overlap; the
        // caller keeps those lines from being written meanwhile.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr, new.ptr, keep) };
        new
    }

    /// `lines` lines, the first `rows` × `stride` of them mapped from `fd`
    /// at `offset` (which the page size divides). `None` if the system
    /// refuses or cannot read the file now; the caller then reads the rows.
    #[cfg(all(target_os = "linux", target_endian = "little"))]
    fn map(
        fd: std::os::fd::RawFd,
        offset: u64,
        rows: usize,
        stride: usize,
        lines: usize,
    ) -> Option<Rows> {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        let file_bytes = rows * stride * 64;
        if page <= 0 || !offset.is_multiple_of(page as u64) || rows * stride > lines || rows == 0 {
            return None;
        }
        let total = lines * 64;
        // SAFETY: a fresh anonymous mapping; nothing else refers to it.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                total,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return None;
        }
        let me = Rows {
            ptr: base.cast(),
            lines,
            kind: RowsKind::Snapshot,
        };
        // The file part replaces the head of the anonymous mapping. It may
        // end mid-page: the rest of that page shows the file's next bytes
        // (rows past the snapshot's are written before they are read).
        // SAFETY: the range lies inside `base`'s mapping, which `me` owns.
        let head = unsafe {
            libc::mmap(
                base,
                file_bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_FIXED,
                fd,
                offset as libc::off_t,
            )
        };
        if head == libc::MAP_FAILED {
            // A failed MAP_FIXED may have unmapped part of the range, and
            // another thread may have mapped something there since: leave
            // the range (untouched address space) rather than unmap it.
            std::mem::forget(me);
            return None;
        }
        // Fault the file pages in read-only now, in one call rather than
        // page by page (the checksum reads them all next); no copy is made.
        // A read error here is the load's to report, by reading the file:
        // touching the mapping would be a SIGBUS. EINVAL: a kernel without
        // the advice (before 5.14); the pages then come as they are read.
        // SAFETY: advice on our own mapping.
        if unsafe { libc::madvise(base, file_bytes, libc::MADV_POPULATE_READ) } != 0
            && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL)
        {
            return None;
        }
        Some(me)
    }

    #[cfg(not(all(target_os = "linux", target_endian = "little")))]
    fn map(_: std::os::fd::RawFd, _: u64, _: usize, _: usize, _: usize) -> Option<Rows> {
        None
    }
}

/// `n` zeroed `T`s in memory straight from the allocator, not written here:
/// fresh pages stay untouched until a slot is used, so capacity reserved
/// ahead (a load's bound on what the logs add, growth by doubling) costs
/// address space, not resident memory.
///
/// # Safety
/// All-zero bytes must be a valid `T`.
unsafe fn zeroed_vec<T>(n: usize) -> Vec<T> {
    if n == 0 || std::mem::size_of::<T>() == 0 {
        return Vec::new();
    }
    let layout = std::alloc::Layout::array::<T>(n).expect("slot arrays fit in memory");
    // SAFETY: the layout has a non-zero size.
    let p = unsafe { std::alloc::alloc_zeroed(layout) } as *mut T;
    if p.is_null() {
        std::alloc::handle_alloc_error(layout);
    }
    // SAFETY: allocated by the global allocator with T's layout for n values,
    // all initialised (zero bytes are a valid T, by the caller).
    unsafe { Vec::from_raw_parts(p, n, n) }
}

/// Grows `v` to `n` values, the new ones zero, without writing them (see
/// [`zeroed_vec`]); the old ones are moved.
///
/// # Safety
/// As for [`zeroed_vec`].
unsafe fn grow_zeroed<T>(v: &mut Vec<T>, n: usize) {
    if n <= v.len() {
        return;
    }
    // SAFETY: by the caller.
    let mut new = unsafe { zeroed_vec::<T>(n) };
    // SAFETY: `new` holds n > len values; the old ones are moved out bitwise and
    // `v` forgets them (len 0) before it is dropped.
    unsafe {
        std::ptr::copy_nonoverlapping(v.as_ptr(), new.as_mut_ptr(), v.len());
        v.set_len(0);
    }
    *v = new;
}

impl Slots {
    fn with_capacity(dim: usize, m0: usize, cap: usize) -> Slots {
        let stride = dim.div_ceil(16);
        Slots {
            dim,
            stride,
            cap,
            m0,
            used: AtomicU32::new(0),
            // SAFETY (each): all-zero bytes are 0.0 floats, VACANT, label 0
            // and link count 0.
            vectors: Rows::zeroed(cap * stride),
            cstride: code_stride(dim),
            codes: Rows::zeroed(cap * code_stride(dim)),
            state: unsafe { zeroed_vec(cap) },
            labels: unsafe { zeroed_vec(cap) },
            links0: unsafe { zeroed_vec(cap * (m0 + 1)) },
            meta: (0..cap).map(|_| Mutex::new(NodeMeta::default())).collect(),
        }
    }

    #[inline]
    fn row_ptr(&self, slot: u32) -> *mut f32 {
        debug_assert!((slot as usize) < self.cap);
        // SAFETY: slot < cap, so the row lies inside the allocation.
        unsafe { self.vectors.ptr.add(slot as usize * self.stride) as *mut f32 }
    }

    #[inline]
    fn vector(&self, slot: u32) -> &[f32] {
        // SAFETY: the row is in bounds and initialised; rows of reachable slots are
        // not written concurrently (see above).
        unsafe { std::slice::from_raw_parts(self.row_ptr(slot), self.dim) }
    }

    /// SAFETY: the caller reserved `slot` and has not published it yet.
    unsafe fn write_vector(&self, slot: u32, v: &[f32]) {
        std::slice::from_raw_parts_mut(self.row_ptr(slot), self.dim).copy_from_slice(v);
        if self.cstride > 0 {
            // A reused slot may still be reached by a walk that read a link
            // to it before repair removed it; such a walk may be encoding
            // the old row (`Slots::code`). Claim the code row from it first,
            // so the code left is this row's.
            let st = self.code_state(slot);
            loop {
                let now = st.load(Ordering::Relaxed);
                if now == ENCODING {
                    std::hint::spin_loop();
                } else if st
                    .compare_exchange_weak(now, ENCODING, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    break;
                }
            }
            self.write_code(slot, v);
        }
    }

    #[inline]
    fn code_ptr(&self, slot: u32) -> *mut u8 {
        debug_assert!((slot as usize) < self.cap);
        // SAFETY: slot < cap, so the row lies inside the allocation.
        unsafe { self.codes.ptr.add(slot as usize * self.cstride) as *mut u8 }
    }

    /// `slot`'s code row's state word.
    #[inline]
    fn code_state(&self, slot: u32) -> &AtomicU32 {
        // SAFETY: in bounds (a code row is at least CODE_HEAD bytes), aligned
        // (rows start on cache lines), and only ever accessed atomically.
        unsafe { &*(self.code_ptr(slot).add(8) as *const AtomicU32) }
    }

    /// `slot`'s vector in 8 bits, encoding it now if no code is written yet
    /// (after a load or a drop of the codes); `None` while another change is
    /// encoding it, or if rows have no codes (below [`CODED_MIN_DIM`]): the
    /// caller scores the f32 row instead. Only changes call
    /// this (they hold `Hnsw::mutate`, so no drop runs meanwhile).
    #[inline]
    fn code(&self, slot: u32) -> Option<Code<'_>> {
        if self.cstride == 0 {
            // No codes below CODED_MIN_DIM: rows are scored exactly.
            return None;
        }
        let st = self.code_state(slot);
        let mut s = st.load(Ordering::Acquire);
        if s == UNCODED {
            s = match st.compare_exchange(UNCODED, ENCODING, Ordering::Acquire, Ordering::Acquire) {
                Ok(_) => {
                    // SAFETY: this thread claimed the row (no other writes
                    // or reads its codes until CODED is published), and the
                    // f32 row of a reachable slot is written.
                    unsafe { self.write_code(slot, self.vector(slot)) };
                    CODED
                }
                Err(now) => now,
            };
        }
        if s != CODED {
            return None;
        }
        let p = self.code_ptr(slot);
        // SAFETY: in bounds; a CODED row is not written while read (see the
        // type's comment), and its writes were published by the Release
        // store this Acquire load saw. The head's first two words are f32s.
        unsafe {
            Some(Code {
                base: (p as *const f32).read(),
                step: (p as *const f32).add(1).read(),
                codes: std::slice::from_raw_parts(p.add(CODE_HEAD), self.dim),
            })
        }
    }

    /// SAFETY: as for `write_vector` (or the row claimed in [`Slots::code`]);
    /// the rows have codes (`cstride` > 0).
    unsafe fn write_code(&self, slot: u32, v: &[f32]) {
        let p = self.code_ptr(slot);
        let (base, step) = encode(
            v,
            std::slice::from_raw_parts_mut(p.add(CODE_HEAD), self.dim),
        );
        (p as *mut f32).write(base);
        (p as *mut f32).add(1).write(step);
        self.code_state(slot).store(CODED, Ordering::Release);
    }

    /// As [`Slots::prefetch`], for `slot`'s code row (all of it).
    #[inline]
    fn prefetch_code(&self, slot: u32) {
        #[cfg(target_arch = "x86_64")]
        {
            let p = self.code_ptr(slot) as *const i8;
            for l in 0..self.cstride {
                // SAFETY: prefetch never faults, and the address is inside the row.
                unsafe {
                    std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                        p.add(64 * l),
                    );
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = slot;
    }

    #[inline]
    fn state(&self, slot: u32) -> u8 {
        self.state[slot as usize].load(Ordering::Acquire)
    }

    #[inline]
    fn label(&self, slot: u32) -> u32 {
        self.labels[slot as usize].load(Ordering::Relaxed)
    }

    /// Hints the CPU to start loading the first `lines` cache lines of `slot`'s
    /// vector (capped at the row length).
    #[inline]
    fn prefetch(&self, slot: u32, lines: usize) {
        #[cfg(target_arch = "x86_64")]
        {
            let p = self.row_ptr(slot) as *const i8;
            for l in 0..lines.min(self.stride) {
                // SAFETY: prefetch never faults, and the address is inside the row.
                unsafe {
                    std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                        p.add(64 * l),
                    );
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (slot, lines);
    }

    /// Hints the CPU to load `slot`'s level-0 link list, which a search is likely to
    /// read soon.
    #[inline]
    fn prefetch_links(&self, slot: u32) {
        #[cfg(target_arch = "x86_64")]
        {
            let base = slot as usize * (self.m0 + 1);
            let p = self.links0[base..].as_ptr() as *const i8;
            // SAFETY: prefetch never faults, even past the array (hence wrapping_add
            // for the second line of a short list).
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p);
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    p.wrapping_add(64),
                );
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = slot;
    }

    /// Appends `slot`'s level-0 list to `buf`. The count is loaded with Acquire,
    /// pairing with the Release store in [`Slots::set_links_locked`].
    #[inline]
    fn links0_into(&self, slot: u32, buf: &mut Vec<u32>) {
        let base = slot as usize * (self.m0 + 1);
        let n = (self.links0[base].load(Ordering::Acquire) as usize).min(self.m0);
        buf.extend(
            self.links0[base + 1..base + 1 + n]
                .iter()
                .map(|a| a.load(Ordering::Relaxed)),
        );
    }

    /// Appends `slot`'s links on level `lc` to `buf` (level 0 without locking).
    #[inline]
    fn read_links(&self, slot: u32, lc: usize, buf: &mut Vec<u32>) {
        buf.clear();
        if lc == 0 {
            self.links0_into(slot, buf);
        } else {
            let meta = self.meta[slot as usize].lock();
            if let Some(l) = meta.upper.get(lc - 1) {
                buf.extend_from_slice(l);
            }
        }
    }

    /// `slot`'s links on level `lc`; the caller holds the node's lock (`meta`).
    fn links_locked(&self, meta: &NodeMeta, slot: u32, lc: usize) -> Vec<u32> {
        let mut v = Vec::new();
        if lc == 0 {
            self.links0_into(slot, &mut v);
        } else if let Some(l) = meta.upper.get(lc - 1) {
            v.extend_from_slice(l);
        }
        v
    }

    /// Replaces `slot`'s links on level `lc`; the caller holds the node's lock.
    fn set_links_locked(&self, meta: &mut NodeMeta, slot: u32, lc: usize, links: &[u32]) {
        if lc == 0 {
            let base = slot as usize * (self.m0 + 1);
            let n = links.len().min(self.m0);
            for (a, &id) in self.links0[base + 1..base + 1 + n].iter().zip(links) {
                a.store(id, Ordering::Relaxed);
            }
            self.links0[base].store(n as u32, Ordering::Release);
        } else if let Some(l) = meta.upper.get_mut(lc - 1) {
            l.clear();
            l.extend_from_slice(links);
        }
    }

    /// Grows to `cap` slots, of which the first `used` hold rows worth
    /// keeping (the rest of the old capacity is zeros, or, past a mapped
    /// snapshot, rows not yet written: not copied, so not touched).
    fn grow(&mut self, cap: usize, used: usize) {
        if !self.vectors.grow_in_place(cap * self.stride) {
            self.vectors = self
                .vectors
                .owned_copy(cap * self.stride, used * self.stride);
        }
        if self.cstride > 0 && !self.codes.grow_in_place(cap * self.cstride) {
            self.codes = self
                .codes
                .owned_copy(cap * self.cstride, used * self.cstride);
        }
        // SAFETY (each): as in `with_capacity`.
        unsafe {
            grow_zeroed(&mut self.state, cap);
            grow_zeroed(&mut self.labels, cap);
            grow_zeroed(&mut self.links0, cap * (self.m0 + 1));
        }
        self.meta
            .extend((self.cap..cap).map(|_| Mutex::new(NodeMeta::default())));
        self.cap = cap;
    }
}

/// How a walk scores nodes against its query.
trait Scorer {
    fn prefetch(&self, slots: &Slots, id: u32);
    fn score(&self, slots: &Slots, id: u32) -> f32;
}

/// Searches: the query against the f32 rows, exact.
struct Exact<'a> {
    space: Space,
    q: &'a [f32],
}

impl Scorer for Exact<'_> {
    #[inline]
    fn prefetch(&self, slots: &Slots, id: u32) {
        slots.prefetch(id, usize::MAX);
    }
    #[inline]
    fn score(&self, slots: &Slots, id: u32) -> f32 {
        self.space.distance(self.q, slots.vector(id))
    }
}

/// Builds: the new vector against the 8-bit code rows. A build walks far
/// more nodes than it keeps, and each f32 row scored was a fresh read from
/// memory (3 KiB for 784 dimensions); codes are a quarter of that. The
/// links chosen differ only where distances are within a code step. Rows
/// without codes (below [`CODED_MIN_DIM`]) are scored exactly.
struct Coded<'a> {
    space: Space,
    q: &'a [f32],
}

impl Scorer for Coded<'_> {
    #[inline]
    fn prefetch(&self, slots: &Slots, id: u32) {
        if slots.cstride > 0 {
            slots.prefetch_code(id);
        } else {
            slots.prefetch(id, usize::MAX);
        }
    }
    #[inline]
    fn score(&self, slots: &Slots, id: u32) -> f32 {
        match slots.code(id) {
            Some(c) => self.space.distance_code(self.q, c),
            None => self.space.distance(self.q, slots.vector(id)),
        }
    }
}

/// `search_layer`'s "accept every live node".
const ALL: Option<fn(u32) -> bool> = None;

/// Per-thread search scratch: visited marks (reset in O(1) by bumping an epoch)
/// and the heaps, kept between searches to avoid allocating.
struct Scratch {
    /// 16-bit marks, as hnswlib's visited lists: half the cache lines of
    /// 32-bit ones, and a search misses cache on about every mark it reads.
    marks: Vec<u16>,
    epoch: u16,
    cands: BinaryHeap<std::cmp::Reverse<Scored>>,
    results: BinaryHeap<Scored>,
    buf: Vec<u32>,
}

impl Scratch {
    /// Starts a search over `cap` slots: clears the heaps and returns a fresh epoch
    /// (a slot is visited when its mark equals it).
    fn begin(&mut self, cap: usize) -> u16 {
        if self.marks.len() < cap {
            self.marks = vec![0; cap];
            self.epoch = 0;
        }
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.marks.fill(0);
            self.epoch = 1;
        }
        self.cands.clear();
        self.results.clear();
        self.epoch
    }
}

/// The heap's contents, nearest first; the heap keeps its capacity.
fn take_sorted(results: &mut BinaryHeap<Scored>) -> Vec<Scored> {
    let mut out: Vec<Scored> = results.drain().collect();
    out.sort_unstable();
    out
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = const {
        RefCell::new(Scratch {
            marks: Vec::new(),
            epoch: 0,
            cands: BinaryHeap::new(),
            results: BinaryHeap::new(),
            buf: Vec::new(),
        })
    };
}

/// Counters describing the index.
#[derive(Debug, Clone, Default)]
pub struct HnswStats {
    pub live: usize,
    pub tombstones: usize,
    pub slots: usize,
    pub free_slots: usize,
    /// Approximate heap bytes for vectors and links.
    pub memory_bytes: usize,
    /// Level-0 links per live node, on average (the graph's degree).
    pub avg_links0: f64,
}

pub struct Hnsw {
    space: Space,
    dim: usize,
    m: usize,
    m0: usize,
    ef_construction: usize,
    ml: f64,
    seed: u64,
    ef_search: AtomicUsize,
    flat_cutoff: AtomicUsize,
    slots: RwLock<Slots>,
    /// Entry slot and its level.
    entry: RwLock<Option<(u32, u8)>>,
    /// Held by an insert that may raise the top level, so two cannot race to.
    top_lock: Mutex<()>,
    labels: RwLock<HashMap<u32, u32>>,
    /// Vacant slots, lowest first: a snapshot leaves out the vacant slots at
    /// the end, so after one the logs must add slots from its end upwards, as
    /// a load checks (a slot far beyond the graph is a damaged log).
    free: Mutex<FreeSlots>,
    tombstones: AtomicUsize,
    pub(crate) log: Option<Mutex<LogWriter>>,
    dir: Option<PathBuf>,
    fs: Arc<dyn FileSystem>,
    /// Serialises repair and condensation.
    pub(crate) maint: Mutex<()>,
    /// Held (shared) by every change for its whole course, so a condensation
    /// from memory ([`Hnsw::condense_live`]) sees the graph between changes,
    /// exactly as its logs replay.
    mutate: RwLock<()>,
    /// Set by [`Hnsw::close`]: no more changes or maintenance.
    closed: AtomicBool,
    /// The commit log's length at the last change (maintenance tells an index
    /// being built from an idle one by whether it moved).
    changed: std::sync::atomic::AtomicU64,
    /// Bytes of the commit logs before the open one that no snapshot holds yet
    /// (a load replayed them: a crash or exit during a condensation leaves
    /// them). They count toward [`Hnsw::log_len`], or maintenance would never
    /// fold them and every restart would replay them again.
    older_logs: AtomicU64,
    /// Slots (and levels) being inserted right now. Two concurrent inserts cannot
    /// find each other by walking the graph (neither is linked yet), so each also
    /// scores the others: otherwise neighbours built side by side link only one
    /// way, and searches starting on the wrong side miss them.
    inserting: Mutex<Vec<(u32, u8)>>,
}

type FreeSlots = BinaryHeap<Reverse<u32>>;

/// Builds an index's arrays from its files (a [`persist::Sink`]): snapshot
/// rows go straight into the slots, logged changes apply to them, and the
/// label map, free list and tombstone count are derived once at the end, as
/// [`Hnsw::restore`] derives them from a plain state.
struct Loader {
    dim: usize,
    /// Slots the logs may add beyond the snapshot (see [`persist::Sink::expect_added`]).
    added: usize,
    slots: Slots,
    entry: Option<(u32, u8)>,
    used: usize,
}

impl Loader {
    fn new(dim: usize, m0: usize) -> Loader {
        Loader {
            dim,
            added: 0,
            slots: Slots::with_capacity(dim, m0, 0),
            entry: None,
            used: 0,
        }
    }

    /// Room for slot `s`; `None` for a slot far beyond the graph (a damaged
    /// log, as [`GraphState::apply`] judges it).
    fn room(&mut self, s: usize) -> Option<()> {
        if s > self.used + persist::MAX_SLOT_JUMP {
            return None;
        }
        if s >= self.slots.cap {
            // No snapshot sized them: the logs' bound, or doubling past it.
            let cap = (s + 1).max(self.slots.cap * 2).max(self.added).max(64);
            self.slots.grow(cap, self.used);
        }
        self.used = self.used.max(s + 1);
        Some(())
    }

    fn set_node(&mut self, s: usize, deleted: bool, label: u32, links: &[Vec<u32>]) {
        let mut meta = NodeMeta {
            level: (links.len() - 1) as u8,
            upper: vec![Vec::new(); links.len() - 1],
        };
        for (lc, l) in links.iter().enumerate() {
            self.slots.set_links_locked(&mut meta, s as u32, lc, l);
        }
        *self.slots.meta[s].get_mut() = meta;
        self.slots.labels[s].store(label, Ordering::Relaxed);
        self.slots.state[s].store(if deleted { DELETED } else { LIVE }, Ordering::Relaxed);
    }

    fn write_row(&mut self, s: usize, v: impl Iterator<Item = f32>) {
        // SAFETY: `s` < cap, and nothing else can see these slots yet.
        let row = unsafe { std::slice::from_raw_parts_mut(self.slots.row_ptr(s as u32), self.dim) };
        row.iter_mut().zip(v).for_each(|(d, x)| *d = x);
    }

    fn install(self, idx: &mut Hnsw) {
        let mut slots = self.slots;
        if slots.cap < 64 {
            // Growth doubles the capacity: never from zero.
            slots.grow(64, self.used);
        }
        let mut labels = HashMap::new();
        let mut free = FreeSlots::new();
        let mut tombs = 0;
        // The rows' codes are left to the changes that first score them
        // (see `Slots::code`): encoding 1M rows (and backing 400 MB of
        // fresh pages) is no reason to make the first query wait.
        for i in 0..self.used {
            match slots.state[i].load(Ordering::Relaxed) {
                VACANT => free.push(Reverse(i as u32)),
                DELETED => tombs += 1,
                _ => {
                    labels.insert(slots.labels[i].load(Ordering::Relaxed), i as u32);
                }
            }
        }
        slots.used.store(self.used as u32, Ordering::Relaxed);
        *idx.slots.get_mut() = slots;
        *idx.labels.get_mut() = labels;
        *idx.free.get_mut() = free;
        *idx.entry.get_mut() = self.entry;
        idx.tombstones.store(tombs, Ordering::Relaxed);
    }
}

impl persist::Sink for Loader {
    fn expect_added(&mut self, slots: usize) {
        // The arrays are sized once, for the snapshot and this (growing them
        // copies, and every page copied to is one more fresh page to fault in).
        self.added = slots;
    }

    fn start(&mut self, _params: &FileParams, n: usize, entry: Option<(u32, u8)>) {
        if n + self.added > self.slots.cap {
            self.slots = Slots::with_capacity(self.dim, self.slots.m0, n + self.added);
        }
        self.used = n;
        self.entry = entry;
    }

    fn map_rows(
        &mut self,
        file: &dyn indigo_fs::ReadableFile,
        offset: u64,
        n: usize,
    ) -> Option<&[u8]> {
        // Only rows that fill whole lines lie in the file as they do in memory.
        if self.dim * 4 != self.slots.stride * 64 || n > self.slots.cap {
            return None;
        }
        let lines = self.slots.cap * self.slots.stride;
        self.slots.vectors = Rows::map(file.raw_fd()?, offset, n, self.slots.stride, lines)?;
        // SAFETY: the first n rows are mapped, and nothing writes them while
        // the reader holds this borrow of the loader.
        Some(unsafe {
            std::slice::from_raw_parts(self.slots.row_ptr(0) as *const u8, n * self.dim * 4)
        })
    }

    fn vector(&mut self, i: usize, row: &[u8]) {
        self.write_row(
            i,
            row.chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap())),
        );
    }

    fn node(&mut self, i: usize, deleted: bool, label: u32, links: Vec<Vec<u32>>) {
        self.set_node(i, deleted, label, &links);
    }

    fn end(&mut self, _n: usize) {}

    fn apply(&mut self, op: Op) -> Option<()> {
        let live = |l: &Loader, s: u32| {
            (s as usize) < l.used && l.slots.state[s as usize].load(Ordering::Relaxed) != VACANT
        };
        match op {
            Op::AddNode {
                slot,
                label,
                level,
                vector,
            } => {
                let s = slot as usize;
                self.room(s)?;
                if vector.len() != self.dim {
                    return None;
                }
                self.write_row(s, vector.into_iter());
                self.set_node(s, false, label, &vec![Vec::new(); level as usize + 1]);
            }
            Op::SetLinks { slot, level, links } => {
                if !live(self, slot) {
                    return None;
                }
                let meta = self.slots.meta[slot as usize].get_mut();
                if level > meta.level {
                    return None;
                }
                let mut meta = std::mem::take(meta);
                self.slots
                    .set_links_locked(&mut meta, slot, level as usize, &links);
                *self.slots.meta[slot as usize].get_mut() = meta;
            }
            Op::SetEntry { slot, level } => {
                self.entry = (slot != NO_ENTRY).then_some((slot, level));
            }
            Op::Tombstone { slot } => {
                if !live(self, slot) {
                    return None;
                }
                self.slots.state[slot as usize].store(DELETED, Ordering::Relaxed);
            }
            Op::Remove { slot } => {
                if slot as usize >= self.used {
                    return None;
                }
                let s = slot as usize;
                self.slots.state[s].store(VACANT, Ordering::Relaxed);
                *self.slots.meta[s].get_mut() = NodeMeta::default();
                self.slots.links0[s * (self.slots.m0 + 1)].store(0, Ordering::Relaxed);
            }
        }
        Some(())
    }

    fn validate(&self) -> std::result::Result<(), String> {
        let n = self.used;
        let s = &self.slots;
        let levels = |i: usize| {
            (s.state[i].load(Ordering::Relaxed) != VACANT).then(|| s.meta[i].lock().level as usize)
        };
        if let Some((slot, level)) = self.entry {
            match (slot as usize) < n {
                true => match levels(slot as usize) {
                    Some(l) if level as usize <= l => {}
                    Some(_) => return Err(format!("entry point {slot} above its level")),
                    None => return Err(format!("entry point {slot} names no node")),
                },
                false => return Err(format!("entry point {slot} names no node")),
            }
        }
        for i in 0..n {
            let Some(level) = levels(i) else { continue };
            if level >= 64 {
                return Err(format!("slot {i} has {} levels", level + 1));
            }
            let meta = s.meta[i].lock();
            for lc in 0..=level {
                if let Some(bad) = s
                    .links_locked(&meta, i as u32, lc)
                    .into_iter()
                    .find(|&l| l as usize >= n)
                {
                    return Err(format!("slot {i} links to slot {bad} of {n}"));
                }
            }
        }
        Ok(())
    }
}

/// Dead nodes a repair walks through, per node and level, to find live
/// replacements for dead links.
const REPAIR_WALK: usize = 64;

/// An insert's entry in [`Hnsw::inserting`], removed when the insert ends
/// (however it ends).
struct Inserting<'a> {
    set: &'a Mutex<Vec<(u32, u8)>>,
    slot: u32,
}

impl<'a> Inserting<'a> {
    fn enter(set: &'a Mutex<Vec<(u32, u8)>>, slot: u32, level: u8) -> Self {
        set.lock().push((slot, level));
        Inserting { set, slot }
    }

    /// The other inserts in progress that have level `lc`.
    fn others(&self, lc: usize) -> Vec<u32> {
        self.set
            .lock()
            .iter()
            .filter(|&&(s, l)| s != self.slot && l as usize >= lc)
            .map(|&(s, _)| s)
            .collect()
    }
}

impl Drop for Inserting<'_> {
    fn drop(&mut self) {
        self.set.lock().retain(|&(s, _)| s != self.slot);
    }
}

impl std::fmt::Debug for Hnsw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hnsw")
            .field("space", &self.space)
            .field("dim", &self.dim)
            .field("m", &self.m)
            .field("len", &self.len())
            .finish()
    }
}

impl Hnsw {
    /// An in-memory index (nothing persisted).
    pub fn new(params: HnswParams) -> Hnsw {
        Self::build(params, None, None)
    }

    fn build(p: HnswParams, log: Option<LogWriter>, dir: Option<PathBuf>) -> Hnsw {
        let m = p.max_neighbors.max(2);
        Hnsw {
            space: p.space,
            dim: p.dim,
            m,
            m0: 2 * m,
            ef_construction: p.ef_construction.max(m),
            ml: 1.0 / (m as f64).ln(),
            seed: p.seed,
            ef_search: AtomicUsize::new(p.ef_search.max(1)),
            flat_cutoff: AtomicUsize::new(p.flat_cutoff),
            slots: RwLock::new(Slots::with_capacity(p.dim, 2 * m, 64)),
            entry: RwLock::new(None),
            top_lock: Mutex::new(()),
            labels: RwLock::new(HashMap::new()),
            free: Mutex::new(FreeSlots::new()),
            tombstones: AtomicUsize::new(0),
            log: log.map(Mutex::new),
            dir,
            fs: Arc::new(StdFs),
            maint: Mutex::new(()),
            mutate: RwLock::new(()),
            closed: AtomicBool::new(false),
            changed: Default::default(),
            older_logs: AtomicU64::new(0),
            inserting: Mutex::new(Vec::new()),
        }
    }

    fn file_params(&self) -> FileParams {
        FileParams {
            dim: self.dim as u32,
            space: self.space,
            m: self.m as u32,
            ef_construction: self.ef_construction as u32,
        }
    }

    /// Opens (or creates) a persistent index in `dir`: loads the newest snapshot,
    /// replays the commit log (cutting a torn tail) and appends after it.
    pub fn open(dir: impl AsRef<Path>, params: HnswParams) -> Result<Hnsw> {
        Self::open_with_fs(Arc::new(StdFs), dir.as_ref(), params)
    }

    /// Loads the index in `dir` for searching only: no file is changed (a torn
    /// tail is left where it is), changes are refused, no maintenance runs. For an
    /// immutable copy, such as an index version in object storage.
    pub fn open_read_only(fs: Arc<dyn FileSystem>, dir: &Path, params: HnswParams) -> Result<Hnsw> {
        let mut idx = Self::build(params, None, Some(dir.to_path_buf()));
        idx.fs = fs.clone();
        let state = persist::load_read_only(&*fs, dir, idx.file_params())?;
        idx.restore(&state);
        idx.closed.store(true, Ordering::Release);
        Ok(idx)
    }

    /// Closes the current commit log (synced) and starts the next, so every file
    /// but the new, empty log is immutable from now on: what an index version
    /// copies. Returns the files that hold the index, oldest first, opened under
    /// the maintenance lock: a condensation that later removes one cannot take
    /// it from the caller.
    pub fn seal(&self) -> Result<Vec<(PathBuf, Arc<dyn indigo_fs::ReadableFile>)>> {
        let (Some(log), Some(dir)) = (&self.log, &self.dir) else {
            return Ok(Vec::new());
        };
        let _m = self.maint.lock();
        {
            let mut l = log.lock();
            l.sync()?;
            if l.len() > persist::LOG_HEADER_LEN as u64 {
                let gen = l.gen;
                *l = LogWriter::create(&*self.fs, dir, gen + 1, &self.file_params())?;
            }
        }
        let (snaps, logs) = persist::list_gens(&*self.fs, dir)?;
        let base = snaps.last().copied().unwrap_or(0);
        let current = log.lock().gen;
        snaps
            .last()
            .map(|&g| persist::snapshot_path(dir, g))
            .into_iter()
            .chain(
                logs.iter()
                    .filter(|&&g| g >= base && g < current)
                    .map(|&g| persist::log_path(dir, g)),
            )
            .map(|p| {
                let f = self.fs.open(&p).map_err(IndexError::io("open", &p))?;
                Ok((p, f))
            })
            .collect()
    }

    /// [`Hnsw::open`] on any [`FileSystem`] (tests inject faults and crashes).
    pub fn open_with_fs(fs: Arc<dyn FileSystem>, dir: &Path, params: HnswParams) -> Result<Hnsw> {
        indigo_fs::create_dir_durable(&*fs, dir)
            .map_err(IndexError::io("create index directory", dir))?;
        let mut idx = Self::build(params, None, Some(dir.to_path_buf()));
        idx.fs = fs.clone();
        // Straight into the index's arrays: a plain copy of the graph first
        // would double a restart's memory (and its time in allocations).
        let mut loader = Loader::new(idx.dim, idx.m0);
        let tail = persist::load_into(&*fs, dir, idx.file_params(), &mut loader)?;
        loader.install(&mut idx);
        let (snaps, logs) = persist::list_gens(&*fs, dir)?;
        // A snapshot `s` holds the logs before `s`.
        let first = snaps.last().copied().unwrap_or(0);
        let log = match tail {
            Some((gen, len)) => {
                // The load replayed the logs from `first` on.
                let mut older = 0;
                for g in logs.into_iter().filter(|&g| g >= first && g < gen) {
                    let path = persist::log_path(dir, g);
                    older += fs
                        .open(&path)
                        .map_err(IndexError::io("open commit log", &path))?
                        .len();
                }
                *idx.older_logs.get_mut() = older;
                LogWriter::reopen(&*fs, &persist::log_path(dir, gen), gen, len)?
            }
            None => LogWriter::create(&*fs, dir, first, &idx.file_params())?,
        };
        idx.log = Some(Mutex::new(log));
        Ok(idx)
    }

    fn restore(&mut self, st: &GraphState) {
        let cap = st.slots.len().max(64);
        let mut slots = Slots::with_capacity(self.dim, self.m0, cap);
        let mut labels = HashMap::new();
        let mut free = FreeSlots::new();
        let mut tombs = 0;
        for (i, s) in st.slots.iter().enumerate() {
            let Some(s) = s else {
                free.push(Reverse(i as u32));
                continue;
            };
            // SAFETY: the slot is in bounds and nothing else can see `slots` yet.
            unsafe { slots.write_vector(i as u32, &s.vector) };
            slots.labels[i].store(s.label, Ordering::Relaxed);
            let mut meta = NodeMeta {
                level: (s.links.len() - 1) as u8,
                upper: vec![Vec::new(); s.links.len() - 1],
            };
            for (lc, l) in s.links.iter().enumerate() {
                slots.set_links_locked(&mut meta, i as u32, lc, l);
            }
            *slots.meta[i].get_mut() = meta;
            if s.deleted {
                slots.state[i].store(DELETED, Ordering::Relaxed);
                tombs += 1;
            } else {
                slots.state[i].store(LIVE, Ordering::Relaxed);
                labels.insert(s.label, i as u32);
            }
        }
        slots.used.store(st.slots.len() as u32, Ordering::Relaxed);
        *self.slots.get_mut() = slots;
        *self.labels.get_mut() = labels;
        *self.free.get_mut() = free;
        *self.entry.get_mut() = st.entry;
        self.tombstones.store(tombs, Ordering::Relaxed);
    }

    /// The graph in plain form (for tests and condensation checks).
    #[cfg(test)]
    pub(crate) fn dump(&self) -> GraphState {
        let slots = self.slots.read();
        let used = slots.used.load(Ordering::Acquire) as usize;
        let mut st = GraphState::new(self.file_params());
        st.entry = *self.entry.read();
        for i in 0..used as u32 {
            let state = slots.state(i);
            st.slots.push((state != VACANT).then(|| {
                let meta = slots.meta[i as usize].lock();
                persist::SlotState {
                    label: slots.label(i),
                    deleted: state == DELETED,
                    vector: slots.vector(i).to_vec(),
                    links: (0..=meta.level as usize)
                        .map(|lc| slots.links_locked(&meta, i, lc))
                        .collect(),
                }
            }));
        }
        st
    }

    pub fn space(&self) -> Space {
        self.space
    }
    pub fn dim(&self) -> usize {
        self.dim
    }
    /// Live (searchable) vectors.
    pub fn len(&self) -> usize {
        self.labels.read().len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn contains(&self, label: u32) -> bool {
        self.labels.read().contains_key(&label)
    }
    pub fn set_ef_search(&self, ef: usize) {
        self.ef_search.store(ef.max(1), Ordering::Relaxed);
    }
    pub fn ef_search(&self) -> usize {
        self.ef_search.load(Ordering::Relaxed)
    }
    pub fn set_flat_cutoff(&self, n: usize) {
        self.flat_cutoff.store(n, Ordering::Relaxed);
    }

    /// Every live label.
    pub fn labels(&self) -> RoaringBitmap {
        self.labels.read().keys().copied().collect()
    }

    /// The exact `k` nearest live vectors (all, or those in `allow`), by scanning.
    pub fn search_exact(
        &self,
        q: &[f32],
        k: usize,
        allow: Option<&RoaringBitmap>,
    ) -> Result<Vec<Neighbor>> {
        check_vector(self.dim, q)?;
        if k == 0 {
            return Ok(Vec::new());
        }
        let q = self.space.prepare_cow(q);
        Ok(self.flat_search(&q, k, allow))
    }

    /// The stored (prepared) vector of `label`.
    pub fn get_vector(&self, label: u32) -> Option<Vec<f32>> {
        let slot = *self.labels.read().get(&label)?;
        Some(self.slots.read().vector(slot).to_vec())
    }

    pub fn stats(&self) -> HnswStats {
        let slots = self.slots.read();
        let used = slots.used.load(Ordering::Acquire) as usize;
        let upper_bytes: usize = slots.meta[..used]
            .iter()
            .map(|m| {
                m.lock()
                    .upper
                    .iter()
                    .map(|l| l.capacity() * 4 + 24)
                    .sum::<usize>()
            })
            .sum();
        let per_slot = self.dim * 4
            + slots.cstride * 64
            + (self.m0 + 1) * 4
            + 1
            + 4
            + std::mem::size_of::<Mutex<NodeMeta>>();
        // The label map: 8 bytes an entry plus about one control byte (hashbrown).
        let label_bytes = self.labels.read().capacity() * 9;
        let (mut links, mut live) = (0usize, 0usize);
        for i in 0..used as u32 {
            if slots.state(i) == LIVE {
                let base = i as usize * (self.m0 + 1);
                links += (slots.links0[base].load(Ordering::Acquire) as usize).min(self.m0);
                live += 1;
            }
        }
        HnswStats {
            avg_links0: links as f64 / live.max(1) as f64,
            live: self.len(),
            tombstones: self.tombstones.load(Ordering::Relaxed),
            slots: used,
            free_slots: self.free.lock().len(),
            memory_bytes: slots.cap * per_slot + upper_bytes + label_bytes,
        }
    }

    fn log(&self, op: Op) -> Result<()> {
        match &self.log {
            Some(l) => {
                let mut l = l.lock();
                self.changed.store(l.len(), Ordering::Relaxed);
                l.append(&op)
            }
            None => Ok(()),
        }
    }

    fn random_level(&self, label: u32, salt: u64) -> u8 {
        let h = xxhash_rust::xxh3::xxh3_64_with_seed(&label.to_le_bytes(), self.seed ^ salt);
        let u = ((h >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        ((-u.ln() * self.ml) as u64).min(u64::from(MAX_LEVEL)) as u8
    }

    /// Reserves a free slot, growing the arrays if needed. Returns with a read lock.
    fn reserve_slot(&self) -> (parking_lot::RwLockReadGuard<'_, Slots>, u32) {
        loop {
            let g = self.slots.read();
            if let Some(Reverse(s)) = self.free.lock().pop() {
                return (g, s);
            }
            let cap = g.cap as u32;
            if let Ok(s) = g
                .used
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                    (u < cap).then_some(u + 1)
                })
            {
                return (g, s);
            }
            drop(g);
            let mut w = self.slots.write();
            let used = w.used.load(Ordering::Acquire) as usize;
            if used >= w.cap {
                let cap = (w.cap * 2).max(64);
                w.grow(cap, used);
            }
        }
    }

    /// Inserts `v` under `label`; an existing vector for `label` is replaced
    /// (delete + insert).
    pub fn insert(&self, label: u32, v: &[f32]) -> Result<()> {
        check_vector(self.dim, v)?;
        let _changing = self.mutate.read_recursive();
        let q = self.space.prepare(v);
        self.delete(label)?;
        let level = self.random_level(label, 0);
        let (slots, slot) = self.reserve_slot();
        // SAFETY: `slot` was just reserved by this thread and is not linked anywhere.
        unsafe { slots.write_vector(slot, &q) };
        {
            let mut meta = slots.meta[slot as usize].lock();
            *meta = NodeMeta {
                level,
                upper: vec![Vec::new(); level as usize],
            };
            slots.set_links_locked(&mut meta, slot, 0, &[]);
            slots.labels[slot as usize].store(label, Ordering::Relaxed);
            self.log(Op::AddNode {
                slot,
                label,
                level,
                vector: q.clone(),
            })?;
            slots.state[slot as usize].store(LIVE, Ordering::Release);
        }
        self.labels.write().insert(label, slot);
        let peers = Inserting::enter(&self.inserting, slot, level);

        let top_guard = {
            let e = *self.entry.read();
            match e {
                Some((_, top)) if level <= top => None,
                _ => Some(self.top_lock.lock()),
            }
        };
        let Some((ep, top)) = *self.entry.read() else {
            let mut e = self.entry.write();
            *e = Some((slot, level));
            self.log(Op::SetEntry { slot, level })?;
            drop(top_guard);
            return Ok(());
        };

        let coded = Coded {
            space: self.space,
            q: &q,
        };
        let mut cur = Scored {
            dist: coded.score(&slots, ep),
            id: ep,
        };
        for lc in (level as usize + 1..=top as usize).rev() {
            cur = self.greedy(&slots, &coded, cur, lc);
        }
        let mut eps = vec![cur];
        for lc in (0..=level.min(top) as usize).rev() {
            let found = self.search_layer(&slots, &coded, &eps, self.ef_construction, lc, ALL);
            let live: Vec<Scored> = found
                .iter()
                .copied()
                .filter(|s| s.id != slot && slots.state(s.id) == LIVE)
                .collect();
            let mut neighbors = self.select(&slots, &live, self.m);
            // Concurrent inserts are added after the walk's picks and never displace
            // them: a peer is not linked into the graph yet, so the heuristic's
            // premise (a kept neighbour leads on to a dropped one) does not hold
            // for it; a stalled peer would otherwise collect everything built
            // meanwhile and, pruned when full, strand it.
            let mut extra: Vec<Scored> = peers
                .others(lc)
                .into_iter()
                .filter(|&p| slots.state(p) == LIVE && !neighbors.iter().any(|s| s.id == p))
                .map(|p| Scored {
                    dist: coded.score(&slots, p),
                    id: p,
                })
                .collect();
            extra.sort_unstable();
            let mut dec = vec![0.0; self.dim];
            for c in extra {
                if neighbors.len() >= self.m {
                    break;
                }
                if self.diverse(&slots, &c, &neighbors, &mut dec) {
                    neighbors.push(c);
                }
            }
            let cap = if lc == 0 { self.m0 } else { self.m };
            {
                let mut meta = slots.meta[slot as usize].lock();
                // Concurrent inserts that found this node on a higher level may
                // already have linked to it here: keep their links too, or a run of
                // such nodes becomes an island nothing links into (collinear
                // points showed it: whole runs unreachable after a 2-thread build).
                let ids = self.merge_links(
                    &slots,
                    slot,
                    &neighbors,
                    &slots.links_locked(&meta, slot, lc),
                    cap,
                );
                slots.set_links_locked(&mut meta, slot, lc, &ids);
                self.log(Op::SetLinks {
                    slot,
                    level: lc as u8,
                    links: ids,
                })?;
            }
            for nb in &neighbors {
                self.add_link(&slots, nb.id, slot, nb.dist, lc, cap)?;
            }
            if !found.is_empty() {
                eps = found;
            }
        }
        if level > top {
            *self.entry.write() = Some((slot, level));
            self.log(Op::SetEntry { slot, level })?;
        }
        drop(top_guard);
        Ok(())
    }

    /// The links a new node gets on one level: the `chosen` neighbours plus any
    /// `existing` links concurrent inserts added meanwhile, pruned with the
    /// heuristic only if together they exceed `cap`.
    fn merge_links(
        &self,
        slots: &Slots,
        slot: u32,
        chosen: &[Scored],
        existing: &[u32],
        cap: usize,
    ) -> Vec<u32> {
        let mut cands: Vec<Scored> = chosen.to_vec();
        let base = Coded {
            space: self.space,
            q: slots.vector(slot),
        };
        for &id in existing {
            if id != slot && !cands.iter().any(|c| c.id == id) {
                cands.push(Scored {
                    dist: base.score(slots, id),
                    id,
                });
            }
        }
        if cands.len() > cap {
            cands.sort_unstable();
            cands = self.select(slots, &cands, cap);
        }
        cands.iter().map(|s| s.id).collect()
    }

    /// Adds `new` to `at`'s links on level `lc`, pruning with the heuristic when full.
    fn add_link(
        &self,
        slots: &Slots,
        at: u32,
        new: u32,
        dist: f32,
        lc: usize,
        cap: usize,
    ) -> Result<()> {
        let mut meta = slots.meta[at as usize].lock();
        if lc > meta.level as usize {
            return Ok(());
        }
        let mut links = slots.links_locked(&meta, at, lc);
        if links.contains(&new) {
            return Ok(());
        }
        if links.len() < cap {
            links.push(new);
        } else {
            let base = Coded {
                space: self.space,
                q: slots.vector(at),
            };
            let mut cands: Vec<Scored> = links
                .iter()
                .map(|&id| Scored {
                    dist: base.score(slots, id),
                    id,
                })
                .collect();
            cands.push(Scored { dist, id: new });
            cands.sort_unstable();
            links = self
                .select(slots, &cands, cap)
                .iter()
                .map(|s| s.id)
                .collect();
        }
        slots.set_links_locked(&mut meta, at, lc, &links);
        self.log(Op::SetLinks {
            slot: at,
            level: lc as u8,
            links,
        })
    }

    /// The heuristic's test: `c` is no nearer to any of `kept` than to the base. A
    /// tie keeps it (as hnswlib does): on evenly spaced points, dropping ties left
    /// each node one link per side and searches stranded on the wrong side. But
    /// not a tie at distance 0: copies of the base would all be kept, and lists
    /// full of duplicates made every later link a full re-selection (a compactor
    /// spent minutes on one small collection of Chroma's test data).
    /// Distances are between codes (`c` decoded into `dec`, `dim` long).
    fn diverse(&self, slots: &Slots, c: &Scored, kept: &[Scored], dec: &mut [f32]) -> bool {
        if kept.is_empty() {
            return true;
        }
        match slots.code(c.id) {
            Some(code) => decode(code, dec),
            None => dec.copy_from_slice(slots.vector(c.id)),
        }
        let v = Coded {
            space: self.space,
            q: dec,
        };
        kept.iter().all(|r| {
            let d = v.score(slots, r.id);
            d > c.dist || (d == c.dist && c.dist > 0.0)
        })
    }

    /// The neighbour-selection heuristic: keep a candidate only if it is closer to
    /// the base than to every neighbour kept so far. `cands` is sorted ascending.
    fn select(&self, slots: &Slots, cands: &[Scored], m: usize) -> Vec<Scored> {
        let mut out: Vec<Scored> = Vec::with_capacity(m);
        let mut dec = vec![0.0; self.dim];
        for c in cands {
            if out.len() >= m {
                break;
            }
            if self.diverse(slots, c, &out, &mut dec) {
                out.push(*c);
            }
        }
        out
    }

    /// Scores `ids` against `q` (skipping vacant slots), calling `f(id, distance)`.
    /// The search loops' hot path: the rows of the next two ids load while each
    /// distance is computed, which is what keeps the walk from stalling on memory.
    #[inline]
    fn score_each<S: Scorer>(
        &self,
        slots: &Slots,
        q: &S,
        ids: &[u32],
        mut f: impl FnMut(u32, f32),
    ) {
        const AHEAD: usize = 2;
        for &n in ids.iter().take(AHEAD) {
            q.prefetch(slots, n);
        }
        for (j, &n) in ids.iter().enumerate() {
            if let Some(&next) = ids.get(j + AHEAD) {
                q.prefetch(slots, next);
            }
            if slots.state(n) != VACANT {
                f(n, q.score(slots, n));
            }
        }
    }

    fn greedy<S: Scorer>(&self, slots: &Slots, q: &S, mut cur: Scored, lc: usize) -> Scored {
        let mut buf = Vec::with_capacity(self.m0);
        loop {
            let mut changed = false;
            slots.read_links(cur.id, lc, &mut buf);
            self.score_each(slots, q, &buf, |n, d| {
                if d < cur.dist {
                    cur = Scored { dist: d, id: n };
                    changed = true;
                }
            });
            if !changed {
                return cur;
            }
        }
    }

    /// Best-first search on one level. Every non-vacant node is a stepping stone;
    /// only live nodes whose label `accept` approves (all, if `None`: no label
    /// is then read) enter the results. Sorted ascending.
    fn search_layer<S: Scorer, F: Fn(u32) -> bool>(
        &self,
        slots: &Slots,
        q: &S,
        eps: &[Scored],
        ef: usize,
        lc: usize,
        accept: Option<F>,
    ) -> Vec<Scored> {
        SCRATCH.with(|sc| {
            let sc = &mut *sc.borrow_mut();
            let epoch = sc.begin(slots.cap);
            let ok = |id: u32| {
                slots.state(id) == LIVE && accept.as_ref().is_none_or(|a| a(slots.label(id)))
            };
            let Scratch {
                marks,
                cands,
                results,
                buf,
                ..
            } = sc;
            for &e in eps {
                if marks[e.id as usize] == epoch {
                    continue;
                }
                marks[e.id as usize] = epoch;
                cands.push(std::cmp::Reverse(e));
                if ok(e.id) {
                    results.push(e);
                    if results.len() > ef {
                        results.pop();
                    }
                }
            }
            while let Some(std::cmp::Reverse(c)) = cands.pop() {
                if results.len() >= ef && c.dist > results.peek().unwrap().dist {
                    break;
                }
                slots.read_links(c.id, lc, buf);
                // Mark and prefetch first, so the vector loads overlap.
                buf.retain(|&n| {
                    let m = &mut marks[n as usize];
                    let fresh = *m != epoch;
                    *m = epoch;
                    fresh
                });
                self.score_each(slots, q, buf, |n, d| {
                    if results.len() < ef || d < results.peek().unwrap().dist {
                        let s = Scored { dist: d, id: n };
                        slots.prefetch_links(n);
                        cands.push(std::cmp::Reverse(s));
                        if ok(n) {
                            results.push(s);
                            if results.len() > ef {
                                results.pop();
                            }
                        }
                    }
                });
            }
            take_sorted(results)
        })
    }

    /// Filtered best-first search on level 0, ACORN-1 style: a disallowed neighbour
    /// is not scored but looked through, so its own neighbours (two hops away) that
    /// pass the filter become candidates. Only allowed live nodes are scored, queued
    /// and returned, so the walk stays inside the filtered subgraph instead of
    /// wandering the whole graph. Sorted ascending.
    fn search_filtered(
        &self,
        slots: &Slots,
        q: &Exact<'_>,
        entry: Scored,
        ef: usize,
        allow: &RoaringBitmap,
    ) -> Vec<Scored> {
        SCRATCH.with(|sc| {
            let sc = &mut *sc.borrow_mut();
            let epoch = sc.begin(slots.cap);
            let ok = |id: u32| slots.state(id) == LIVE && allow.contains(slots.label(id));
            let Scratch {
                marks,
                cands,
                results,
                buf,
                ..
            } = sc;
            let mut hop = Vec::with_capacity(self.m0);
            let budget = self.m0;
            let mut picked: Vec<u32> = Vec::with_capacity(budget);
            marks[entry.id as usize] = epoch;
            // The entry is expanded even if the filter rejects it.
            cands.push(std::cmp::Reverse(entry));
            if ok(entry.id) {
                results.push(entry);
            }
            while let Some(std::cmp::Reverse(c)) = cands.pop() {
                if results.len() >= ef && c.dist > results.peek().unwrap().dist {
                    break;
                }
                slots.read_links(c.id, 0, buf);
                picked.clear();
                for &v in buf.iter() {
                    if picked.len() >= budget {
                        break;
                    }
                    if marks[v as usize] == epoch {
                        continue;
                    }
                    marks[v as usize] = epoch;
                    match slots.state(v) {
                        VACANT => continue,
                        LIVE if allow.contains(slots.label(v)) => picked.push(v),
                        _ => {
                            slots.read_links(v, 0, &mut hop);
                            for &w in &hop {
                                if picked.len() >= budget {
                                    break;
                                }
                                if marks[w as usize] != epoch && ok(w) {
                                    marks[w as usize] = epoch;
                                    picked.push(w);
                                }
                            }
                        }
                    }
                }
                self.score_each(slots, q, &picked, |n, d| {
                    if results.len() < ef || d < results.peek().unwrap().dist {
                        let s = Scored { dist: d, id: n };
                        slots.prefetch_links(n);
                        cands.push(std::cmp::Reverse(s));
                        results.push(s);
                        if results.len() > ef {
                            results.pop();
                        }
                    }
                });
            }
            take_sorted(results)
        })
    }

    /// The `k` nearest live vectors to `q`, optionally only among labels in `allow`.
    /// Returns min(k, matching vectors) results, nearest first.
    pub fn search(
        &self,
        q: &[f32],
        k: usize,
        allow: Option<&RoaringBitmap>,
    ) -> Result<Vec<Neighbor>> {
        check_vector(self.dim, q)?;
        if k == 0 {
            return Ok(Vec::new());
        }
        let q = self.space.prepare_cow(q);
        let mut ef = self.ef_search.load(Ordering::Relaxed).max(k);
        // How a filtered search goes, by selectivity s = allowed / indexed
        // (`ingest --filter-sweep` prints the sweep; figures at ef 100 on 500k
        // wordnet vectors grown by interpolation):
        // - few allowed (at most the cut-off, at most 2%, or no more than the
        //   walk's ef): scan them exactly. A walk must visit about ef/s nodes to
        //   find ef matches, no fewer than the scan; with fewer matches than ef
        //   it would visit every node it can reach.
        // - over 2%: the ordinary walk, matches only in the results. It visits
        //   about ef/s of the nearest nodes; ef is 10·s·ef, at least ef and at
        //   most 4× ef, so that depth is 10× ef from 10% to 40%, more below
        //   and 8× at 50%: recall@10 0.999 / 0.994 / 0.995 / 0.988 at 5 / 10 /
        //   30 / 50%.
        // - with the scan turned off (cut-off 0) and at most 2%: the ACORN walk
        //   inside the filtered subgraph, 4× ef. Measured worse than the ordinary
        //   walk from 2% up (0.954 at 5%, where the ordinary walk gave 0.999).
        let mut walk_all = false;
        if let Some(a) = allow {
            let cutoff = self.flat_cutoff.load(Ordering::Relaxed);
            let (m, n) = (a.len() as usize, self.len().max(1));
            if m <= cutoff || (cutoff > 0 && m * 50 <= n) {
                return Ok(self.flat_search(&q, k, Some(a)));
            }
            walk_all = m * 50 > n;
            ef = if walk_all {
                let scaled = (ef as u128 * 10 * m as u128 / n as u128) as usize;
                scaled.clamp(ef, ef.saturating_mul(4))
            } else {
                ef.saturating_mul(4)
            };
            if cutoff > 0 && m <= ef {
                return Ok(self.flat_search(&q, k, Some(a)));
            }
        }
        let slots = self.slots.read();
        let Some((ep, top)) = *self.entry.read() else {
            return Ok(Vec::new());
        };
        let mut cur = Scored {
            dist: self.space.distance(&q, slots.vector(ep)),
            id: ep,
        };
        let exact = Exact {
            space: self.space,
            q: &q,
        };
        for lc in (1..=top as usize).rev() {
            cur = self.greedy(&slots, &exact, cur, lc);
        }
        let found = match allow {
            Some(a) if walk_all => {
                self.search_layer(&slots, &exact, &[cur], ef, 0, Some(|l| a.contains(l)))
            }
            Some(a) => self.search_filtered(&slots, &exact, cur, ef, a),
            None => self.search_layer(&slots, &exact, &[cur], ef, 0, ALL),
        };
        let out: Vec<Neighbor> = found
            .iter()
            .take(k)
            .map(|s| Neighbor {
                label: slots.label(s.id),
                distance: s.dist,
            })
            .collect();
        drop(slots);
        if out.len() < k {
            // The walk can miss matches in a sparse region; never return fewer than
            // exist.
            let available = match allow {
                Some(a) => {
                    let labels = self.labels.read();
                    a.iter().filter(|l| labels.contains_key(l)).take(k).count()
                }
                None => self.len().min(k),
            };
            if out.len() < available {
                return Ok(self.flat_search(&q, k, allow));
            }
        }
        Ok(out)
    }

    /// The `k` nearest live vectors to `q` whose labels `accept` approves, by the
    /// unfiltered walk: rejected nodes are stepping stones, never results. For a
    /// predicate that rejects few (labels a reader's snapshot does not hold yet),
    /// where an allow-list would cost more than the search; may return fewer
    /// than `k` when it rejects many.
    pub fn search_where(
        &self,
        q: &[f32],
        k: usize,
        accept: impl Fn(u32) -> bool,
    ) -> Result<Vec<Neighbor>> {
        check_vector(self.dim, q)?;
        if k == 0 {
            return Ok(Vec::new());
        }
        let q = self.space.prepare_cow(q);
        let slots = self.slots.read();
        let Some((ep, top)) = *self.entry.read() else {
            return Ok(Vec::new());
        };
        let ef = self.ef_search.load(Ordering::Relaxed).max(k);
        let mut cur = Scored {
            dist: self.space.distance(&q, slots.vector(ep)),
            id: ep,
        };
        let exact = Exact {
            space: self.space,
            q: &q,
        };
        for lc in (1..=top as usize).rev() {
            cur = self.greedy(&slots, &exact, cur, lc);
        }
        let found = self.search_layer(&slots, &exact, &[cur], ef, 0, Some(accept));
        Ok(found
            .iter()
            .take(k)
            .map(|s| Neighbor {
                label: slots.label(s.id),
                distance: s.dist,
            })
            .collect())
    }

    /// Exact search over live vectors (all, or those in `allow`). `q` is prepared.
    fn flat_search(&self, q: &[f32], k: usize, allow: Option<&RoaringBitmap>) -> Vec<Neighbor> {
        let slots = self.slots.read();
        let mut top = TopK::new(k);
        match allow {
            Some(a) => {
                let labels = self.labels.read();
                for l in a {
                    if let Some(&s) = labels.get(&l) {
                        top.push(self.space.distance(q, slots.vector(s)), l);
                    }
                }
            }
            None => {
                let used = slots.used.load(Ordering::Acquire);
                for i in 0..used {
                    if slots.state(i) == LIVE {
                        top.push(self.space.distance(q, slots.vector(i)), slots.label(i));
                    }
                }
            }
        }
        top.into_sorted()
    }

    /// Marks `label` deleted: searches skip it at once; [`Hnsw::repair`] later
    /// reconnects its neighbours and reuses its slot. Returns whether it existed.
    pub fn delete(&self, label: u32) -> Result<bool> {
        let _changing = self.mutate.read_recursive();
        let Some(slot) = self.labels.write().remove(&label) else {
            return Ok(false);
        };
        let slots = self.slots.read();
        let _meta = slots.meta[slot as usize].lock();
        slots.state[slot as usize].store(DELETED, Ordering::Release);
        self.tombstones.fetch_add(1, Ordering::Relaxed);
        self.log(Op::Tombstone { slot })?;
        Ok(true)
    }

    /// Tombstoned nodes waiting for repair.
    pub fn tombstones(&self) -> usize {
        self.tombstones.load(Ordering::Relaxed)
    }

    /// Reconnects the neighbours of deleted nodes (each takes the deleted node's
    /// own neighbours as candidates, re-selected with the heuristic), moves the entry
    /// point off deleted nodes, then frees their slots for reuse. Runs beside
    /// searches and inserts.
    pub fn repair(&self) -> Result<usize> {
        let _m = self.maint.lock();
        let _changing = self.mutate.read_recursive();
        let slots = self.slots.read();
        let used = slots.used.load(Ordering::Acquire);
        let dead: RoaringBitmap = (0..used).filter(|&i| slots.state(i) == DELETED).collect();
        if dead.is_empty() {
            return Ok(0);
        }
        let mut buf = Vec::new();
        let mut nb = Vec::new();
        for i in 0..used {
            if slots.state(i) != LIVE {
                continue;
            }
            let levels = slots.meta[i as usize].lock().level as usize + 1;
            for lc in 0..levels {
                slots.read_links(i, lc, &mut buf);
                if !buf.iter().any(|&x| dead.contains(x)) {
                    continue;
                }
                // Live links stay (a list is pruned only when full, as inserts
                // do; pruning here once cut the only way on along a line of
                // points); the dead ones' links are the candidates to replace them,
                // taken by the heuristic against what is kept.
                let base = Coded {
                    space: self.space,
                    q: slots.vector(i),
                };
                let score = |c: u32| Scored {
                    dist: base.score(&slots, c),
                    id: c,
                };
                let mut kept: Vec<Scored> = buf
                    .iter()
                    .copied()
                    .filter(|&x| !dead.contains(x) && slots.state(x) == LIVE)
                    .map(score)
                    .collect();
                // Walk on through dead nodes (as searches did, using them as
                // stepping stones) to the live ones beyond: after a mass re-insert
                // a dead neighbour's own links are often all dead too.
                let mut cands: Vec<u32> = Vec::new();
                let mut queue: std::collections::VecDeque<u32> =
                    buf.iter().copied().filter(|&x| dead.contains(x)).collect();
                let mut seen: std::collections::HashSet<u32> = queue.iter().copied().collect();
                // The dead neighbours' own links are all candidates (as before);
                // further dead nodes are walked only while too few live ones
                // turned up, so repair after a mass delete stays near linear.
                let direct = queue.len();
                let mut walked = 0;
                while let Some(x) = queue.pop_front() {
                    if walked >= REPAIR_WALK || (walked >= direct && cands.len() >= self.m) {
                        break;
                    }
                    walked += 1;
                    slots.read_links(x, lc, &mut nb);
                    for &y in &nb {
                        if y == i || !seen.insert(y) {
                            continue;
                        }
                        if dead.contains(y) {
                            queue.push_back(y);
                        } else if slots.state(y) == LIVE && !kept.iter().any(|k| k.id == y) {
                            cands.push(y);
                        }
                    }
                }
                cands.sort_unstable();
                cands.dedup();
                let mut scored: Vec<Scored> = cands.into_iter().map(score).collect();
                scored.sort_unstable();
                let cap = if lc == 0 { self.m0 } else { self.m };
                let mut dec = vec![0.0; self.dim];
                for c in scored {
                    if kept.len() >= cap {
                        break;
                    }
                    if self.diverse(&slots, &c, &kept, &mut dec) {
                        kept.push(c);
                    }
                }
                let mut chosen: Vec<u32> = kept.iter().map(|s| s.id).collect();
                let mut meta = slots.meta[i as usize].lock();
                // Keep links added concurrently since we read the list.
                for x in slots.links_locked(&meta, i, lc) {
                    if !dead.contains(x)
                        && !buf.contains(&x)
                        && chosen.len() < cap
                        && !chosen.contains(&x)
                    {
                        chosen.push(x);
                    }
                }
                slots.set_links_locked(&mut meta, i, lc, &chosen);
                self.log(Op::SetLinks {
                    slot: i,
                    level: lc as u8,
                    links: chosen,
                })?;
            }
        }
        {
            let _top = self.top_lock.lock();
            let mut e = self.entry.write();
            if e.is_some_and(|(s, _)| dead.contains(s)) {
                let mut best: Option<(u32, u8)> = None;
                for i in 0..used {
                    if slots.state(i) == LIVE {
                        let lvl = slots.meta[i as usize].lock().level;
                        if best.is_none_or(|(_, l)| lvl > l) {
                            best = Some((i, lvl));
                        }
                    }
                }
                *e = best;
                let (slot, level) = best.unwrap_or((NO_ENTRY, 0));
                self.log(Op::SetEntry { slot, level })?;
            }
        }
        // Live nodes that only dead nodes led to become unreachable once those go
        // (relinking above mends out-links, not in-links): walk level 0 from the
        // entry over live nodes, and link every node not reached from its nearest
        // reached ones, as an insert would.
        let mut reached = RoaringBitmap::new();
        if let Some((ep, _)) = *self.entry.read() {
            if slots.state(ep) == LIVE {
                reached.insert(ep);
                let mut stack = vec![ep];
                while let Some(x) = stack.pop() {
                    slots.read_links(x, 0, &mut buf);
                    for &y in &buf {
                        if slots.state(y) == LIVE && !dead.contains(y) && reached.insert(y) {
                            stack.push(y);
                        }
                    }
                }
            }
        }
        if !reached.is_empty() {
            for i in 0..used {
                if slots.state(i) == LIVE && !reached.contains(i) {
                    self.relink(&slots, i, &reached)?;
                    reached.insert(i);
                }
            }
        }
        drop(slots);
        let slots = self.slots.write();
        let mut freed = 0;
        let mut free = self.free.lock();
        for d in &dead {
            if slots.state(d) == DELETED {
                let mut meta = slots.meta[d as usize].lock();
                slots.state[d as usize].store(VACANT, Ordering::Release);
                slots.set_links_locked(&mut meta, d, 0, &[]);
                *meta = NodeMeta::default();
                self.log(Op::Remove { slot: d })?;
                free.push(Reverse(d));
                freed += 1;
            }
        }
        self.tombstones.fetch_sub(freed, Ordering::Relaxed);
        Ok(freed)
    }

    /// Gives live node `i`, which the walk from the entry did not reach, in-links
    /// on level 0 from its nearest `reached` nodes; the nearest keeps its link
    /// to `i` even if the selection heuristic would drop it.
    fn relink(&self, slots: &Slots, i: u32, reached: &RoaringBitmap) -> Result<()> {
        let Some((ep, top)) = *self.entry.read() else {
            return Ok(());
        };
        let q = slots.vector(i).to_vec();
        let coded = Coded {
            space: self.space,
            q: &q,
        };
        let at_ep = Scored {
            dist: coded.score(slots, ep),
            id: ep,
        };
        let mut cur = at_ep;
        for lc in (1..=top as usize).rev() {
            cur = self.greedy(slots, &coded, cur, lc);
        }
        let found = self.search_layer(slots, &coded, &[cur], self.ef_construction, 0, ALL);
        let mut live: Vec<Scored> = found
            .into_iter()
            .filter(|s| s.id != i && reached.contains(s.id))
            .collect();
        if live.is_empty() {
            live.push(at_ep);
        }
        let neighbors = self.select(slots, &live, self.m);
        for nb in &neighbors {
            self.add_link(slots, nb.id, i, nb.dist, 0, self.m0)?;
        }
        let nearest = neighbors.first().copied().unwrap_or(live[0]);
        let mut meta = slots.meta[nearest.id as usize].lock();
        let mut links = slots.links_locked(&meta, nearest.id, 0);
        if !links.contains(&i) {
            if links.len() >= self.m0 {
                links.pop();
            }
            links.push(i);
            slots.set_links_locked(&mut meta, nearest.id, 0, &links);
            self.log(Op::SetLinks {
                slot: nearest.id,
                level: 0,
                links,
            })?;
        }
        Ok(())
    }

    /// Makes room for `additional` more vectors at once, so a batch grows the
    /// arrays at most once. Growth is still at least a doubling: the compactor
    /// reserves once per chunk, and growing to the exact size each time copied
    /// (and zeroed) the whole index per chunk, quadratic in its size (17% of a
    /// 60k × 784 ingest's CPU). Capacity not yet used is zeroed memory, mostly
    /// not yet touched.
    pub fn reserve(&self, additional: usize) {
        let mut w = self.slots.write();
        let used = w.used.load(Ordering::Acquire) as usize;
        let want = used + additional;
        if want > w.cap {
            // Slot numbers are u32.
            let cap = want.max(w.cap * 2).min(1 << 32);
            w.grow(cap, used);
        }
    }

    /// Inserts many vectors using `threads` threads.
    pub fn insert_parallel(&self, items: &[(u32, &[f32])], threads: usize) -> Result<()> {
        self.insert_parallel_beside(items, threads, || ()).0
    }

    /// [`Hnsw::insert_parallel`], running `beside` on the calling thread while
    /// the workers insert: the compactor builds its store batch there, off the
    /// critical path, instead of leaving a core idle before or after.
    pub fn insert_parallel_beside<R>(
        &self,
        items: &[(u32, &[f32])],
        threads: usize,
        beside: impl FnOnce() -> R,
    ) -> (Result<()>, R) {
        // Before `reserve`: a condensation from memory holds `slots` read while
        // it writes, and a `slots` writer waiting behind it would hold off
        // every search until the snapshot is on disk.
        let _changing = self.mutate.read_recursive();
        // Not in one expression: the `free` guard would live through `reserve`,
        // which takes `slots` (repair takes them in the other order).
        let reusable = self.free.lock().len();
        self.reserve(items.len().saturating_sub(reusable));
        let next = AtomicUsize::new(0);
        let err: Mutex<Option<IndexError>> = Mutex::new(None);
        let r = std::thread::scope(|s| {
            for _ in 0..threads.max(1) {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= items.len() || err.lock().is_some() {
                        break;
                    }
                    if let Err(e) = self.insert(items[i].0, items[i].1) {
                        *err.lock() = Some(e);
                    }
                });
            }
            beside()
        });
        match err.into_inner() {
            Some(e) => (Err(e), r),
            None => (Ok(()), r),
        }
    }

    /// Makes every change so far durable (no-op for an in-memory index).
    pub fn sync(&self) -> Result<()> {
        match &self.log {
            Some(l) => l.lock().sync(),
            None => Ok(()),
        }
    }

    /// About the bytes a snapshot of the graph takes: vectors and level-0 links.
    pub fn graph_bytes(&self) -> u64 {
        self.len() as u64 * (self.dim as u64 * 4 + (self.m0 as u64 + 1) * 4)
    }

    /// Bytes of commit log a load would replay: the open log (buffered bytes
    /// included) and older ones no snapshot holds yet.
    pub fn log_len(&self) -> u64 {
        self.log.as_ref().map_or(0, |l| l.lock().len()) + self.older_logs.load(Ordering::Acquire)
    }

    /// Closes the current commit log, starts a new one, and folds the old log into a
    /// new snapshot. Searches and inserts continue meanwhile.
    pub fn condense(&self) -> Result<()> {
        self.condense_inner(None)
    }

    pub(crate) fn condense_inner(&self, crash_after: Option<u8>) -> Result<()> {
        let (Some(log), Some(dir)) = (&self.log, &self.dir) else {
            return Ok(());
        };
        let _m = self.maint.lock();
        self.copy_rows_off(false);
        let gen = {
            let mut l = log.lock();
            l.sync()?;
            let gen = l.gen;
            *l = LogWriter::create(&*self.fs, dir, gen + 1, &self.file_params())?;
            gen
        };
        persist::condense(&*self.fs, dir, gen, self.file_params(), crash_after)?;
        // The snapshot holds every log up to `gen`.
        if crash_after.is_none() {
            self.older_logs.store(0, Ordering::Release);
        }
        Ok(())
    }

    /// How many occupied slots have their code written (a load or a drop
    /// leaves them to the changes that score them).
    #[cfg(test)]
    pub(crate) fn coded_rows(&self) -> usize {
        let slots = self.slots.read();
        (0..slots.used.load(Ordering::Acquire))
            .filter(|&i| slots.state(i) != VACANT)
            .filter(|&i| slots.code_state(i).load(Ordering::Acquire) == CODED)
            .count()
    }

    /// The slots whose written code is not their row's encoding.
    #[cfg(test)]
    pub(crate) fn stale_codes(&self) -> Vec<u32> {
        let slots = self.slots.read();
        let mut want = vec![0u8; self.dim];
        (0..slots.used.load(Ordering::Acquire))
            .filter(|&i| slots.state(i) != VACANT)
            .filter(|&i| slots.code_state(i).load(Ordering::Acquire) == CODED)
            .filter(|&i| {
                let (base, step) = encode(slots.vector(i), &mut want);
                let c = slots.code(i).unwrap();
                (c.base, c.step, c.codes) != (base, step, &want[..])
            })
            .collect()
    }

    /// Gives the build codes' memory back to the system while the index takes
    /// no changes (maintenance calls it once the index is quiet): they are a
    /// fifth of a 784-dimensional index's memory and only builds read them.
    /// Changes encode rows again as they first score them ([`Slots::code`]),
    /// so a trickle of adds re-encodes what it walks, not the whole index.
    /// Returns false if a change was under way (nothing was dropped: try
    /// again once it is quiet); true once dropped, or when there is nothing
    /// to drop (no codes below [`CODED_MIN_DIM`], or too few to be a
    /// mapping of their own).
    pub fn drop_codes(&self) -> bool {
        if code_stride(self.dim) == 0 {
            return true;
        }
        // No change runs meanwhile, so no code row is being read or written.
        let Some(_still) = self.mutate.try_write() else {
            return false;
        };
        let slots = self.slots.read();
        // Zero memory reads back as UNCODED rows.
        slots.codes.discard();
        true
    }

    /// Whether the vector rows are an anonymous mapping of the index's own
    /// (grown in place).
    #[cfg(test)]
    pub(crate) fn rows_anon(&self) -> bool {
        self.slots.read().vectors.kind == RowsKind::Anon
    }

    /// Whether the vector rows are (partly) a mapped snapshot.
    #[cfg(test)]
    pub(crate) fn rows_mapped(&self) -> bool {
        self.slots.read().vectors.kind == RowsKind::Snapshot
    }

    /// Copies the vector rows off a mapped snapshot into the index's own
    /// memory (see [`Rows`]), before a condensation removes that snapshot:
    /// the mapping would keep its blocks in use. The caller holds `maint`, so
    /// no slot in use is freed and rewritten meanwhile (only repair frees
    /// them); those rows are copied while changes go on, `slots` read a chunk
    /// at a time so that a grow waiting behind it never holds searches off
    /// for long. Then, with changes held off (`mutate` for writing, which the
    /// caller holds if `held`), the rows of slots taken meanwhile are copied
    /// and the copy replaces the mapping. Does nothing if the rows are not
    /// mapped (or a grow copied them meanwhile).
    fn copy_rows_off(&self, held: bool) {
        const CHUNK: usize = 1 << 16;
        // No mapping is made after a load: while the rows are mapped, they
        // are this mapping (a grow meanwhile copies them and ends it).
        let (lines, stride, used0) = {
            let s = self.slots.read();
            if s.vectors.kind != RowsKind::Snapshot {
                return;
            }
            let used = s.used.load(Ordering::Acquire) as usize;
            (s.vectors.lines, s.stride, used)
        };
        let copy = Rows::zeroed(lines);
        let mut copied = vec![false; used0];
        let row = |from: &Rows, i: usize| {
            // SAFETY: slot i's row lies in both (same length); its slot is in
            // use, so nothing writes it (see above).
            unsafe {
                std::ptr::copy_nonoverlapping(
                    from.ptr.add(i * stride),
                    copy.ptr.add(i * stride),
                    stride,
                )
            }
        };
        for lo in (0..used0).step_by(CHUNK) {
            let s = self.slots.read();
            if s.vectors.kind != RowsKind::Snapshot {
                return;
            }
            for (i, done) in copied
                .iter_mut()
                .enumerate()
                .take(used0.min(lo + CHUNK))
                .skip(lo)
            {
                // Acquire: the row was written before the state said so.
                if s.state(i as u32) != VACANT {
                    row(&s.vectors, i);
                    *done = true;
                }
            }
        }
        let old = {
            let _still = (!held).then(|| self.mutate.write());
            let mut s = self.slots.write();
            if s.vectors.kind != RowsKind::Snapshot {
                return;
            }
            let used = s.used.load(Ordering::Acquire) as usize;
            for i in 0..used {
                if !copied.get(i).copied().unwrap_or(false) && s.state(i as u32) != VACANT {
                    row(&s.vectors, i);
                }
            }
            std::mem::replace(&mut s.vectors, copy)
        };
        // Unmapped once changes and searches go on again.
        drop(old);
    }

    /// Condenses from memory: with changes held off, closes the commit log and
    /// writes the graph as it stands (which is what its logs replay to) as the
    /// next snapshot, a slot at a time. Needs no more memory than a write
    /// buffer, where [`Hnsw::condense`] loads a second copy of the graph from
    /// the files; but changes wait until the snapshot is written, so it suits an
    /// index that is not changing.
    pub fn condense_live(&self) -> Result<()> {
        let (Some(log), Some(dir)) = (&self.log, &self.dir) else {
            return Ok(());
        };
        let _m = self.maint.lock();
        let _still = self.mutate.write();
        let gen = {
            let mut l = log.lock();
            l.sync()?;
            let gen = l.gen;
            *l = LogWriter::create(&*self.fs, dir, gen + 1, &self.file_params())?;
            gen
        };
        // Before the snapshot this condensation removes goes.
        self.copy_rows_off(true);
        let slots = self.slots.read();
        let used = slots.used.load(Ordering::Acquire);
        let n = (0..used)
            .rev()
            .find(|&i| slots.state(i) != VACANT)
            .map_or(0, |i| i as usize + 1);
        let entry = *self.entry.read();
        let zero = vec![0u8; self.dim * 4];
        persist::write_snapshot_with(
            &*self.fs,
            dir,
            gen + 1,
            &self.file_params(),
            n,
            entry,
            |i, out| {
                if slots.state(i as u32) == VACANT {
                    out.extend_from_slice(&zero);
                } else {
                    let v = slots.vector(i as u32);
                    v.iter()
                        .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
                }
            },
            |i, out| {
                let i = i as u32;
                let state = slots.state(i);
                if state == VACANT {
                    out.push(0);
                    return;
                }
                let meta = slots.meta[i as usize].lock();
                let links: Vec<Vec<u32>> = (0..=meta.level as usize)
                    .map(|lc| slots.links_locked(&meta, i, lc))
                    .collect();
                persist::slot_meta(
                    out,
                    state == DELETED,
                    slots.label(i),
                    links.iter().map(|l| &l[..]),
                );
            },
        )?;
        self.older_logs.store(0, Ordering::Release);
        persist::remove_upto(&*self.fs, dir, gen)
    }

    /// Starts a thread that repairs tombstones and condenses the commit log. A
    /// condensation rewrites the whole graph, so while the index changes it waits
    /// until the log outgrows both `log_bytes` and twice the graph: a fixed
    /// threshold made a growing index rewrite itself every `log_bytes`
    /// (quadratic in its size; 25% of a 250k build), and this keeps the bytes
    /// rewritten over a build linear. Once the index is quiet (no change for a
    /// pass), a log over `log_bytes` is condensed, so a restart after a build
    /// reads the snapshot and little log (quiet: unchanged for five passes, a
    /// second); a quiet index also gives back its build codes
    /// ([`Hnsw::drop_codes`]). A failure is reported to `health` (subject: the index
    /// directory) and retried with backoff; a condensation that failed is retried
    /// even if the log has not grown since. The thread stops when the index is
    /// dropped or closed.
    pub fn spawn_maintenance(
        self: &Arc<Self>,
        log_bytes: u64,
        health: Arc<Health>,
    ) -> std::thread::JoinHandle<()> {
        let weak: Weak<Hnsw> = Arc::downgrade(self);
        let subject = self.dir.as_ref().map_or_else(
            || "in-memory index".to_string(),
            |d| d.display().to_string(),
        );
        std::thread::spawn(move || {
            let mut backoff = Backoff::default();
            let mut condense_pending = false;
            let (mut seen, mut quiet_passes) = (u64::MAX, 0u32);
            // Whether this quiet spell has given back the build codes yet.
            let mut codes_dropped = false;
            loop {
                std::thread::sleep(std::time::Duration::from_millis(200));
                let Some(idx) = weak.upgrade() else { return };
                if idx.closed.load(Ordering::Acquire) {
                    return;
                }
                if !backoff.ready() {
                    continue;
                }
                let r = (|| {
                    if idx.tombstones() > 0 && idx.tombstones() * 20 >= idx.len().max(1) {
                        idx.repair()?;
                    }
                    let changed = idx.changed.load(Ordering::Relaxed);
                    quiet_passes = if changed == seen { quiet_passes + 1 } else { 0 };
                    codes_dropped &= changed == seen;
                    seen = changed;
                    // Quiet: only builds read the codes (changes write back
                    // what they walk). Before a condensation, which at 500k
                    // rows takes seconds.
                    if quiet_passes >= 5 && !codes_dropped {
                        codes_dropped = idx.drop_codes();
                    }
                    // While inserts go on, a condensation re-reads the
                    // snapshot and the log beside them (a tenth of an ingest's
                    // CPU when it ran at one graph's worth of log): let the log
                    // reach twice the graph first. Replay at a restart stays
                    // proportional to the graph.
                    let threshold = if quiet_passes >= 5 {
                        log_bytes
                    } else {
                        log_bytes.max(2 * idx.graph_bytes())
                    };
                    if condense_pending || idx.log_len() > threshold {
                        condense_pending = true;
                        // Quiet: nothing waits on the graph, so write it from
                        // memory rather than load a second copy of it.
                        if quiet_passes >= 5 {
                            idx.condense_live()?;
                        } else {
                            idx.condense()?;
                        }
                        condense_pending = false;
                    }
                    Ok::<(), IndexError>(())
                })();
                match r {
                    // Closed while it ran: the failure is the closing, not the disk.
                    Err(_) if idx.closed.load(Ordering::Acquire) => return,
                    Err(e) => {
                        backoff.failed();
                        health.failed(indigo_health::INDEX_MAINTENANCE, &subject, &e);
                    }
                    Ok(()) => {
                        if backoff.is_failing() {
                            health.recovered(indigo_health::INDEX_MAINTENANCE, &subject);
                        }
                        backoff.succeeded();
                    }
                }
            }
        })
    }

    /// Copies the index's files, as they are at one moment, into the new directory
    /// `dest` (on the same file system): the newest snapshot and the commit logs
    /// after it, with every change so far synced first. Maintenance waits
    /// meanwhile; the caller keeps writers out. Returns the bytes copied.
    pub fn backup_to(&self, dest: &Path) -> Result<u64> {
        let (linked, copied) = self.image_to(dest, false)?;
        Ok(linked + copied)
    }

    /// Like [`Hnsw::backup_to`], for a copy that lives on beside this index (a
    /// collection's fork): the snapshot, which never changes, is hard-linked;
    /// the commit logs after it are copied. Returns (bytes linked, bytes copied).
    pub fn fork_to(&self, dest: &Path) -> Result<(u64, u64)> {
        self.image_to(dest, true)
    }

    /// The image both take: the newest snapshot (linked if `link`, else copied)
    /// and the commit logs after it (always copied: the newest grows).
    fn image_to(&self, dest: &Path, link: bool) -> Result<(u64, u64)> {
        let (Some(log), Some(dir)) = (&self.log, &self.dir) else {
            return Ok((0, 0));
        };
        let _m = self.maint.lock();
        let mut l = log.lock();
        l.sync()?;
        let fs = &*self.fs;
        indigo_fs::create_dir_durable(fs, dest)
            .map_err(IndexError::io("create directory", dest))?;
        let (snaps, logs) = persist::list_gens(fs, dir)?;
        let base = snaps.last().copied().unwrap_or(0);
        let (mut linked, mut copied) = (0, 0);
        if let Some(&g) = snaps.last() {
            let from = persist::snapshot_path(dir, g);
            let to = dest.join(from.file_name().unwrap());
            if link {
                linked += fs.open(&from).map_err(IndexError::io("open", &from))?.len();
                fs.hard_link(&from, &to)
                    .map_err(IndexError::io("link into copy", &to))?;
            } else {
                copied += indigo_fs::copy_file(fs, &from, &to, None)
                    .map_err(IndexError::io("copy", &to))?;
            }
        }
        for &g in logs.iter().filter(|&&g| g >= base) {
            let from = persist::log_path(dir, g);
            let to = dest.join(from.file_name().unwrap());
            copied +=
                indigo_fs::copy_file(fs, &from, &to, None).map_err(IndexError::io("copy", &to))?;
        }
        persist::sync_dir(fs, dest)?;
        Ok((linked, copied))
    }

    /// Stops maintenance and refuses further changes (searches still work), so a
    /// fresh load of the index's files can take over its directory.
    pub fn close(&self) {
        let _m = self.maint.lock();
        self.closed.store(true, Ordering::Release);
        if let Some(l) = &self.log {
            l.lock().close();
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The `VmFlags` of the mapping holding `p` (from /proc/self/smaps).
    fn vm_flags(p: *const Line) -> String {
        let at = p as usize;
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for l in smaps.lines() {
            let range = l.split_whitespace().next().and_then(|r| r.split_once('-'));
            if let Some((a, b)) = range {
                if let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
                {
                    inside = (a..b).contains(&at);
                    continue;
                }
            }
            if inside && l.starts_with("VmFlags:") {
                return l.to_string();
            }
        }
        panic!("no mapping holds {at:x}")
    }

    /// Large row arrays ask for huge pages, when made and when grown in
    /// place; small ones do not.
    #[test]
    fn large_rows_ask_for_huge_pages() {
        if !Path::new("/sys/kernel/mm/transparent_hugepage").exists() {
            return; // a kernel without them refuses the advice
        }
        let small = Rows::zeroed((4 << 20) / 64);
        assert_eq!(small.kind, RowsKind::Anon);
        assert!(
            !vm_flags(small.ptr).contains(" hg"),
            "{}",
            vm_flags(small.ptr)
        );
        let mut rows = Rows::zeroed((16 << 20) / 64);
        assert!(!vm_flags(rows.ptr).contains(" hg"));
        assert!(rows.grow_in_place((64 << 20) / 64));
        assert!(vm_flags(rows.ptr).contains(" hg"), "{}", vm_flags(rows.ptr));
        let big = Rows::zeroed((40 << 20) / 64);
        assert!(vm_flags(big.ptr).contains(" hg"), "{}", vm_flags(big.ptr));
    }
}
