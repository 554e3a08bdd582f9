//! The `tessera` binary's integration tests, in one test binary (one link instead of nine):
//! each module a suite against the real binary (`CARGO_BIN_EXE_tessera`), sharing the kit in
//! `common` (a server on a free port, the CLI, temporary directories), `fleet` (instances over a
//! shared PostgreSQL and Redis, relays to cut) and `webdriver` (headless Chromium). The one
//! suite that measures latency and throughput under faults runs alone, in its own binary
//! (`tests/faults_latency.rs`): other suites' load would blur its figures.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a failure is a panic

mod common;
mod fleet;
mod webdriver;

mod attack_connections;
mod attack_input;
mod attack_login;
mod browser;
mod cli;
mod cluster;
mod faults;
mod features;
mod hsm;
mod openapi;
mod server;
