//! RRD output: layout, rrdcached client and the writer that batches updates.
//!
//! - [`layout`]: LibreNMS-compatible file names, data sources, archives, the
//!   `CREATE` arguments and `UPDATE` value strings.
//! - [`client`]: async rrdcached protocol client (TCP or unix socket):
//!   single commands, `BATCH`, `CREATE`, `UPDATE`, `FLUSH`, `STATS`.
//! - [`writer`]: the task that owns the rrdcached connection, fed through a
//!   bounded queue; creates files once, batches updates, never sends two
//!   updates for one file in one second, reconnects with backoff.
//! - [`spool`]: the durable on-disk log every update passes through, so
//!   nothing is lost while rrdcached is away or when the node is killed.

pub mod client;
pub mod layout;
pub mod spool;
pub mod writer;
