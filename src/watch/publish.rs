//! What the leader tells after each verification: the per-workload and per-outcome
//! metrics, and an Event on a workload when one of its images breaks (Warning
//! `ImageUnavailable`) or recovers (Normal `ImageAvailable`), on transitions only; when a
//! lifecycle rule will act on one within the warning (Warning `ImageExpiring`, once); and
//! when the restore of an archived one starts (Normal `ImageRestoreStarted`). The Events
//! leave through the paced queue of `events.rs`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType};

use super::events::{EventQueue, EventSink};
use super::inventory::ObjectKey;
use super::state::{Inventory, Row};
use super::walks;
use crate::decision::{truncate, Severity};
use crate::findings::Outcome;
use crate::lifecycle::expiry::{self, Expiry};
use crate::lifecycle::Action;
use crate::metrics::{ExpiryLabels, OutcomeLabels, ReasonLabels, WatchMetrics, WorkloadLabels};

/// What a walk of [`Signals::publish`] found besides what it told.
#[derive(Default)]
pub struct Published {
    /// How long the walk took.
    pub took: Duration,
    /// The rows whose image is archived.
    pub archived: Vec<Row>,
}

/// What one (workload, container, image) last looked like.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Fine,
    Broken(Outcome),
}

/// What an Event tells.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tell {
    Seen(Seen),
    Expiring(Expiry),
    RestoreStarted,
}

type RowKey = (ObjectKey, Box<str>, Box<str>);

pub struct Signals {
    metrics: Arc<WatchMetrics>,
    workload_metrics: bool,
    expiry_warning: Duration,
    events: Option<EventQueue>,
    seen: Mutex<HashMap<RowKey, Seen>>,
    series: Mutex<HashSet<WorkloadLabels>>,
    /// Rows told `ImageExpiring` while their forecast stays within the warning.
    warned: Mutex<HashSet<RowKey>>,
    expiry_series: Mutex<HashSet<ExpiryLabels>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn row_key(row: &Row) -> RowKey {
    (
        row.workload.key.clone(),
        row.container.name.clone(),
        row.container.image.clone(),
    )
}

/// An Event's note is at most 1 kB.
const NOTE_MAX: usize = 1000;

impl Signals {
    /// With `events`, starts their poster on the current runtime.
    pub fn new(
        metrics: Arc<WatchMetrics>,
        workload_metrics: bool,
        expiry_warning: Duration,
        events: Option<EventSink>,
    ) -> Self {
        let events = events.map(|sink| EventQueue::start(sink, metrics.clone()));
        Signals {
            metrics,
            workload_metrics,
            expiry_warning,
            events,
            seen: Mutex::default(),
            series: Mutex::default(),
            warned: Mutex::default(),
            expiry_series: Mutex::default(),
        }
    }

    /// Brings metrics up to date with the inventory and posts the Events of what changed.
    /// The walk over every workload runs on the walks' thread: with 100,000 Pods it takes
    /// tens of milliseconds, which the webhook's worker must not wait for.
    /// Returns how long the walk took, and the rows whose image is archived (what a restore
    /// needs, found by the same walk).
    pub async fn publish(self: &Arc<Self>, inventory: &Arc<Inventory>) -> Published {
        let (this, inventory) = (self.clone(), inventory.clone());
        let (changed, published) = walks::run(move || {
            let start = std::time::Instant::now();
            let rows = inventory.rows();
            this.set_metrics(&rows);
            this.set_expiry_metrics(&rows);
            let archived = rows
                .iter()
                .filter(|r| r.outcome() == Outcome::Archived)
                .cloned()
                .collect();
            let mut tell = this.expiring(&rows);
            tell.extend(this.transitions(rows));
            let published = Published {
                took: start.elapsed(),
                archived,
            };
            (tell, published)
        })
        .await
        .unwrap_or_default();
        for (row, event) in changed {
            self.post(&row, event);
        }
        published
    }

    /// The restore of an archived image started: a Normal Event on each workload using it.
    pub fn restore_started<'a>(&self, rows: impl Iterator<Item = &'a Row>) {
        for row in rows {
            self.post(row, Tell::RestoreStarted);
        }
    }

    /// Leadership lost: the workload and in-use series belong to the new leader now.
    pub fn step_down(&self) {
        let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        for labels in series.drain() {
            self.metrics.workload_images.remove(&labels);
        }
        self.metrics.images_in_use.clear();
        for labels in lock(&self.expiry_series).drain() {
            self.metrics.workload_expiry.remove(&labels);
        }
        lock(&self.seen).clear();
        lock(&self.warned).clear();
    }

    /// One series per workload container whose image a rule will act on.
    fn set_expiry_metrics(&self, rows: &[Row]) {
        let fresh: HashMap<ExpiryLabels, i64> = rows
            .iter()
            .filter_map(|row| {
                let e = row.expiry.as_ref()?;
                let labels = ExpiryLabels {
                    namespace: row.workload.key.namespace.to_string(),
                    kind: row.workload.key.kind.to_string(),
                    name: row.workload.key.name.to_string(),
                    container: row.container.name.to_string(),
                    action: e.forecast.action.as_str(),
                };
                Some((labels, e.forecast.at))
            })
            .collect();
        let mut series = lock(&self.expiry_series);
        for gone in series.iter().filter(|l| !fresh.contains_key(*l)) {
            self.metrics.workload_expiry.remove(gone);
        }
        for (labels, at) in &fresh {
            self.metrics.workload_expiry.get_or_create(labels).set(*at);
        }
        *series = fresh.into_keys().collect();
    }

