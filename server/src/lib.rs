//! Command Post: a self-hosted server for live incident documents.
//!
//! Start with [`server::Server`] (assembly), [`ws`] (the document socket) and
//! [`protocol`] (the sans-IO y-websocket core). ARCHITECTURE.md has the map.

#![forbid(unsafe_code)]

pub mod admin;
pub mod api;
pub mod auth;
pub mod backup;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod config;
pub mod doc_sync;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod postmortem;
pub mod protocol;
pub mod quarantine;
pub mod rooms;
pub mod security;
pub mod server;
pub mod sidecar;
pub mod sidecar_api;
pub mod store;
pub mod template;
pub mod update_check;
pub mod web;
pub mod ws;

#[cfg(test)]
mod layers;
