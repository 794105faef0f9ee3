//! gRPC services: `Admin` for operators, `Peer` for node-to-node proposals,
//! and the conversions between protobuf and our types (kept at this edge).

pub mod admin;
pub mod peer;

/// Splits `items` in order into groups of at most `max_count` items and about
/// `max_bytes` (`size` of each item): a single item larger than `max_bytes`
/// still gets a group of its own.
pub fn split_by_size<T>(
    items: Vec<T>,
    max_count: usize,
    max_bytes: u64,
    size: impl Fn(&T) -> u64,
) -> Vec<Vec<T>> {
    let mut groups = Vec::new();
    let mut group = Vec::new();
    let mut bytes = 0u64;
    for item in items {
        let item_bytes = size(&item);
        if !group.is_empty() && (group.len() >= max_count || bytes + item_bytes > max_bytes) {
            groups.push(std::mem::take(&mut group));
            bytes = 0;
        }
        bytes += item_bytes;
        group.push(item);
    }
    if !group.is_empty() {
        groups.push(group);
    }
    groups
}
