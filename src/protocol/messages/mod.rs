//! Request and response bodies, one file per Kafka API, each declared once with [`crate::message!`].
//! Struct names follow the Kafka JSON specs; nested names shared by two APIs are prefixed with
//! the message name (`FetchResponseEpochEndOffset`, `ProduceResponseLeaderIdAndEpoch`, ...).
//! Everything is re-exported flat here and in [`crate::protocol`].

pub mod api_versions;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_topics;
pub mod describe_cluster;
pub mod fetch;
pub mod find_coordinator;
pub mod init_producer_id;
pub mod list_offsets;
pub mod metadata;
pub mod offset_for_leader_epoch;
pub mod produce;

pub use api_versions::*;
pub use create_partitions::*;
pub use create_topics::*;
pub use delete_topics::*;
pub use describe_cluster::*;
pub use fetch::*;
pub use find_coordinator::*;
pub use init_producer_id::*;
pub use list_offsets::*;
pub use metadata::*;
pub use offset_for_leader_epoch::*;
pub use produce::*;
