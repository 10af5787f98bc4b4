//! Real infrastructure for rim's tests: a throwaway PostgreSQL cluster ([`postgres`]) and a
//! Kafka-protocol broker ([`kafka`]), each started on a free port and removed when dropped.
//!
//! Tests never mock these: the store and bus are tested against the real thing. When a binary is
//! missing, the harness fails with a message naming the install step (`scripts/test.sh` installs
//! everything), instead of silently skipping.

pub mod kafka;
pub mod ports;
pub mod postgres;
