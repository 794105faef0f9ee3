//! Polling: scheduler and the SNMP modules.

pub mod modules;
