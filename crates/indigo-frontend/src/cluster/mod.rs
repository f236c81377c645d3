//! The distributed mode's processes: the frontend's client of the cluster, the
//! internal log and query services, the background roles, and the protocol
//! between them.

pub mod client;
pub mod nodes;
pub mod roles;
pub mod serve;
pub mod wire;

pub use client::{ClusterDb, RemoteCollection};
