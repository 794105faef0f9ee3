//! SNMP value types of our own, so the rest of raftpoll never sees async-snmp's.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// An object identifier, e.g. `1.3.6.1.2.1.1.3.0`.
///
/// Ordering is lexicographic on the arcs, which is SNMP's GETNEXT order.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Oid(pub Vec<u32>);

impl Oid {
    pub fn new(arcs: impl Into<Vec<u32>>) -> Self {
        Oid(arcs.into())
    }

    pub fn arcs(&self) -> &[u32] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True when `prefix` is an ancestor of (or equal to) this OID.
    pub fn starts_with(&self, prefix: &Oid) -> bool {
        self.0.starts_with(&prefix.0)
    }

    /// This OID with one more arc, e.g. a column plus a row index.
    pub fn child(&self, index: u32) -> Oid {
        let mut arcs = Vec::with_capacity(self.0.len() + 1);
        arcs.extend_from_slice(&self.0);
        arcs.push(index);
        Oid(arcs)
    }

    /// The arcs after `prefix`, when `prefix` is an ancestor.
    pub fn suffix_after(&self, prefix: &Oid) -> Option<&[u32]> {
        self.0.strip_prefix(prefix.0.as_slice())
    }

    /// The single-arc row index under `column` (`column.<index>`), the usual
    /// shape of IF-MIB and HOST-RESOURCES tables.
    pub fn index_under(&self, column: &Oid) -> Option<u32> {
        match self.suffix_after(column)? {
            [index] => Some(*index),
            _ => None,
        }
    }
}

impl fmt::Display for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for arc in &self.0 {
            if !first {
                f.write_str(".")?;
            }
            first = false;
            write!(f, "{arc}")?;
        }
        Ok(())
    }
}

/// Why a string is not an OID.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid OID '{input}': {why}")]
pub struct OidParseError {
    pub input: String,
    pub why: &'static str,
}

impl FromStr for Oid {
    type Err = OidParseError;

    /// Accepts `1.3.6.1` and `.1.3.6.1`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why| OidParseError {
            input: s.to_string(),
            why,
        };
        let body = s.trim().strip_prefix('.').unwrap_or(s.trim());
        if body.is_empty() {
            return Err(err("empty"));
        }
        body.split('.')
            .map(|arc| {
                if arc.is_empty() {
                    Err(err("empty arc"))
                } else {
                    arc.parse::<u32>()
                        .map_err(|_| err("arcs must be numbers below 2^32"))
                }
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Oid)
    }
}

impl From<&[u32]> for Oid {
    fn from(arcs: &[u32]) -> Self {
        Oid(arcs.to_vec())
    }
}

impl<const N: usize> From<[u32; N]> for Oid {
    fn from(arcs: [u32; N]) -> Self {
        Oid(arcs.to_vec())
    }
}

/// A value as an agent returned it, including the v2c exception values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnmpValue {
    Integer(i64),
    OctetString(Vec<u8>),
    ObjectId(Oid),
    IpAddress([u8; 4]),
    Counter32(u32),
    Gauge32(u32),
    TimeTicks(u32),
    Counter64(u64),
    Opaque(Vec<u8>),
    Null,
    NoSuchObject,
    NoSuchInstance,
    EndOfMibView,
}

impl SnmpValue {
    /// True for noSuchObject, noSuchInstance and endOfMibView: "the agent has no value here".
    pub fn is_exception(&self) -> bool {
        matches!(
            self,
            SnmpValue::NoSuchObject | SnmpValue::NoSuchInstance | SnmpValue::EndOfMibView
        )
    }

