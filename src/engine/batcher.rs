//! Single-flight and coalescing for one repository's calls of one operation.
//!
//! Callers ask for a set of keys (image ids, blob digests) and await their answers. Keys
//! already in flight are joined, not asked again. New keys follow Nagle's rule: a request
//! that finds no call in flight sends its keys at once (a lone admission never waits; the
//! requests of the same moment join it); keys that arrive while a call is in flight gather
//! in a pending batch, which leaves when a call in flight returns, when it holds
//! [`MAX_IDS_PER_CALL`] keys, or when the window ends, whichever comes first. Each call's
//! answer is fanned out to every waiter. The call runs in its own task, so a caller that
//! gives up at its deadline never cancels it for the others.

use foldhash::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt, Shared};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::registry::{RegistryError, MAX_IDS_PER_CALL};

/// The answer of one call: a value per key it answered, or the call's error.
pub type BatchResult<K, V> = Result<Arc<HashMap<K, V>>, RegistryError>;
type SharedResult<K, V> = Shared<BoxFuture<'static, BatchResult<K, V>>>;

/// Looks a key up in the caches the calls fill. Asked under the batcher's lock for keys not
/// in flight: a batch fills the caches before it leaves the in-flight set, so a caller that
/// missed the cache just before the batch completed still finds its answer, not a new call.
pub type KnownFn<K, V> = Arc<dyn Fn(&K) -> Option<V> + Send + Sync>;

/// Sends one batch of keys; gets the batch's latest deadline.
pub type CallFn<K, V> = Arc<
    dyn Fn(Vec<K>, Instant) -> BoxFuture<'static, Result<HashMap<K, V>, RegistryError>>
        + Send
        + Sync,
>;

/// In-flight slots an idle batcher keeps.
const IDLE_CAPACITY: usize = 16;

struct Pending<K, V> {
    id: u64,
    keys: Vec<K>,
    deadline: Instant,
    sender: oneshot::Sender<BatchResult<K, V>>,
    shared: SharedResult<K, V>,
}

struct State<K, V> {
    next_id: u64,
    in_flight: HashMap<K, (u64, SharedResult<K, V>)>,
    /// The next call's keys: gathering while calls are in flight, or about to leave.
    pending: Option<Pending<K, V>>,
    /// Calls sent and not answered yet.
    calls: usize,
}

pub struct Coalescer<K, V> {
    state: Mutex<State<K, V>>,
    window: Duration,
    call: CallFn<K, V>,
    known: KnownFn<K, V>,
}

