//! The store's integration tests, in one test binary (one link instead of five).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bodies;
mod common;
mod decisions;
mod full_disk_db;
mod kept;
mod leases;
mod quarantine;
mod spool_files;
