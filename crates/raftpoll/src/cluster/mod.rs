//! Replicated cluster state, assignment and Raft wiring.

pub mod assignment;
pub mod controller;
pub mod handle;
pub mod membership;
pub mod network;
pub mod raft;
pub mod state;
pub mod types;
