//! Starts and stops a node: every task, one shutdown signal, ordered teardown.
