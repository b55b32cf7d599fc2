//! Shared by the store's integration tests: prerequisites, real Nix fixtures (store paths built
//! with `nix-build`, binary caches written by `nix copy`), and a loopback HTTP server that
//! serves a cache and misbehaves on request.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

pub mod cache_server;
pub mod nix_fixture;
pub mod prereq;
pub mod processes;
