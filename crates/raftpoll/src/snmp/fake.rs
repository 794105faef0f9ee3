//! An in-memory SNMP agent with real GET/GETNEXT semantics, for tests above the SNMP layer.

use super::client::{SnmpClient, SnmpTarget, walk_each};
use super::error::SnmpError;
use super::types::{Oid, SnmpValue, VarBind};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// One MIB view shared by every target. Values can be changed between
/// requests (moving counters), and the whole agent can be made to fail.
#[derive(Default)]
pub struct FakeSnmpClient {
    table: Mutex<BTreeMap<Oid, SnmpValue>>,
    /// When set, every request fails with this error (device down, bad auth).
    failure: Mutex<Option<SnmpError>>,
    /// Walks of these roots fail with the given error (a broken table).
    walk_failures: Mutex<BTreeMap<Oid, SnmpError>>,
    gets: AtomicUsize,
    walks: AtomicUsize,
}

impl FakeSnmpClient {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_table(table: BTreeMap<Oid, SnmpValue>) -> Self {
        let fake = Self::new();
        *lock(&fake.table) = table;
        fake
    }

    pub fn set(&self, oid: Oid, value: SnmpValue) {
        lock(&self.table).insert(oid, value);
    }

    pub fn remove(&self, oid: &Oid) {
        lock(&self.table).remove(oid);
    }

    /// Remove every object under `root`.
    pub fn remove_subtree(&self, root: &Oid) {
        lock(&self.table).retain(|oid, _| !oid.starts_with(root));
    }

    pub fn fail_with(&self, error: Option<SnmpError>) {
        *lock(&self.failure) = error;
    }

    pub fn fail_walk(&self, root: Oid, error: SnmpError) {
        lock(&self.walk_failures).insert(root, error);
    }

    /// Number of `get` calls so far.
    pub fn get_calls(&self) -> usize {
        self.gets.load(Ordering::Relaxed)
    }

    /// Number of `walk` calls so far.
    pub fn walk_calls(&self) -> usize {
        self.walks.load(Ordering::Relaxed)
    }

    fn check_failure(&self) -> Result<(), SnmpError> {
        match lock(&self.failure).as_ref() {
            Some(error) => Err(error.clone()),
            None => Ok(()),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic in another test thread must not cascade into this one.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl SnmpClient for FakeSnmpClient {
    async fn get(&self, _target: &SnmpTarget, oids: &[Oid]) -> Result<Vec<VarBind>, SnmpError> {
        self.gets.fetch_add(1, Ordering::Relaxed);
        self.check_failure()?;
        let table = lock(&self.table);
        Ok(oids
            .iter()
            .map(|oid| {
                let value = match table.get(oid) {
                    Some(value) => value.clone(),
                    // Like net-snmp: an instance of a known column vs. nothing at all.
                    None if oid.0.split_last().is_some_and(|(_, parent)| {
                        table.keys().any(|k| k.0.starts_with(parent))
                    }) =>
                    {
                        SnmpValue::NoSuchInstance
                    }
                    None => SnmpValue::NoSuchObject,
                };
                VarBind::new(oid.clone(), value)
            })
            .collect())
    }

    async fn walk(&self, _target: &SnmpTarget, root: &Oid) -> Result<Vec<VarBind>, SnmpError> {
        self.walks.fetch_add(1, Ordering::Relaxed);
        self.check_failure()?;
        if let Some(error) = lock(&self.walk_failures).get(root) {
            return Err(error.clone());
        }
        let table = lock(&self.table);
        // GETNEXT semantics: start strictly after the root, stop at the first OID outside it.
        Ok(table
            .range((Bound::Excluded(root.clone()), Bound::Unbounded))
            .take_while(|(oid, _)| oid.starts_with(root))
            .map(|(oid, value)| VarBind::new(oid.clone(), value.clone()))
            .collect())
    }

    async fn walk_many(
        &self,
        target: &SnmpTarget,
        roots: &[Oid],
    ) -> Result<Vec<Vec<VarBind>>, SnmpError> {
        walk_each(self, target, roots).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;
    use crate::snmp::credentials::SnmpCredentials;

    fn target() -> SnmpTarget {
        SnmpTarget::new(
            "127.0.0.1:161".parse().unwrap(),
            SnmpCredentials::V2c {
                community: Secret::new("public"),
            },
        )
    }

    #[tokio::test]
    async fn walk_stays_in_subtree_and_get_reports_missing() {
        let fake = FakeSnmpClient::new();
        fake.set(Oid::from([1, 3, 6, 1, 2]), SnmpValue::Integer(1));
        fake.set(Oid::from([1, 3, 6, 2, 1]), SnmpValue::Integer(2));
        fake.set(Oid::from([1, 3, 6, 2, 3]), SnmpValue::Integer(3));
        fake.set(Oid::from([1, 3, 6, 20, 1]), SnmpValue::Integer(4));
        let walked = fake
            .walk(&target(), &Oid::from([1, 3, 6, 2]))
            .await
            .unwrap();
        assert_eq!(
            walked.iter().map(|vb| vb.oid.clone()).collect::<Vec<_>>(),
            vec![Oid::from([1, 3, 6, 2, 1]), Oid::from([1, 3, 6, 2, 3])]
        );
        let got = fake
            .get(
                &target(),
                &[Oid::from([1, 3, 6, 2, 2]), Oid::from([1, 3, 7, 0])],
            )
            .await
            .unwrap();
        assert_eq!(got[0].value, SnmpValue::NoSuchInstance);
        assert_eq!(got[1].value, SnmpValue::NoSuchObject);
        fake.fail_with(Some(SnmpError::Closed));
        assert!(fake.get(&target(), &[]).await.is_err());
        assert_eq!(fake.get_calls(), 2);
        assert_eq!(fake.walk_calls(), 1);
    }
}
