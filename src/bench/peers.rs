//! Poll throughput against the peers: raftpoll, collectd's snmp plugin and Prometheus
//! snmp_exporter polling the same simulated devices and the same IF-MIB columns.

use super::BenchError;

#[derive(clap::Args, Debug)]
pub struct PeersArgs {}

pub fn run(_args: &PeersArgs) -> Result<String, BenchError> {
    Err(BenchError::Setup("not written yet".into()))
}
