//! ecr-preflight: a validating admission webhook (and CLI) that refuses images whose
//! layers or config blob are missing in Amazon ECR.
#![forbid(unsafe_code)]
// Input never panics the server: no unwrap, expect, panic or unchecked indexing outside tests.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

pub mod admission;
pub mod batcher;
pub mod cache;
pub mod check;
#[cfg(feature = "aws")]
pub mod cli;
pub mod coarse_timer;
#[cfg(feature = "aws")]
pub mod config;
pub mod decision;
pub mod decision_log;
pub mod image;
pub mod inline_streams;
pub mod log_sink;
pub mod manifest;
pub mod metrics;
pub mod read_ahead;
pub mod registry;
pub mod retry;
pub mod server;
pub mod tls;
pub mod webhook;
pub mod workload;
