//! SNMP: our `SnmpClient` trait, value types and the async-snmp implementation.
