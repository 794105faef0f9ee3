//! RRD output: layout, rrdcached client and the writer that batches updates.

pub mod layout;
