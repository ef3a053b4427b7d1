//! What the leader tells after each verification: the per-workload and per-outcome
//! metrics, and an Event on a workload when one of its images breaks (Warning
//! `ImageUnavailable`) or recovers (Normal `ImageAvailable`), on transitions only.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::Client;

use super::inventory::ObjectKey;
use super::state::{Inventory, Row};
use crate::decision::truncate;
use crate::metrics::{OutcomeLabels, ReasonLabels, WatchMetrics, WorkloadLabels};
use crate::report::Outcome;

/// Where Events go.
pub struct EventSink {
    pub client: Client,
    pub reporter: Reporter,
}

/// What one (workload, container, image) last looked like.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Fine,
    Broken(Outcome),
}

type RowKey = (ObjectKey, Box<str>, Box<str>);

pub struct Signals {
    metrics: Arc<WatchMetrics>,
    workload_metrics: bool,
    events: Option<EventSink>,
    seen: Mutex<HashMap<RowKey, Seen>>,
    series: Mutex<HashSet<WorkloadLabels>>,
}

/// An Event's note is at most 1 kB.
const NOTE_MAX: usize = 1000;
const POST_TIMEOUT: Duration = Duration::from_secs(10);

impl Signals {
    pub fn new(
        metrics: Arc<WatchMetrics>,
        workload_metrics: bool,
        events: Option<EventSink>,
    ) -> Self {
        Signals {
            metrics,
            workload_metrics,
            events,
            seen: Mutex::default(),
            series: Mutex::default(),
        }
    }

    /// Brings metrics up to date with the inventory and posts the Events of what changed.
    /// The walk over every workload runs on a blocking thread: with 10,000 Pods it takes
    /// milliseconds, which the webhook's worker must not wait for.
    pub async fn publish(self: &Arc<Self>, inventory: &Arc<Inventory>) {
        let (this, inventory) = (self.clone(), inventory.clone());
        let changed = tokio::task::spawn_blocking(move || {
            let rows = inventory.rows();
            this.set_metrics(&rows);
            this.transitions(rows)
        })
        .await
        .unwrap_or_default();
        for (row, event) in changed {
            self.post(&row, event).await;
        }
    }

    /// Leadership lost: the workload and in-use series belong to the new leader now.
    pub fn step_down(&self) {
        let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        for labels in series.drain() {
            self.metrics.workload_images.remove(&labels);
        }
        self.metrics.images_in_use.clear();
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clear();
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
    fn transitions(&self, rows: Vec<Row>) -> Vec<(Row, Seen)> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let mut changed = Vec::new();
        let mut present: HashSet<RowKey> = HashSet::new();
        for row in rows {
            let key: RowKey = (
                row.workload.key.clone(),
                row.container.name.clone(),
                row.container.image.clone(),
            );
            present.insert(key.clone());
            let now = match row.outcome() {
                Outcome::Unknown => continue,
                Outcome::Ok | Outcome::Skipped => Seen::Fine,
                broken => Seen::Broken(broken),
            };
            let before = seen.insert(key, now.clone());
            let tell = match (&before, &now) {
                (None, Seen::Broken(_)) => true,
                (Some(b), n) => b != n,
                (None, Seen::Fine) => false,
            };
            if tell {
                changed.push((row, now));
            }
        }
        seen.retain(|k, _| present.contains(k));
        changed
    }

    async fn post(&self, row: &Row, now: Seen) {
        let (type_, reason, note) = match now {
            Seen::Broken(_) => (
                EventType::Warning,
                "ImageUnavailable",
                row.problem().unwrap_or_default(),
            ),
            Seen::Fine => (
                EventType::Normal,
                "ImageAvailable",
                format!(
                    "container {}: {} is available again in ECR",
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
        let Some(sink) = &self.events else {
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
        // A recorder per Event: kube's recorder folds a repeat of the same reason on the same
        // object within minutes into the first Event (a PATCH of its count), keeping the
        // first note; each transition here is news with its own note.
        let recorder = Recorder::new(sink.client.clone(), sink.reporter.clone());
        match tokio::time::timeout(POST_TIMEOUT, recorder.publish(&event, &reference)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, reason, "cannot post the Event"),
            Err(_) => tracing::warn!(reason, "posting the Event timed out"),
        }
    }
}
