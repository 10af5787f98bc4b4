//! How database failures become [`StoreError`]s.
//!
//! The API layer answers 4xx for [`StoreError::Invalid`] and 503 for [`StoreError::Unavailable`], so
//! the split matters: only failures caused by the request's own values (a duplicate id, a value the
//! schema rejects) are the caller's fault; everything else (no connection, pool exhausted, server
//! shutting down, a bug) is the store being unavailable, and the caller may retry.

use crate::error::StoreError;

/// Classifies a sqlx error.
pub(crate) fn store_error(err: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &err {
        // Class 23: integrity constraint violation; class 22: data exception (e.g. a NUL byte in text).
        let code = db.code();
        if code
            .as_deref()
            .is_some_and(|code| code.starts_with("23") || code.starts_with("22"))
        {
            return StoreError::Invalid(db.message().to_owned());
        }
    }
    tracing::warn!(error = %err, "PostgreSQL store call failed");
    StoreError::Unavailable(err.to_string())
}

/// The error for a row the database returned that this version cannot read.
pub(crate) fn corrupt(what: &str, value: impl std::fmt::Debug) -> StoreError {
    StoreError::Unavailable(format!("database holds an invalid {what}: {value:?}"))
}
