#![no_std]
//! Types shared by the kernel programs and userspace: event records, map keys, limits.
