//! (placeholder)
pub mod record_batch;
