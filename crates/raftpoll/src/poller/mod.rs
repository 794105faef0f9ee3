//! Polling: the scheduler, its pure schedule arithmetic, the report batcher
//! and the SNMP modules.

pub mod modules;
pub mod reporter;
pub mod schedule;
pub mod scheduler;
