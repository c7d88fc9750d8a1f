//! The Kafka server side of a shard: the listener, connections (framing, pipelining with
//! in-order replies) and one handler per Kafka API under [`handlers`], whose table drives both
//! dispatch and the ApiVersions answer.

pub mod connection;
pub mod framing;
pub mod handlers;
pub mod lifecycle;
pub mod listener;
pub mod request_budget;
