//! Batched session look-ups: the sessions of concurrent key and user pushes, fetched in shared
//! store calls while the store is busy (see "Throughput" in the [`push`](super) module docs).

use crate::observe::timed_store;
use crate::state::AppState;
use rim_store::{Session, Store, StoreError};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::sync::{Semaphore, mpsc, oneshot};

/// Whose live sessions a push needs.
pub(super) enum Wanted {
    /// The sessions of these keys.
    Keys(Vec<String>),
    /// The newest sessions of these users (up to the per-user bound and one more).
    Mids(Vec<i64>),
}

/// Where a session look-up's answer goes.
type LookupAnswer = oneshot::Sender<Result<Vec<Session>, StoreError>>;

/// One push's session look-up.
struct Lookup {
    wanted: Wanted,
    answer: LookupAnswer,
}

/// Most keys, or users, one batched session look-up names (a push naming more goes alone).
pub const MAX_LOOKUP_NAMES: usize = 4096;

/// Batched session look-ups in flight at once per control instance (each holds up to one store
/// connection per kind).
pub const MAX_LOOKUPS_IN_FLIGHT: usize = 4;

/// Session look-ups waiting beyond which callers wait to queue theirs.
const LOOKUP_QUEUE: usize = 16 * 1024;

/// Batches the session look-ups of concurrent key and user pushes: one store call for the keys
/// and one for the users of every push waiting at that moment (see "Throughput" in the module
/// docs). A look-up that finds none running makes its own call at once, without the hop through
/// the look-up task, so batching costs nothing while the store keeps up. The task is started by
/// the first batched look-up (it needs a runtime); it stops when the instance's state is dropped.
#[derive(Default)]
pub struct SessionLookups {
    queue: OnceLock<mpsc::Sender<Lookup>>,
    /// Look-ups running now, alone or batched.
    running: Arc<AtomicUsize>,
}

impl SessionLookups {
    /// The live sessions `wanted` names, ordered by key, as one store call of its own would
    /// answer them.
    pub(super) async fn sessions(
        &self,
        state: &AppState,
        wanted: Wanted,
    ) -> Result<Vec<Session>, StoreError> {
        let stopped = || StoreError::Unavailable("the session look-up task stopped".into());
        // One more than the bound tells a capped user from one with exactly the bound.
        let per_user = state.config.control_max_sessions_per_user.saturating_add(1);
        let (answer, answered) = oneshot::channel();
        let lookup = Lookup { wanted, answer };
        let (running, idle) = Running::enter(&self.running);
        if idle {
            let mut batch = LookupBatch::default();
            // The first look-up of a batch always fits.
            let _ = batch.add(lookup);
            batch.run(state.store.as_ref(), per_user).await;
            drop(running);
            return answered.await.map_err(|_| stopped())?;
        }
        drop(running);
        let queue = self.queue.get_or_init(|| {
            let (sender, receiver) = mpsc::channel(LOOKUP_QUEUE);
            let task = run_lookups(
                state.store.clone(),
                per_user,
                self.running.clone(),
                receiver,
            );
            tokio::spawn(task);
            sender
        });
        queue.send(lookup).await.map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }
}

/// Counts one running look-up (or batch) while it lives.
struct Running(Arc<AtomicUsize>);

