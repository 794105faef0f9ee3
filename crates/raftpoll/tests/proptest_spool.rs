//! Property tests (proptest) of the spool record codec, with shrinking: whatever bytes arrive,
//! they decode or are refused, never panic, and what we encode decodes back to itself.

use proptest::prelude::*;
use raftpoll::rrd::layout::{DsDef, DsType, RrdDef, RrdUpdate, RrdValue};
use raftpoll::rrd::spool;
use std::collections::HashMap;
use std::sync::Arc;

fn port_def() -> Arc<RrdDef> {
    Arc::new(RrdDef {
        ds: vec![
            DsDef {
                name: "INOCTETS",
                kind: DsType::Derive,
                min: Some(0.0),
                max: None,
            },
            DsDef {
                name: "uptime",
                kind: DsType::Gauge,
                min: None,
                max: Some(1.0),
            },
        ],
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    /// Spool records: any bytes decode or are refused; encoded records round-trip.
    #[test]
    fn spool_records_round_trip_and_junk_is_refused(
        junk in proptest::collection::vec(any::<u8>(), 0..300),
        seq in any::<u64>(),
        timestamp in any::<u64>(),
        millis in 0u16..1000,
        host in "[a-z0-9-]{1,20}",
        counter in any::<u64>(),
        gauge in -1e12f64..1e12,
    ) {
        let mut defs = HashMap::new();
        let _ = spool::decode(&junk, &mut defs);
        let update = RrdUpdate {
            path: format!("{host}/port-id1.rrd"),
            def: port_def(),
            timestamp,
            millis,
            values: vec![RrdValue::Counter(counter), RrdValue::Gauge(gauge)],
        };
        let bytes = spool::encode(seq, &update);
        let back = spool::decode(&bytes, &mut defs);
        prop_assert_eq!(back, Some((seq, update)));
    }
}
