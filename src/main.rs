//! The `rim` binary: one executable for every role (`rim dev | edge | control | job`).
mod config;
fn main() {}
