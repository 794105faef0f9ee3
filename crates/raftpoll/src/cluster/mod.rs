//! The cluster around the replicated model: Raft wiring and network, membership (join, promote,
//! replace), the leader's controller and the pure assignment it runs, the handle the rest of
//! the node uses to read state and propose commands, and the hand-over before a planned stop.

pub mod absence;
pub mod assignment;
pub mod controller;
pub mod features;
pub mod handle;
pub mod membership;
pub mod network;
pub mod raft;