impl<K, V> Coalescer<K, V>
where
    K: Clone + Eq + Hash + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    pub fn new(window: Duration, call: CallFn<K, V>, known: KnownFn<K, V>) -> Arc<Self> {
        Arc::new(Coalescer {
            state: Mutex::new(State {
                next_id: 0,
                in_flight: HashMap::default(),
                pending: None,
                calls: 0,
            }),
            window,
            call,
            known,
        })
    }

    /// Answers for `keys` (a key missing from the map was not answered by ECR), or the
    /// error of the call that carried it. `deadline` bounds the call's retries; the caller
    /// bounds its own wait.
    pub async fn request(
        self: &Arc<Self>,
        keys: &[K],
        deadline: Instant,
    ) -> HashMap<K, Result<V, RegistryError>> {
        let mut waits: Vec<(u64, SharedResult<K, V>, Vec<K>)> = Vec::new();
        let mut out = HashMap::default();
        {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            for key in keys {
                if let Some((id, shared)) = state.in_flight.get(key) {
                    push_wait(&mut waits, *id, shared, key);
                    continue;
                }
                if let Some(value) = (self.known)(key) {
                    out.insert(key.clone(), Ok(value));
                    continue;
                }
                let (id, shared, full) = self.enqueue(&mut state, key.clone(), deadline);
                push_wait(&mut waits, id, &shared, key);
                if full {
                    self.send_pending(&mut state);
                }
            }
        }
        for (_, shared, keys) in waits {
            match shared.await {
                Ok(answers) => {
                    for key in keys {
                        if let Some(v) = answers.get(&key) {
                            out.insert(key, Ok(v.clone()));
                        }
                    }
                }
                Err(e) => {
                    for key in keys {
                        out.insert(key, Err(e.clone()));
                    }
                }
            }
        }
        out
    }

    /// Adds `key` to the pending batch, opening one if needed. Returns the batch id, its
    /// shared answer, and whether the batch is now full.
    fn enqueue(
        self: &Arc<Self>,
        state: &mut State<K, V>,
        key: K,
        deadline: Instant,
    ) -> (u64, SharedResult<K, V>, bool) {
        let pending = match state.pending.take() {
            Some(p) => state.pending.insert(p),
            None => {
                let id = state.next_id;
                state.next_id += 1;
                let gather = state.calls > 0 && !self.window.is_zero();
                state.pending.insert(self.open(id, deadline, gather))
            }
        };
        pending.keys.push(key.clone());
        pending.deadline = pending.deadline.max(deadline);
        state
            .in_flight
            .insert(key, (pending.id, pending.shared.clone()));
        (
            pending.id,
            pending.shared.clone(),
            pending.keys.len() >= MAX_IDS_PER_CALL,
        )
    }

    /// A new pending batch. Opened while calls are in flight, it is to `gather`: a timer
    /// sends it when the window ends, if a returning call has not sent it before. Opened
    /// idle, it leaves as soon as the tasks already woken have run: those are the other
    /// requests of the same moment (the waiters of one answer, the admissions of one read),
    /// and their keys join it, at the cost of a task hop, not of a timer tick.
    fn open(self: &Arc<Self>, id: u64, deadline: Instant, gather: bool) -> Pending<K, V> {
        let (sender, receiver) = oneshot::channel();
        let shared = receiver
            .map(|r| r.unwrap_or_else(|_| Err(RegistryError::Transport("batch abandoned".into()))))
            .boxed()
            .shared();
        tokio::spawn(Arc::clone(self).leave_when_due(id, gather));
        Pending {
            id,
            keys: Vec::new(),
            deadline,
            sender,
            shared,
        }
    }

    /// Waits for the window (or for the tasks already woken) and makes pending batch `id`'s
    /// call in this task, unless the batch already went out (full, or after a call returned).
    async fn leave_when_due(self: Arc<Self>, id: u64, gather: bool) {
        if gather {
            tokio::time::sleep(self.window).await;
        } else {
            tokio::task::yield_now().await;
        }
        let batch = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            match &state.pending {
                Some(p) if p.id == id => take_pending(&mut state),
                _ => None,
            }
        };
        if let Some(batch) = batch {
            self.run(batch).await;
        }
    }

    /// Sends the pending batch, if there is one.
    fn send_pending(self: &Arc<Self>, state: &mut State<K, V>) {
        if let Some(batch) = take_pending(state) {
            self.send(batch);
        }
    }

    /// Makes the call in a task of its own, so that no caller's cancellation stops it.
    fn send(self: &Arc<Self>, batch: Pending<K, V>) {
        let this = Arc::clone(self);
        tokio::spawn(async move { this.run(batch).await });
    }

    /// Makes the call; when it returns, the keys leave the in-flight set and the batch that
    /// gathered meanwhile goes out.
    async fn run(self: &Arc<Self>, batch: Pending<K, V>) {
        let Pending {
            id,
            keys,
            deadline,
            sender,
            ..
        } = batch;
        let result = (self.call)(keys.clone(), deadline).await.map(Arc::new);
        {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            for key in &keys {
                if state.in_flight.get(key).is_some_and(|(i, _)| *i == id) {
                    state.in_flight.remove(key);
                }
            }
            state.calls = state.calls.saturating_sub(1);
            if state.in_flight.is_empty() && state.in_flight.capacity() > IDLE_CAPACITY {
                // A repository's batcher lives while the repository is in use; the slots
                // of its biggest call would stay with it (at 5,000 repositories, 30 MiB
                // kept after a pass of the controller, docs/performance.md 8b).
                state.in_flight = HashMap::default();
            }
            self.send_pending(&mut state);
        }
        let _ = sender.send(result);
    }
}

/// Takes the pending batch out to be called, counting the call as in flight.
fn take_pending<K, V>(state: &mut State<K, V>) -> Option<Pending<K, V>> {
    let batch = state.pending.take()?;
    state.calls += 1;
    Some(batch)
}

fn push_wait<K, V>(
    waits: &mut Vec<(u64, SharedResult<K, V>, Vec<K>)>,
    id: u64,
    shared: &SharedResult<K, V>,
    key: &K,
) where
    K: Clone + Eq + Hash + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    match waits.iter_mut().find(|(i, _, _)| *i == id) {
        Some((_, _, keys)) => keys.push(key.clone()),
        None => waits.push((id, shared.clone(), vec![key.clone()])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_idle_batcher_gives_back_the_slots_of_its_biggest_call() {
        let call: CallFn<u32, u32> = Arc::new(|keys: Vec<u32>, _| {
            async move { Ok(keys.into_iter().map(|k| (k, k * 2)).collect()) }.boxed()
        });
        let batcher = Coalescer::new(Duration::ZERO, call, Arc::new(|_: &u32| None));
        let keys: Vec<u32> = (0..100).collect();
        let answers = batcher
            .request(&keys, Instant::now() + Duration::from_secs(5))
            .await;
        assert_eq!(answers.len(), 100);
        assert!(answers
            .iter()
            .all(|(k, v)| v.as_ref().ok() == Some(&(k * 2))));
        let state = batcher.state.lock().unwrap_or_else(|p| p.into_inner());
        assert!(state.in_flight.is_empty());
        assert!(
            state.in_flight.capacity() <= IDLE_CAPACITY,
            "{} slots kept",
            state.in_flight.capacity()
        );
    }
}
