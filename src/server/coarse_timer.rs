//! A coarse timer for hyper's per-request header-read timeout.
//!
//! hyper arms the header-read timer for every request on a keep-alive connection. With
//! tokio's timer that is a timer-wheel registration and cancellation per request, measured
//! here at about 4 µs of CPU per HTTP/1.1 request (benches/warm_path.sh). A slow-client
//! guard needs no millisecond precision: here a sleep costs one small allocation and a
//! push under an uncontended lock, and one background task wakes whatever has expired,
//! a few times a second.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::task::AtomicWaker;
use hyper::rt::{Sleep, Timer};

/// How often expired sleeps are woken: the timer's precision.
pub const TICK: Duration = Duration::from_millis(250);

struct Entry {
    deadline: Instant,
    fired: AtomicBool,
    waker: AtomicWaker,
}

#[derive(Default)]
struct Shared {
    pending: Mutex<Vec<Weak<Entry>>>,
}

/// The timer handed to hyper; clones share one ticker.
#[derive(Clone)]
pub struct CoarseTimer {
    shared: Arc<Shared>,
}

impl CoarseTimer {
    /// Starts the ticker on the current tokio runtime; it ends when the last clone is dropped.
    pub fn start() -> Self {
        let shared = Arc::new(Shared::default());
        let weak = Arc::downgrade(&shared);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(shared) = weak.upgrade() else { break };
                shared.wake_expired(Instant::now());
            }
        });
        CoarseTimer { shared }
    }
}

impl Shared {
    fn wake_expired(&self, now: Instant) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.retain(|weak| match weak.upgrade() {
            // Dropped before expiry: forget it.
            None => false,
            Some(entry) if entry.deadline <= now => {
                entry.fired.store(true, Ordering::Release);
                entry.waker.wake();
                false
            }
            Some(_) => true,
        });
    }
}

struct CoarseSleep {
    entry: Arc<Entry>,
    shared: Arc<Shared>,
    registered: bool,
}

impl Future for CoarseSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.entry.fired.load(Ordering::Acquire) || Instant::now() >= self.entry.deadline {
            return Poll::Ready(());
        }
        self.entry.waker.register(cx.waker());
        if !self.registered {
            self.registered = true;
            let weak = Arc::downgrade(&self.entry);
            self.shared
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(weak);
        }
        Poll::Pending
    }
}

impl Sleep for CoarseSleep {}

impl Timer for CoarseTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        Box::pin(CoarseSleep {
            entry: Arc::new(Entry {
                deadline,
                fired: AtomicBool::new(false),
                waker: AtomicWaker::new(),
            }),
            shared: self.shared.clone(),
            registered: false,
        })
    }
}
