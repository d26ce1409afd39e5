//! Memory accounting for engine calls: a counting global allocator.
//!
//! Neither engine can bound its own memory fully: Luau's allocator limit
//! covers the Lua heap but not what host functions build for it, and Rhai
//! has no allocator hook at all — its string, array and map size limits do
//! not count map keys, nested values or the locals of a deep recursion (a
//! Rhai call under `memory_mb = 64` reached 1.9 GiB). So keel counts
//! allocations itself.
//!
//! [`CountingAlloc`] wraps the system allocator and keeps, per thread, one
//! running number: bytes allocated minus bytes freed *on this thread*. It is
//! declared as the global allocator here, in the library, so the `keel`
//! binary, the tests and the benches all run with it (a crate anywhere in
//! the graph may declare the one global allocator).
//!
//! A call takes a [`MemoryMark`] when it starts; the engine's interrupt
//! (Luau) or progress callback (Rhai) compares the thread's counter with
//! the mark on every check ([`CallGuard::tick`](super::CallGuard::tick)) and
//! ends the call with an uncatchable memory-limit kill once the call's net
//! growth passes the cap. A nested `keel.tools.call` runs on the same
//! thread with its own mark; what it leaves behind counts against its
//! caller too, as it should.
//!
//! Limits and why they are acceptable:
//! - The check runs between engine operations, so one operation may
//!   overshoot by what it allocates at once; Rhai's data-size limits (a
//!   quarter of the cap per string) and Luau's own heap limit bound that.
//! - Memory freed on another thread is credited to *that* thread. Engine
//!   values are created and dropped on the engine thread of their call, so
//!   this only blurs figures for values handed across threads (results).
//! - Freeing memory that an earlier call left behind gives the current call
//!   room; what a state may keep between calls is bounded separately (the
//!   Lua heap limit; Rhai rewinds its scope after each call).
//!
//! Cost: one thread-local add per allocation and per free (no branch, no
//! atomic): the thread-local is `const`-initialised and has no destructor,
//! so reaching it never allocates and never registers anything.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// The system allocator, counting per thread.
pub struct CountingAlloc;

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

thread_local! {
    /// Bytes allocated minus bytes freed on this thread (wrapping).
    static NET: Cell<i64> = const { Cell::new(0) };
}

#[inline(always)]
fn add(bytes: i64) {
    // `try_with` cannot fail for a const, destructor-less thread-local, but
    // an allocator must never panic, so it is not `with`.
    let _ = NET.try_with(|n| n.set(n.get().wrapping_add(bytes)));
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged; the counting touches only a thread-local integer.
unsafe impl GlobalAlloc for CountingAlloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            add(layout.size() as i64);
        }
        p
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            add(layout.size() as i64);
        }
        p
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) };
        add(-(layout.size() as i64));
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            add(new_size as i64 - layout.size() as i64);
        }
        p
    }
}

/// Bytes allocated minus freed on the current thread since it started.
#[inline]
pub fn thread_net() -> i64 {
    NET.try_with(Cell::get).unwrap_or(0)
}

/// Where a call's accounting starts: the thread's counter when it began.
#[derive(Debug, Clone, Copy)]
pub struct MemoryMark(i64);

impl MemoryMark {
    /// Marks the current thread's counter.
    #[inline]
    pub fn now() -> Self {
        Self(thread_net())
    }

    /// What the current thread has allocated, net, since the mark (negative
    /// when it freed more than it allocated).
    #[inline]
    pub fn grown(self) -> i64 {
        thread_net().wrapping_sub(self.0)
    }

    pub fn raw(self) -> i64 {
        self.0
    }

    pub fn from_raw(v: i64) -> Self {
        Self(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_counter_sees_this_threads_allocations_and_frees() {
        let mark = MemoryMark::now();
        let v: Vec<u8> = Vec::with_capacity(10 << 20);
        let grown = mark.grown();
        assert!(
            (10 << 20..(10 << 20) + 4096).contains(&grown),
            "a 10 MiB allocation counted as {grown}"
        );
        drop(v);
        assert!(mark.grown() < 4096, "the free was not counted");
    }

    #[test]
    fn another_threads_allocations_are_not_counted_here() {
        let mark = MemoryMark::now();
        let kept = std::thread::spawn(|| vec![1u8; 8 << 20]).join().unwrap();
        // The thread's own bookkeeping (its name, its result slot) is small.
        assert!(mark.grown() < 1 << 20, "{}", mark.grown());
        drop(kept);
    }
}
