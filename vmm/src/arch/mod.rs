//! Architecture-specific guest setup: memory layout, boot structures, CPU state.
//! Only x86_64 today; everything here computes values and writes guest memory, and leaves
//! the KVM calls to `vstate`.

pub mod x86_64;

pub use x86_64::{layout, low_mem_end, memory_ranges};
