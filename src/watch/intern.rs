//! One copy of each repeated value of the projections: namespaces, kinds, API versions,
//! owners' names and uids (the pods of a ReplicaSet name the same owner), placements (the
//! pods of a template share theirs), containers' names, images and running digests. With
//! 100,000 Pods that is most of what each object held twice or more. A value nobody holds any more is swept when the table has doubled
//! since the last sweep, so the table stays within twice what is in use.

use std::collections::HashSet;
use std::hash::Hash;
use std::sync::Arc;

use super::inventory::{Identity, ObjectKey, Owner, Projection};
use crate::platforms::Placement;

/// A table of shared values of one type.
struct Table<T: ?Sized> {
    values: HashSet<Arc<T>>,
    /// Its size after the last sweep.
    swept: usize,
}

impl<T: ?Sized + Hash + Eq> Default for Table<T> {
    fn default() -> Self {
        Table {
            values: HashSet::new(),
            swept: 0,
        }
    }
}

/// Values below this many are never swept.
const FIRST_SWEEP: usize = 1024;

impl<T: ?Sized + Hash + Eq> Table<T> {
    /// The shared copy of `value` (which becomes it, when new).
    fn share(&mut self, value: &Arc<T>) -> Arc<T> {
        if let Some(shared) = self.values.get(value) {
            return shared.clone();
        }
        if self.values.len() >= FIRST_SWEEP.max(self.swept * 2) {
            // Held only here: no projection uses it any more.
            self.values.retain(|v| Arc::strong_count(v) > 1);
            self.swept = self.values.len();
        }
        self.values.insert(value.clone());
        value.clone()
    }
}

#[derive(Default)]
pub struct Interner {
    strings: Table<str>,
    placements: Table<Placement>,
}

impl Interner {
    fn string(&mut self, s: &mut Arc<str>) {
        *s = self.strings.share(s);
    }

    fn key(&mut self, key: &mut ObjectKey) {
        self.string(&mut key.namespace);
        self.string(&mut key.kind);
    }

    fn identity(&mut self, identity: &mut Identity) {
        self.string(&mut identity.api_version);
    }

    fn owner(&mut self, owner: &mut Owner) {
        self.key(&mut owner.key);
        self.string(&mut owner.key.name);
        self.identity(&mut owner.identity);
        self.string(&mut owner.identity.uid);
    }

    /// `key` and `projection` with their repeated values shared.
    pub fn intern(&mut self, key: &mut ObjectKey, projection: Option<&mut Projection>) {
        self.key(key);
        let Some(p) = projection else {
            return;
        };
        self.identity(&mut p.identity);
        if let Some(owner) = &mut p.owner {
            self.owner(owner);
        }
        if let Some(placement) = &mut p.placement {
            *placement = self.placements.share(placement);
        }
        for c in &mut p.containers {
            self.string(&mut c.name);
            self.string(&mut c.image);
            if let Some(running) = &mut c.running {
                self.string(running);
            }
        }
    }

    /// Values held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.strings.values.len() + self.placements.values.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ns: &str, name: &str) -> ObjectKey {
        ObjectKey {
            namespace: ns.into(),
            kind: "Pod".into(),
            name: name.into(),
        }
    }

    #[test]
    fn repeated_values_are_shared_and_unused_ones_swept() {
        let mut interner = Interner::default();
        let mut a = key("ns", "a");
        let mut b = key("ns", "b");
        interner.intern(&mut a, None);
        interner.intern(&mut b, None);
        assert!(Arc::ptr_eq(&a.namespace, &b.namespace));
        assert!(Arc::ptr_eq(&a.kind, &b.kind));
        // Namespaces that come and go do not stay: the table stays within twice its use.
        for i in 0..10 * FIRST_SWEEP {
            interner.intern(&mut key(&format!("gone-{i}"), "x"), None);
        }
        assert!(interner.len() <= 2 * FIRST_SWEEP, "{}", interner.len());
        let mut c = key("ns", "c");
        interner.intern(&mut c, None);
        assert!(Arc::ptr_eq(&a.namespace, &c.namespace), "in use: kept");
    }
}
