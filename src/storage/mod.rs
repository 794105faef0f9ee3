//! Persistent storage for Raft: log, vote and state machine in sled.
