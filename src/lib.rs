//! ecr-preflight: a validating admission webhook (and CLI) that refuses images whose
//! layers or config blob are missing in Amazon ECR.
//!
//! The layout follows the path of a review: `server` (HTTP, TLS, the webhook service) hands
//! the body to `admission` (the review in, the response out), which finds the images with
//! `workload`, checks them with the `engine` against a `registry`, and decides with
//! `decision`; `findings` holds what the engine found. `watch` is the controller: the
//! images in use, re-verified with the same engine; `lifecycle` forecasts when a
//! repository's lifecycle policy will act on the images a workload names (and cross-checks
//! its forecasts with ECR's preview); `platforms` says which platforms a pod can land on.
//! `cli` is the command line, `logging` and `metrics` what the process tells.
#![forbid(unsafe_code)]
// Input never panics the server: no unwrap, expect, panic or unchecked indexing outside tests.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

pub mod admission;
#[cfg(feature = "aws")]
pub mod cli;
pub mod decision;
pub mod engine;
pub mod findings;
pub mod image;
mod json;
pub mod lifecycle;
pub mod logging;
pub mod manifest;
mod metrics;
pub mod platforms;
pub mod pull_secrets;
pub mod registry;
pub mod server;
mod supervise;
mod ttl_map;
pub mod watch;
pub mod workload;
