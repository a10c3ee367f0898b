//! Returning freed memory to the system at the points where the agent frees a lot at once.
//!
//! Start-up parses the kernel's BTF (tens of MiB, freed right after). glibc keeps freed heap
//! memory for reuse, so without a trim those pages stayed resident for the agent's lifetime,
//! on top of its working set (measured idle: 44 MiB peak during start-up, 24 MiB resident after).

/// Give free heap memory back to the system.
pub fn release_free_memory() {
    // SAFETY: no pointers; safe at any time from any thread.
    unsafe { libc::malloc_trim(0) };
}
