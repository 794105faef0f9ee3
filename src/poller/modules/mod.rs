//! SNMP modules: what to ask a device and which RRD updates its answers make.