    /// The value as an unsigned number: counters, gauges, timeticks,
    /// non-negative integers, and octet strings holding a decimal number
    /// (some agents report numbers as strings).
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            SnmpValue::Integer(v) => u64::try_from(*v).ok(),
            SnmpValue::Counter32(v) | SnmpValue::Gauge32(v) | SnmpValue::TimeTicks(v) => {
                Some(u64::from(*v))
            }
            SnmpValue::Counter64(v) => Some(*v),
            SnmpValue::OctetString(bytes) => std::str::from_utf8(bytes).ok().and_then(|s| {
                s.trim_matches(|c: char| c == '\0' || c.is_whitespace())
                    .parse()
                    .ok()
            }),
            _ => None,
        }
    }

    /// The value as an `i64` when it is numeric.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            SnmpValue::Integer(v) => Some(*v),
            other => other.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    /// The value as text: octet strings as lossy UTF-8 with NULs trimmed,
    /// OIDs and addresses dotted, numbers in decimal. `None` for NULL and
    /// the exception values.
    pub fn as_string(&self) -> Option<String> {
        match self {
            SnmpValue::OctetString(bytes) | SnmpValue::Opaque(bytes) => Some(
                String::from_utf8_lossy(bytes)
                    .trim_matches('\0')
                    .to_string(),
            ),
            SnmpValue::ObjectId(oid) => Some(oid.to_string()),
            SnmpValue::IpAddress([a, b, c, d]) => Some(format!("{a}.{b}.{c}.{d}")),
            SnmpValue::Integer(v) => Some(v.to_string()),
            SnmpValue::Counter32(v) | SnmpValue::Gauge32(v) | SnmpValue::TimeTicks(v) => {
                Some(v.to_string())
            }
            SnmpValue::Counter64(v) => Some(v.to_string()),
            SnmpValue::Null
            | SnmpValue::NoSuchObject
            | SnmpValue::NoSuchInstance
            | SnmpValue::EndOfMibView => None,
        }
    }

    /// The value's SNMP type name, for readable notes.
    pub fn type_name(&self) -> &'static str {
        match self {
            SnmpValue::Integer(_) => "INTEGER",
            SnmpValue::OctetString(_) => "OCTET STRING",
            SnmpValue::ObjectId(_) => "OBJECT IDENTIFIER",
            SnmpValue::IpAddress(_) => "IpAddress",
            SnmpValue::Counter32(_) => "Counter32",
            SnmpValue::Gauge32(_) => "Gauge32",
            SnmpValue::TimeTicks(_) => "TimeTicks",
            SnmpValue::Counter64(_) => "Counter64",
            SnmpValue::Opaque(_) => "Opaque",
            SnmpValue::Null => "NULL",
            SnmpValue::NoSuchObject => "noSuchObject",
            SnmpValue::NoSuchInstance => "noSuchInstance",
            SnmpValue::EndOfMibView => "endOfMibView",
        }
    }
}

/// One OID with its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VarBind {
    pub oid: Oid,
    pub value: SnmpValue,
}

impl VarBind {
    pub fn new(oid: Oid, value: SnmpValue) -> Self {
        VarBind { oid, value }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oid_display_parse_roundtrip() {
        let oid: Oid = "1.3.6.1.2.1.1.3.0".parse().unwrap();
        assert_eq!(oid, Oid::from([1, 3, 6, 1, 2, 1, 1, 3, 0]));
        assert_eq!(oid.to_string(), "1.3.6.1.2.1.1.3.0");
        assert_eq!(".1.3.6".parse::<Oid>().unwrap(), Oid::from([1, 3, 6]));
    }

    #[test]
    fn oid_parse_rejects_garbage() {
        for bad in ["", ".", "1..3", "1.3.x", "1.3.", "1.99999999999"] {
            assert!(bad.parse::<Oid>().is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn oid_prefix_child_and_order() {
        let column = Oid::from([1, 3, 6, 1, 2, 1, 2, 2, 1, 2]);
        let row = column.child(7);
        assert!(row.starts_with(&column));
        assert!(!column.starts_with(&row));
        assert_eq!(row.index_under(&column), Some(7));
        assert_eq!(row.child(1).index_under(&column), None);
        // GETNEXT order: a parent sorts before its children, children in arc order.
        assert!(column < row);
        assert!(column.child(2) < column.child(10));
        assert!(row < Oid::from([1, 3, 6, 1, 2, 1, 2, 2, 1, 3]));
    }

    #[test]
    fn value_helpers() {
        assert_eq!(SnmpValue::Counter64(1 << 40).as_u64(), Some(1 << 40));
        assert_eq!(SnmpValue::Counter32(5).as_u64(), Some(5));
        assert_eq!(SnmpValue::TimeTicks(12345).as_u64(), Some(12345));
        assert_eq!(SnmpValue::Integer(-1).as_u64(), None);
        assert_eq!(SnmpValue::Integer(-1).as_i64(), Some(-1));
        assert_eq!(SnmpValue::OctetString(b" 42\0".to_vec()).as_u64(), Some(42));
        assert_eq!(SnmpValue::NoSuchInstance.as_u64(), None);

        assert_eq!(
            SnmpValue::OctetString(b"eth0\0\0".to_vec())
                .as_string()
                .as_deref(),
            Some("eth0")
        );
        assert_eq!(
            SnmpValue::OctetString(vec![b'a', 0xff, b'b'])
                .as_string()
                .as_deref(),
            Some("a\u{fffd}b")
        );
        assert_eq!(
            SnmpValue::ObjectId(Oid::from([1, 3, 6, 1, 4, 1, 8072]))
                .as_string()
                .as_deref(),
            Some("1.3.6.1.4.1.8072")
        );
        assert_eq!(
            SnmpValue::IpAddress([127, 0, 0, 1]).as_string().as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(SnmpValue::EndOfMibView.as_string(), None);
        assert!(SnmpValue::NoSuchObject.is_exception());
        assert!(!SnmpValue::Null.is_exception());
    }
}
