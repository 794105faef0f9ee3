//! Polling: the scheduler, its pure schedule arithmetic, the report batcher,
//! the ICMP availability check and the SNMP modules.

pub mod icmp;
pub mod modules;
pub mod reporter;
pub mod schedule;
pub mod scheduler;
