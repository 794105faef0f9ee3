//! The RRD writer task: queue, file creation, batching and reconnects.
