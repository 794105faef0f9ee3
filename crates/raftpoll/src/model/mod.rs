//! The replicated data model: nodes, devices, ports and the commands that change them
//! ([`types`]), the state machine that applies them ([`state`]), and the state as older
//! format versions encoded it ([`legacy`]). Pure: no I/O, no clocks, so every node computes
//! the same state from the same log, and both storage and the cluster's wiring build on it
//! without depending on each other's internals.

pub mod legacy;
pub mod state;
pub mod types;
