//! Posting Events. The verifier hands them to a queue and goes on: a poster sends them with
//! at most `in_flight` requests at a time, at most `per_second` a second after a burst of
//! `burst` (a token bucket), so that a repository deleted under 500 workloads neither
//! stalls a pass nor floods the API server. A full queue drops an Event and counts it
//! (`ecr_preflight_watch_events_dropped_total{reason}`) rather than waiting.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, Recorder, Reporter};
use kube::Client;
use tokio::sync::{mpsc, Mutex, Semaphore};
use tokio::time::Instant;

use crate::metrics::{ReasonLabels, WatchMetrics};
use crate::supervise;

/// How Events leave.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EventPace {
    pub per_second: f64,
    pub burst: u32,
    pub in_flight: usize,
    /// Events waiting at most; beyond, new ones are dropped.
    pub queue: usize,
}

impl Default for EventPace {
    /// 10 a second after a burst of 50 (client-go's default client allows 5 requests a
    /// second with a burst of 10; the controller's watches are long-lived and take none),
    /// 4 at a time, 1,000 waiting.
    fn default() -> Self {
        EventPace {
            per_second: 10.0,
            burst: 50,
            in_flight: 4,
            queue: 1000,
        }
    }
}

/// Where Events go.
pub struct EventSink {
    pub client: Client,
    pub reporter: Reporter,
    pub pace: EventPace,
}

/// An Event waiting to be posted.
struct Pending {
    event: Event,
    reference: ObjectReference,
    reason: &'static str,
}

const POST_TIMEOUT: Duration = Duration::from_secs(10);

/// The queue the verifier hands Events to.
pub struct EventQueue {
    tx: mpsc::Sender<Pending>,
    metrics: Arc<WatchMetrics>,
}

impl EventQueue {
    /// Starts the poster (supervised: restarted if it ever stops) on the current runtime.
    pub fn start(sink: EventSink, metrics: Arc<WatchMetrics>) -> Self {
        let (tx, rx) = mpsc::channel(sink.pace.queue.max(1));
        let rx = Arc::new(Mutex::new(rx));
        let sink = Arc::new(sink);
        supervise::spawn("events", metrics.task_restarts.clone(), move || {
            post_all(rx.clone(), sink.clone())
        });
        EventQueue { tx, metrics }
    }

    /// Queues `event` on `reference`; never waits.
    pub fn offer(&self, event: Event, reference: ObjectReference, reason: &'static str) {
        let pending = Pending {
            event,
            reference,
            reason,
        };
        if self.tx.try_send(pending).is_err() {
            self.metrics
                .events_dropped
                .get_or_create(&ReasonLabels { reason })
                .inc();
            tracing::warn!(
                reason,
                "the Event queue is full: an Event was dropped (counted in ecr_preflight_watch_events_dropped_total)"
            );
        }
    }
}

/// Posts what the queue holds, paced, until every sender is gone.
async fn post_all(rx: Arc<Mutex<mpsc::Receiver<Pending>>>, sink: Arc<EventSink>) {
    let mut rx = rx.lock().await;
    let mut bucket = TokenBucket::new(sink.pace.per_second, sink.pace.burst);
    let slots = Arc::new(Semaphore::new(sink.pace.in_flight.max(1)));
    while let Some(pending) = rx.recv().await {
        bucket.take().await;
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let sink = sink.clone();
        tokio::spawn(async move {
            post(&sink, pending).await;
            drop(slot);
        });
    }
}

async fn post(sink: &EventSink, pending: Pending) {
    // A recorder per Event: kube's recorder folds a repeat of the same reason on the same
    // object within minutes into the first Event (a PATCH of its count), keeping the first
    // note; each transition here is news with its own note.
    let recorder = Recorder::new(sink.client.clone(), sink.reporter.clone());
    let reason = pending.reason;
    let publish = recorder.publish(&pending.event, &pending.reference);
    match tokio::time::timeout(POST_TIMEOUT, publish).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, reason, "cannot post the Event"),
        Err(_) => tracing::warn!(reason, "posting the Event timed out"),
    }
}

/// Up to `burst` at once, then one every 1/`per_second`.
struct TokenBucket {
    per_second: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    fn new(per_second: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            per_second: per_second.max(0.01),
            burst,
            tokens: burst,
            at: Instant::now(),
        }
    }

    /// Waits for a token and takes it.
    async fn take(&mut self) {
        let now = Instant::now();
        self.tokens =
            (self.tokens + (now - self.at).as_secs_f64() * self.per_second).min(self.burst);
        self.at = now;
        if self.tokens < 1.0 {
            let wait = Duration::from_secs_f64((1.0 - self.tokens) / self.per_second);
            tokio::time::sleep(wait).await;
            self.tokens = 1.0;
            self.at = now + wait;
        }
        self.tokens -= 1.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let client = Client::try_from(kube::Config::new(
            "http://127.0.0.1:9".parse().expect("url"),
        ))
        .expect("client");
        let metrics: Arc<WatchMetrics> = Arc::new(WatchMetrics::default());
        let sink = EventSink {
            client,
            reporter: Reporter {
                controller: "test".into(),
                instance: None,
            },
            pace: EventPace {
                queue: 1,
                ..EventPace::default()
            },
        };
        let queue = EventQueue::start(sink, metrics.clone());
        let event = || Event {
            type_: kube::runtime::events::EventType::Warning,
            reason: "ImageUnavailable".into(),
            note: None,
            action: "Reverify".into(),
            secondary: None,
        };
        // The poster has not run yet (one thread, no await): the first waits, the others
        // find the queue full.
        for _ in 0..3 {
            queue.offer(event(), ObjectReference::default(), "ImageUnavailable");
        }
        assert_eq!(metrics.events_dropped(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn the_bucket_gives_its_burst_at_once_then_one_a_period() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10.0, 5);
        let mut at = Vec::new();
        for _ in 0..8 {
            bucket.take().await;
            at.push((Instant::now() - start).as_millis());
        }
        assert_eq!(at, [0, 0, 0, 0, 0, 100, 200, 300]);
        // Idle for 10 s refills to the burst, not beyond.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let idle = Instant::now();
        for _ in 0..6 {
            bucket.take().await;
        }
        assert_eq!((Instant::now() - idle).as_millis(), 100);
    }
}
