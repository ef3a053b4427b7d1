#![forbid(unsafe_code)]
// Input never panics the server: no unwrap, expect, panic or unchecked indexing outside tests.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

fn main() -> std::process::ExitCode {
    ecr_preflight::cli::main()
}
