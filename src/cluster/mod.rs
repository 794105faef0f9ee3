//! Replicated cluster state, assignment and Raft wiring.

pub mod types;
