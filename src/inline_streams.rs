//! Runs a connection's HTTP/2 streams inside the connection's own task.
//!
//! hyper hands each HTTP/2 request to an executor as its own future; with tokio's, that is a
//! task per request: allocated, registered, scheduled, polled and torn down, and it wakes
//! the connection task again to send the answer. A cached review is answered in one poll,
//! so that bookkeeping was a large share of an HTTP/2 request: here the connection's task
//! polls its streams itself, right after the connection has read them, and the server's
//! CPU per cached HTTP/2 review fell from 12.5 to 10.5 µs (docs/performance.md).
//!
//! Bounds stay as they were: a connection has at most its `max_concurrent_streams` streams
//! open, and each stream's review its deadline. A stream still waiting (on ECR) is polled
//! again only when its own waker fires, and does not hold up the others.
//!
//! The price: one connection's streams share its thread, so with `--worker-threads` above
//! one, a single HTTP/2 connection no longer spreads over threads (clients with several
//! connections still do). A cached review takes microseconds and an uncached one waits
//! without holding the thread, so a thread serves far more than an API server sends. And a
//! panic in one stream would end its whole connection, not that stream alone; the review
//! path is written not to panic (no `unwrap` on input) and fuzzed (`scripts/fuzz.sh`).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use futures::task::AtomicWaker;

/// The executor given to hyper for one connection: it queues streams for
/// [`StreamsInline::serve`] to run.
#[derive(Clone, Default)]
pub struct StreamsInline {
    inbox: Arc<Inbox>,
}

#[derive(Default)]
struct Inbox {
    queued: Mutex<Vec<BoxFuture<'static, ()>>>,
    /// Whether `queued` may hold streams: most polls (all of an HTTP/1.1 connection's)
    /// queue none, and then cost no lock.
    any_queued: AtomicBool,
    /// The connection's task, for a stream queued from outside its poll.
    waker: AtomicWaker,
    /// Set while the connection's task polls: streams queued then are run in that poll.
    polling: AtomicBool,
}

impl<F> hyper::rt::Executor<F> for StreamsInline
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, stream: F) {
        self.inbox
            .queued
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Box::pin(stream));
        self.inbox.any_queued.store(true, Ordering::Release);
        if !self.inbox.polling.load(Ordering::Acquire) {
            self.inbox.waker.wake();
        }
    }
}

impl StreamsInline {
    /// Drives `connection` and the streams it hands to this executor, until the
    /// connection has ended and every stream has finished.
    pub async fn serve<C, T>(&self, connection: C) -> T
    where
        C: Future<Output = T>,
    {
        let mut connection = std::pin::pin!(Some(connection));
        let mut outcome = None;
        let mut streams = FuturesUnordered::new();
        let mut registered: Option<Waker> = None;
        std::future::poll_fn(|cx| {
            // A task's waker stays the same from poll to poll: registered once.
            if !registered.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                self.inbox.waker.register(cx.waker());
                registered = Some(cx.waker().clone());
            }
            self.inbox.polling.store(true, Ordering::Release);
            if let Some(open) = connection.as_mut().as_pin_mut() {
                if let Poll::Ready(done) = open.poll(cx) {
                    outcome = Some(done);
                    // Dropped at once: an HTTP/2 connection going away fails its streams'
                    // pending reads, so none of them waits on a peer that is gone.
                    connection.set(None);
                }
            }
            self.inbox.polling.store(false, Ordering::Release);
            self.take_queued(&mut streams);
            // Polled until none is ready: each answered stream's response is then queued
            // on the connection, which its own wake-up writes out.
            while let Poll::Ready(Some(())) = streams.poll_next_unpin(cx) {}
            if streams.is_empty() {
                if let Some(done) = outcome.take() {
                    return Poll::Ready(done);
                }
            }
            Poll::Pending
        })
        .await
    }

    fn take_queued(&self, streams: &mut FuturesUnordered<BoxFuture<'static, ()>>) {
        if !self.inbox.any_queued.swap(false, Ordering::AcqRel) {
            return;
        }
        let mut queued = self.inbox.queued.lock().unwrap_or_else(|p| p.into_inner());
        streams.extend(queued.drain(..));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::Executor;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    #[tokio::test]
    async fn streams_queued_by_the_connection_run_and_the_connection_waits_for_them() {
        let exec = StreamsInline::default();
        let done = Arc::new(AtomicUsize::new(0));
        let (spawner, counter) = (exec.clone(), done.clone());
        let connection = async move {
            for i in 0..3u64 {
                let counter = counter.clone();
                spawner.execute(async move {
                    tokio::time::sleep(Duration::from_millis(10 * i)).await;
                    counter.fetch_add(1, Ordering::SeqCst);
                });
            }
            "closed"
        };
        assert_eq!(exec.serve(connection).await, "closed");
        assert_eq!(done.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn the_connection_is_dropped_when_it_ends_so_streams_waiting_on_it_end_too() {
        let exec = StreamsInline::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let spawner = exec.clone();
        // The stream waits on something the connection owns, as an HTTP/2 stream waits
        // for body data from its connection.
        spawner.execute(async move {
            let _ = rx.await;
        });
        // Holds the sender until it is dropped, not merely until it has finished.
        let mut first = true;
        let connection = std::future::poll_fn(move |cx| {
            let _peer = &tx;
            if std::mem::take(&mut first) {
                cx.waker().wake_by_ref();
                Poll::Pending
            } else {
                Poll::Ready("closed")
            }
        });
        let served = tokio::time::timeout(Duration::from_secs(5), exec.serve(connection)).await;
        assert_eq!(served, Ok("closed"), "a stream outlived its connection");
    }

    #[tokio::test]
    async fn a_stream_queued_from_outside_the_poll_wakes_the_connection() {
        let exec = StreamsInline::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let outside = exec.clone();
        let ran = Arc::new(AtomicBool::new(false));
        let flag = ran.clone();
        let waker = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            outside.execute(async move {
                flag.store(true, Ordering::SeqCst);
                let _ = tx.send(());
            });
        });
        // The connection ends only once the stream queued from the other task has run.
        let connection = async move { rx.await.is_ok() };
        assert!(exec.serve(connection).await);
        assert!(ran.load(Ordering::SeqCst));
        waker.await.unwrap();
    }
}
