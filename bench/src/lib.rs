//! rim-bench: a load generator for goim-protocol servers (rim's edges, goim's comet), with the
//! scenarios issue 8 measures, and the older single-purpose benchmarks (`src/bin/`).
//!
//! The pieces, bottom up:
//!
//! - [`wire`]: counting goim packets (op-9 contents included) and reading send times in bodies,
//!   from a byte stream, TCP or WebSocket, without allocating;
//! - [`client`]: one connection (connect from a source address, upgrade, auth, heartbeats, count);
//! - [`worker`]: a process holding up to ~9,000 of them (20,000 open files per process here);
//! - [`swarm`]: the coordinator's view of all workers: summed counters, marks, merged histograms;
//! - [`edge`], [`cluster`]: the servers a scenario starts (one edge alone, or a whole deployment);
//!   [`child`]: starting one in a process of its own and reading where it listens;
//! - [`push`]: how a scenario pushes (into an edge, or through a goim-compatible REST API);
//! - [`procfs`]: server CPU (user, system) and memory from `/proc`;
//! - [`scenarios`], [`httpdns`]: the commands; [`report`]: what they print and write as JSON.
//!
//! A load generator whose counting is wrong is worse than none, so every scenario checks its
//! counts (deliveries against pushes, per connection where that is uniform, send times present)
//! and says so in its report.

pub mod child;
pub mod client;
pub mod cluster;
pub mod edge;
pub mod httpdns;
pub mod procfs;
pub mod push;
pub mod report;
pub mod scenarios;
pub mod swarm;
pub mod wire;
pub mod worker;
