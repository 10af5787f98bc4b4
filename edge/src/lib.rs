//! TODO: this crate is being written.
