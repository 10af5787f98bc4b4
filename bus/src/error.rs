//! Why a bus operation failed.

/// A bus failure. Cloneable, so one failure can answer every publish it stopped.
#[derive(Clone, Debug, thiserror::Error)]
pub enum BusError {
    /// The broker is unreachable or refused the records; nothing may be assumed sent (API answers 503).
    #[error("bus unavailable: {0}")]
    Unavailable(String),
    /// The in-process bus is full: the bound of its queue was reached (API answers 503, caller retries).
    #[error("bus full: {0}")]
    Full(String),
    /// A record on the bus could not be decoded; it is skipped and counted, never retried forever.
    #[error("undecodable record at partition {partition} offset {offset}: {reason}")]
    Corrupt {
        /// Partition of the bad record.
        partition: i32,
        /// Offset of the bad record.
        offset: i64,
        /// What was wrong.
        reason: String,
    },
}
