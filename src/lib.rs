//! ecr-preflight: a validating admission webhook (and CLI) that refuses images whose
//! layers or config blob are missing in Amazon ECR.
#![forbid(unsafe_code)]

pub mod admission;
pub mod batcher;
pub mod cache;
pub mod check;
pub mod cli;
pub mod coarse_timer;
pub mod config;
pub mod decision;
pub mod image;
pub mod manifest;
pub mod metrics;
pub mod registry;
pub mod retry;
pub mod server;
pub mod tls;
pub mod workload;