impl Running {
    /// Counts one more; whether none was running before.
    fn enter(count: &Arc<AtomicUsize>) -> (Running, bool) {
        let idle = count.fetch_add(1, Ordering::AcqRel) == 0;
        (Running(count.clone()), idle)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The look-up task: takes every look-up waiting once a batch may start (never waiting for more
/// to come) and runs them as one store call per kind; a look-up that would take its kind past
/// [`MAX_LOOKUP_NAMES`] goes first into the next batch.
async fn run_lookups(
    store: Arc<dyn Store>,
    per_user: usize,
    running: Arc<AtomicUsize>,
    mut queue: mpsc::Receiver<Lookup>,
) {
    let in_flight = Arc::new(Semaphore::new(MAX_LOOKUPS_IN_FLIGHT));
    let mut carried: Option<Lookup> = None;
    loop {
        let Some(first) = carried_or_next(&mut carried, &mut queue).await else {
            return;
        };
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        // Taken after the permit: what arrived while batches were in flight joins this one.
        let mut batch = LookupBatch::default();
        let mut next = Some(first);
        while let Some(lookup) = next {
            if let Some(unfit) = batch.add(lookup) {
                carried = Some(unfit);
                break;
            }
            next = queue.try_recv().ok();
        }
        let store = store.clone();
        let (counted, _) = Running::enter(&running);
        tokio::spawn(async move {
            batch.run(store.as_ref(), per_user).await;
            drop((counted, permit));
        });
    }
}

/// The look-ups of one batch, by kind.
#[derive(Default)]
struct LookupBatch {
    keys: LookupPart<String>,
    mids: LookupPart<i64>,
}

impl LookupBatch {
    /// Takes `lookup` if it fits; hands it back otherwise.
    fn add(&mut self, lookup: Lookup) -> Option<Lookup> {
        let Lookup { wanted, answer } = lookup;
        match wanted {
            Wanted::Keys(keys) if self.keys.fits(keys.len()) => self.keys.push(keys, answer),
            Wanted::Mids(mids) if self.mids.fits(mids.len()) => self.mids.push(mids, answer),
            wanted => return Some(Lookup { wanted, answer }),
        }
        None
    }

    /// One store call per kind (at once), then every look-up answered with its part.
    async fn run(self, store: &dyn Store, per_user: usize) {
        let now = crate::now_ms();
        let LookupBatch { keys, mids } = self;
        let keys = async {
            if !keys.is_empty() {
                let names = keys.names();
                let found = timed_store("sessions_by_keys", store.sessions_by_keys(&names, now));
                keys.answer(found.await, |session| &session.key);
            }
        };
        let mids = async {
            if !mids.is_empty() {
                let names = mids.names();
                let found = timed_store(
                    "newest_sessions_by_mids",
                    store.newest_sessions_by_mids(&names, per_user, now),
                );
                mids.answer(found.await, |session| &session.mid);
            }
        };
        tokio::join!(keys, mids);
    }
}

/// The look-ups of one kind in a batch, each with the names (keys or users) it wants.
struct LookupPart<N> {
    lookups: Vec<(Vec<N>, LookupAnswer)>,
    /// Names over all of them (repeats counted).
    names: usize,
}

impl<N> Default for LookupPart<N> {
    fn default() -> Self {
        Self {
            lookups: Vec::new(),
            names: 0,
        }
    }
}

impl<N: Ord + Clone> LookupPart<N> {
    fn is_empty(&self) -> bool {
        self.lookups.is_empty()
    }

    /// Whether a look-up of `more` names fits (the first always does).
    fn fits(&self, more: usize) -> bool {
        self.is_empty() || self.names + more <= MAX_LOOKUP_NAMES
    }

    fn push(&mut self, names: Vec<N>, answer: LookupAnswer) {
        self.names += names.len();
        self.lookups.push((names, answer));
    }

    /// Every name wanted, once each.
    fn names(&self) -> Vec<N> {
        let names: BTreeSet<&N> = self.lookups.iter().flat_map(|(names, _)| names).collect();
        names.into_iter().cloned().collect()
    }

    /// Answers each look-up with the sessions of the names it wanted, in the store's order (or
    /// with the store's error).
    fn answer(self, found: Result<Vec<Session>, StoreError>, name_of: impl Fn(&Session) -> &N) {
        let sessions = match found {
            Ok(sessions) => sessions,
            Err(error) => {
                for (_, answer) in self.lookups {
                    // A caller that went away does not need its answer.
                    let _ = answer.send(Err(error.clone()));
                }
                return;
            }
        };
        // (name, look-up) for every name wanted, sorted: the look-ups wanting a name are one run.
        // One vector for the whole batch instead of a map entry and a list per name.
        let mut wanting: Vec<(&N, usize)> = Vec::with_capacity(self.names);
        for (index, (names, _)) in self.lookups.iter().enumerate() {
            wanting.extend(names.iter().map(|name| (name, index)));
        }
        wanting.sort_unstable();
        let mut parts: Vec<Vec<Session>> = vec![Vec::new(); self.lookups.len()];
        for session in sessions {
            let name = name_of(&session);
            let from = wanting.partition_point(|(wanted, _)| *wanted < name);
            let run = wanting[from..]
                .iter()
                .take_while(|(wanted, _)| *wanted == name)
                .count();
            let Some(((_, last), others)) = wanting[from..from + run].split_last() else {
                continue;
            };
            for (_, index) in others {
                parts[*index].push(session.clone());
            }
            parts[*last].push(session);
        }
        drop(wanting);
        for ((_, answer), sessions) in self.lookups.into_iter().zip(parts) {
            let _ = answer.send(Ok(sessions));
        }
    }
}

/// The first item of a batcher's next batch: the one carried over from the last (too large to join
/// it), else the next from the queue; `None` once the queue's senders are gone.
async fn carried_or_next<T>(carried: &mut Option<T>, queue: &mut mpsc::Receiver<T>) -> Option<T> {
    match carried.take() {
        Some(first) => Some(first),
        None => queue.recv().await,
    }
}
