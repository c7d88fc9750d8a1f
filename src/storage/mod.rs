pub mod cache;
pub mod index;
pub mod producer_state;
