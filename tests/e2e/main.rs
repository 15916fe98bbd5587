//! End-to-end tests: the real `commandpost` binary on 127.0.0.1:0 with a
//! temporary sled directory (or, for the tests declared with
//! `both_backends!` and `postgres_outage`, a private PostgreSQL), driven by
//! yrs clients and the stock npm Yjs client. Run with `cargo test -p
//! commandpost --test e2e` after `npm ci --prefix tests/node`.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap fails the test, with its location"
)]
#![allow(
    unreachable_pub,
    reason = "the support modules are shared by the test modules of this one crate"
)]

mod support;

mod abuse_awareness;
mod abuse_document;
mod access_matrix;
mod auth;
mod bad_input;
mod cli;
mod cli_incident;
mod cluster;
mod cluster_harness;
mod cluster_sidecar;
mod convergence;
mod crashloop;
mod durability;
mod fanout;
mod hardening;
mod postgres_outage;
mod quarantine;
mod record;
mod record_document;
mod share;
mod sidecar;
mod store_copy;
mod streams;
mod sync;
mod tokens;
