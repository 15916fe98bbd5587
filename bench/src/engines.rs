//! The engines of a cluster run, started by the benchmark itself: the same
//! harnesses the end-to-end tests use (tests/e2e/support), so the benchmark
//! runs the Redis and the HAProxy configuration (docs/cluster/haproxy.cfg)
//! that the tests prove. Each is private to the run: a free port on
//! 127.0.0.1, a temporary directory, killed when dropped or when the
//! benchmark's process is gone.

#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "the end-to-end tests' support modules: public to the tests, and a harness that cannot start its engine ends the run with a message naming why"
)]

use std::time::Duration;

/// How long an engine may take to start or change state.
pub const WAIT: Duration = Duration::from_secs(60);

#[allow(
    dead_code,
    reason = "shared with the end-to-end tests, of which the benchmark uses finding programs and the watchdog"
)]
#[path = "../../tests/e2e/support/engine.rs"]
pub mod engine;

#[allow(
    dead_code,
    reason = "shared with the end-to-end tests, of which the benchmark uses start, url, pid and command_calls"
)]
#[path = "../../tests/e2e/support/redis.rs"]
pub mod redis;

#[allow(
    dead_code,
    reason = "shared with the end-to-end tests, of which the benchmark uses start, url, pid, wait_all_up and wait_down"
)]
#[path = "../../tests/e2e/support/haproxy.rs"]
pub mod haproxy;