    /// Rows whose forecast came within the warning since last time; a row whose forecast
    /// left it (re-tagged, rule changed) is told again when it comes back.
    fn expiring(&self, rows: &[Row]) -> Vec<(Row, Tell)> {
        let now = expiry::now();
        let mut warned = lock(&self.warned);
        let mut within: HashSet<RowKey> = HashSet::new();
        let mut tell = Vec::new();
        for row in rows {
            let Some(e) = row
                .expiry
                .as_ref()
                .filter(|e| e.within(now, self.expiry_warning))
            else {
                continue;
            };
            let key = row_key(row);
            if !warned.contains(&key) {
                tell.push((row.clone(), Tell::Expiring(e.clone())));
            }
            within.insert(key);
        }
        *warned = within;
        tell
    }

    fn set_metrics(&self, rows: &[Row]) {
        let mut by_outcome: BTreeMap<&str, (Outcome, HashSet<&str>)> = BTreeMap::new();
        for row in rows {
            let outcome = row.outcome();
            by_outcome
                .entry(outcome.as_str())
                .or_insert_with(|| (outcome, HashSet::new()))
                .1
                .insert(&row.container.image);
        }
        for outcome in Outcome::ALL {
            let count = by_outcome.get(outcome.as_str()).map_or(0, |(_, s)| s.len());
            self.metrics
                .images_in_use
                .get_or_create(&OutcomeLabels {
                    outcome: outcome.as_str(),
                })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
        if !self.workload_metrics {
            return;
        }
        let fresh: HashSet<WorkloadLabels> = rows
            .iter()
            .map(|row| WorkloadLabels {
                namespace: row.workload.key.namespace.to_string(),
                kind: row.workload.key.kind.to_string(),
                name: row.workload.key.name.to_string(),
                container: row.container.name.to_string(),
                outcome: row.outcome().as_str(),
            })
            .collect();
        let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        for gone in series.difference(&fresh) {
            self.metrics.workload_images.remove(gone);
        }
        for labels in &fresh {
            self.metrics.workload_images.get_or_create(labels).set(1);
        }
        *series = fresh;
    }

    /// The rows whose image broke or recovered since last time. An image not yet verified,
    /// or that ECR could not answer for, changes nothing: it is neither.
    fn transitions(&self, rows: Vec<Row>) -> Vec<(Row, Tell)> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let mut changed = Vec::new();
        let mut present: HashSet<RowKey> = HashSet::new();
        for row in rows {
            let key = row_key(&row);
            present.insert(key.clone());
            // As the webhook words it: broken only for a problem that breaks a pull (a
            // pull-through repository not filled yet is advisory: the first pull fills it).
            let Some(problems) = row.problems() else {
                continue;
            };
            let worst = problems.iter().map(|p| p.severity).min();
            let now = match worst {
                Some(Severity::Broken) => Seen::Broken(row.outcome()),
                Some(Severity::Unknown) => continue,
                _ => Seen::Fine,
            };
            let before = seen.insert(key, now.clone());
            let tell = match (&before, &now) {
                (None, Seen::Broken(_)) => true,
                (Some(b), n) => b != n,
                (None, Seen::Fine) => false,
            };
            if tell {
                changed.push((row, Tell::Seen(now)));
            }
        }
        seen.retain(|k, _| present.contains(k));
        changed
    }

    /// Counts and logs what is told, and queues its Event (never waits for the API server).
    fn post(&self, row: &Row, tell: Tell) {
        let (type_, reason, note) = match tell {
            Tell::Seen(Seen::Broken(_)) => (
                EventType::Warning,
                "ImageUnavailable",
                row.problem().unwrap_or_default(),
            ),
            Tell::Seen(Seen::Fine) => (
                EventType::Normal,
                "ImageAvailable",
                format!(
                    "container {}: {} is available again in {}",
                    row.container.name,
                    row.container.image,
                    crate::decision::held_by(&row.container.image)
                ),
            ),
            Tell::Expiring(e) => (EventType::Warning, "ImageExpiring", expiring_note(row, &e)),
            Tell::RestoreStarted => (
                EventType::Normal,
                "ImageRestoreStarted",
                format!(
                    "container {}: {} is archived; its restore to standard storage has started (ECR takes up to hours; pulls fail until it completes)",
                    row.container.name, row.container.image
                ),
            ),
        };
        self.metrics
            .events
            .get_or_create(&ReasonLabels { reason })
            .inc();
        tracing::info!(
            namespace = %row.workload.key.namespace,
            kind = %row.workload.key.kind,
            name = %row.workload.key.name,
            reason,
            note = %note,
            "workload image changed"
        );
        let Some(queue) = &self.events else {
            return;
        };
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(truncate(&note, NOTE_MAX)),
            action: "Reverify".to_owned(),
            secondary: None,
        };
        let w = &row.workload;
        let reference = ObjectReference {
            api_version: Some(w.identity.api_version.to_string()),
            kind: Some(w.key.kind.to_string()),
            name: Some(w.key.name.to_string()),
            namespace: Some(w.key.namespace.to_string()),
            uid: Some(w.identity.uid.to_string()).filter(|u| !u.is_empty()),
            ..ObjectReference::default()
        };
        queue.offer(event, reference, reason);
    }
}

/// What will happen to the image, when, by which rule, and how to keep it.
fn expiring_note(row: &Row, e: &Expiry) -> String {
    let whose = if row.container.image.ends_with(&*e.digest) {
        String::new()
    } else {
        format!(" (image {})", e.digest)
    };
    let keep = match e.forecast.action {
        Action::Expire => "To keep it",
        Action::Archive => "To keep it pullable",
    };
    format!(
        "container {}: {}{whose} will be {}. {keep}: re-tag it with a tag the rule does not select (a protected prefix), pin the workload by digest to an image the policy keeps, or change the rule.",
        row.container.name,
        row.container.image,
        e.sentence()
    )
}
