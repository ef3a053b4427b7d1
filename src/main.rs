#![forbid(unsafe_code)]
// Input never panics the server: no unwrap, expect, panic or unchecked indexing outside tests.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

/// Each review allocates and frees a few dozen small objects across two worker threads;
/// mimalloc's thread-local free lists do that for less CPU than glibc's arenas. Version 2
/// without transparent huge pages: version 3, or huge pages, held 2 to 2.5 times the
/// memory with 100,000 cached blobs (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    ecr_preflight::cli::main()
}
