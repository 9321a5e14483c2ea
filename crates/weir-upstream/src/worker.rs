//! Which worker thread is running: set once per worker so per-worker resources (connection
//! pools) are picked without locks. Threads that are not workers share the last slot.

use std::cell::Cell;

thread_local! {
    static INDEX: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// Marks the current thread as worker `i`.
pub fn set_index(i: usize) {
    INDEX.with(|c| c.set(i));
}

/// This thread's worker index, or `usize::MAX` for non-worker threads (callers clamp it
/// to the control slot).
pub fn index() -> usize {
    INDEX.with(Cell::get)
}
