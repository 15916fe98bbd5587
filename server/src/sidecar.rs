//! The command sidecar service: runs commands through the pure state machine
//! (`commandpost_shared::machine`), makes the resulting events durable, and
//! only then updates the in-memory state and tells live subscribers.
//!
//! Invariants:
//! - commands of one incident run one at a time (a per-incident async lock
//!   held from validation until the events are durable), so every command is
//!   validated against durable state only;
//! - an event reaches subscribers, and a command its HTTP answer, only after
//!   the event is on disk;
//! - deadlines (offer expiry, overdue status updates) are derived from the
//!   durable state, so the timer re-arms itself after any restart.
//!
//! Across the nodes of a cluster (one PostgreSQL store, one Redis bus), the
//! next seq is claimed optimistically: the store appends events insert-only,
//! and an append whose seq another node took first writes nothing
//! ([`EventsAppend::SeqTaken`]). The sidecar then reads the events it lacks
//! from storage, applies them (its subscribers hear of them in order),
//! validates the command again against that state and retries, at most
//! [`MAX_ATTEMPTS`] times. Committed events go out on the bus
//! ([`Kind::Events`]); other nodes apply the next ones they lack and
//! otherwise catch up from storage, also periodically (for messages the bus
//! lost). Timers may fire on every node: the second Tick conflicts, catches
//! up, and finds nothing left to do (deadlines are derived from state).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use commandpost_shared::incident::{Caller, Command, Event, EventKind, EventSeq, IncidentState};
use commandpost_shared::machine::{self, Rules};
use commandpost_shared::{Actor, CreateIncident, IncidentId, UserId, limits};
use tokio::sync::{Notify, broadcast};

use crate::cluster::{Bus, Delivery, Kind};
use crate::quarantine::QuarantineKind;
use crate::store::{EventsAppend, IncidentRecord, InitialContent, Store, StoreError};
use crate::template;

/// Where time comes from; injectable so timers are deterministic in tests.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// The real clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to (tests).
#[derive(Default)]
pub struct ManualClock(parking_lot::Mutex<Option<DateTime<Utc>>>);

impl ManualClock {
    pub fn at(now: DateTime<Utc>) -> Self {
        Self(parking_lot::Mutex::new(Some(now)))
    }

    pub fn set(&self, now: DateTime<Utc>) {
        *self.0.lock() = Some(now);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        self.0.lock().unwrap_or_else(Utc::now)
    }
}

/// Someone the server knows, and when it learnt the name it knows them by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KnownPerson {
    pub actor: Actor,
    pub seen_at: DateTime<Utc>,
}

/// Who the server knows outside any incident (the token registry: every
/// token minted here or seen in use records its subject and name).
pub trait Directory: Send + Sync {
    /// The person with this id, if known.
    fn person(&self, id: &UserId) -> Option<KnownPerson>;
    /// Everyone known.
    fn people(&self) -> Vec<KnownPerson>;
}

/// Why a command did not produce events.
#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    #[error("{0}")]
    Refused(commandpost_shared::incident::CommandError),
    #[error("no incident {0}")]
    NotFound(IncidentId),
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("a stored event of {0} does not decode: {1}")]
    Corrupt(IncidentId, String),
    /// Other nodes took the next seq [`MAX_ATTEMPTS`] times in a row.
    #[error("{0} is too busy: other servers kept appending first; try again")]
    Contended(IncidentId),
}

/// How many times a command is validated and appended before it gives up
/// because other nodes keep taking the next seq first.
pub const MAX_ATTEMPTS: usize = 10;

/// How often loaded sidecars read storage for events the bus did not bring.
const CATCH_UP_EVERY: std::time::Duration = std::time::Duration::from_secs(2);
/// The same while the bus is down.
const CATCH_UP_OFFLINE: std::time::Duration = std::time::Duration::from_millis(250);

/// One incident's sidecar: its state and its live subscribers.
struct Sidecar {
    /// Held from validation until the command's events are durable: commands
    /// of one incident are serialised. Async because it spans the flush.
    state: tokio::sync::Mutex<IncidentState>,
    /// The latest durable state, for readers that must not wait on a command
    /// in progress. Plain lock, never held across `.await`.
    latest: parking_lot::RwLock<Arc<IncidentState>>,
    /// Live events, sent after they are durable.
    live: broadcast::Sender<Arc<Event>>,
    /// When each (person, command) last had a refused attempt recorded, so
    /// refusals cannot flood the timeline (one per
    /// [`machine::REFUSED_ATTEMPT_WINDOW`]). Entries older than the window
    /// are dropped whenever one is added. Plain lock, never held across
    /// `.await`.
    refusals_recorded: parking_lot::Mutex<HashMap<(UserId, &'static str), DateTime<Utc>>>,
}

impl Sidecar {
    /// Whether a refused attempt of `command` by `person` at `now` goes on
    /// the timeline; if so, remembers it.
    fn admit_refusal(&self, person: &UserId, command: &'static str, now: DateTime<Utc>) -> bool {
        let mut recorded = self.refusals_recorded.lock();
        let window = machine::REFUSED_ATTEMPT_WINDOW;
        if recorded
            .get(&(person.clone(), command))
            .is_some_and(|last| now - *last < window)
        {
            return false;
        }
        recorded.retain(|_, last| now - *last < window);
        recorded.insert((person.clone(), command), now);
        true
    }
}

/// The sidecars of all incidents. Cheap to clone.
#[derive(Clone)]
pub struct Sidecars {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    clock: Arc<dyn Clock>,
    rules: Rules,
    /// Loaded sidecars; plain lock, never held across `.await`.
    loaded: parking_lot::Mutex<HashMap<IncidentId, Arc<tokio::sync::OnceCell<Arc<Sidecar>>>>>,
    /// Upcoming deadlines, earliest first; the timer task sleeps until the
    /// first one.
    deadlines: parking_lot::Mutex<BTreeSet<(DateTime<Utc>, IncidentId)>>,
    deadlines_changed: Notify,
    /// Called with each command's events once they are durable and
    /// published ([`Sidecars::on_events`]).
    listeners: parking_lot::RwLock<Vec<Listener>>,
    /// The cluster bus, when this node is one of a cluster.
    bus: std::sync::OnceLock<Bus>,
}

/// What [`Sidecars::on_events`] registers: it runs on the command's task,
/// so it must only hand work off (spawn), never block.
pub type Listener = Arc<dyn Fn(&IncidentId, &[Event]) + Send + Sync>;

impl Sidecars {
    pub fn new(store: Store, clock: Arc<dyn Clock>, rules: Rules) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                clock,
                rules,
                loaded: parking_lot::Mutex::new(HashMap::new()),
                deadlines: parking_lot::Mutex::new(BTreeSet::new()),
                deadlines_changed: Notify::new(),
                listeners: parking_lot::RwLock::new(Vec::new()),
                bus: std::sync::OnceLock::new(),
            }),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    pub fn rules(&self) -> &Rules {
        &self.inner.rules
    }

    /// Registers `listener` to be told of every command's events after they
    /// are durable and published (the server keeps the document's
    /// exit-criteria block in step this way). Listeners run in order of
    /// registration on the command's task.
    pub fn on_events(&self, listener: Listener) {
        self.inner.listeners.write().push(listener);
    }

    /// Declares an incident: the state machine validates the declaration
    /// and makes its first events (seq 1, ...); the store then writes the
    /// next incident id, its record, its seeded document and those events in
    /// one transaction; and the incident's deadlines are armed. Time comes
    /// from the sidecar's clock. Returns the record and the events.
    pub async fn declare_incident(
        &self,
        declaration: CreateIncident,
        caller: &Caller,
    ) -> Result<(IncidentRecord, Vec<Event>), SidecarError> {
        let now = self.now();
        let title = declaration.title.trim().to_owned();
        let command = Command::Declare {
            title: title.clone(),
            severity: declaration.severity,
            criteria: declaration.criteria,
            summary: declaration.summary,
        };
        let events = machine::apply(None, &command, caller, now, &self.inner.rules)
            .map_err(SidecarError::Refused)?;
        let encoded: Vec<Vec<u8>> = events.iter().map(encode_event).collect();
        let state = machine::fold(&events).ok_or_else(|| {
            StoreError::Corrupt("a declaration made no incident state".to_owned())
        })?;
        // The document is seeded from the declaration (summary, severity,
        // answers); it names the incident, but the id is only known inside
        // the store's transaction: the store hands it over for rendering.
        let seed = state.clone();
        let record = self
            .inner
            .store
            .create_incident(title, caller.actor.clone(), now, move |id| InitialContent {
                doc: template::initial_update(&template::render(id, &seed)),
                events: encoded.clone(),
            })
            .await?;
        self.schedule(&record.id, &state);
        // Other nodes load the new incident (and arm its deadlines).
        self.publish(&record.id, &events);
        Ok((record, events))
    }

    /// Runs one command: validate, make the events durable, then publish.
    /// The people it names are taken as they are (the timer and tests);
    /// clients' commands go through [`Sidecars::command`].
    pub async fn execute(
        &self,
        id: &IncidentId,
        command: &Command,
        caller: &Caller,
    ) -> Result<Vec<Event>, SidecarError> {
        let sidecar = self.load(id).await?;
        let mut state = sidecar.state.lock().await;
        self.run(id, &sidecar, &mut state, |state, now| {
            machine::apply(Some(state), command, caller, now, &self.inner.rules)
                .map_err(SidecarError::Refused)
        })
        .await
    }

    /// Runs a client's command: every person it names must be someone the
    /// server knows (see [`Sidecars::known_people`]) and is recorded under
    /// the name they are known by; then as [`Sidecars::execute`]. When the
    /// command is refused for a rule as well as for an unknown person, the
    /// rule's refusal is the answer. `scope` is the incident the caller's
    /// token is limited to, if any.
    pub async fn command(
        &self,
        id: &IncidentId,
        command: &Command,
        caller: &Caller,
        scope: Option<&IncidentId>,
        directory: &dyn Directory,
    ) -> Result<Vec<Event>, SidecarError> {
        let sidecar = self.load(id).await?;
        let mut state = sidecar.state.lock().await;
        let known = std::cell::OnceCell::new();
        let resolved = machine::resolve_people(command, |person| {
            known
                .get_or_init(|| self.known_people(directory, scope))
                .get(person)
                .map(|known: &KnownPerson| known.actor.clone())
        });
        let command = match resolved {
            Ok(command) => command,
            Err(unknown) => {
                return self
                    .run(id, &sidecar, &mut state, |state, now| {
                        machine::apply(Some(state), command, caller, now, &self.inner.rules)
                            .map_err(SidecarError::Refused)?;
                        Err(SidecarError::Refused(unknown.clone()))
                    })
                    .await;
            }
        };
        let ran = self
            .run(id, &sidecar, &mut state, |state, now| {
                machine::apply(Some(state), &command, caller, now, &self.inner.rules)
                    .map_err(SidecarError::Refused)
            })
            .await;
        let Err(SidecarError::Refused(refusal)) = ran else {
            return ran;
        };
        // A refused production change or note leaves a trace for the
        // commander; the command itself stays refused.
        let now = self.now();
        if machine::refused_attempt(&state, &command, caller, &refusal, now).is_some()
            && sidecar.admit_refusal(&caller.actor.id, command.name(), now)
        {
            let traced = self
                .run(id, &sidecar, &mut state, |state, now| {
                    Ok(
                        machine::refused_attempt(state, &command, caller, &refusal, now)
                            .into_iter()
                            .collect(),
                    )
                })
                .await;
            if let Err(error) = traced {
                tracing::error!(incident = %id, %error, "cannot record a refused attempt");
            }
        }
        Err(SidecarError::Refused(refusal))
    }

    /// Plans events against the state with `plan` and commits them; when
    /// another node took their seq first, catches up from storage and plans
    /// again, at most [`MAX_ATTEMPTS`] times. In a cluster, a refusal is
    /// only final once the state was caught up (it may rest on events this
    /// node had not heard of yet). Called with the incident's lock held.
    async fn run(
        &self,
        id: &IncidentId,
        sidecar: &Sidecar,
        state: &mut IncidentState,
        mut plan: impl FnMut(&IncidentState, DateTime<Utc>) -> Result<Vec<Event>, SidecarError>,
    ) -> Result<Vec<Event>, SidecarError> {
        let mut caught_up = self.inner.bus.get().is_none();
        for _ in 0..MAX_ATTEMPTS {
            let events = match plan(state, self.now()) {
                Ok(events) => events,
                Err(SidecarError::Refused(refusal)) => {
                    if caught_up || self.catch_up_locked(id, sidecar, state).await? == 0 {
                        return Err(SidecarError::Refused(refusal));
                    }
                    caught_up = true;
                    continue;
                }
                Err(error) => return Err(error),
            };
            if let Some(events) = self.commit(id, sidecar, state, events).await? {
                return Ok(events);
            }
            // Another node appended first: learn what it did, then decide
            // again. (Nothing to learn: the seq went to the quarantine.)
            if self.catch_up_locked(id, sidecar, state).await? == 0 {
                let quarantined = self
                    .inner
                    .store
                    .quarantined_max_seq(id.number(), &[QuarantineKind::Event])?
                    .unwrap_or(0);
                if quarantined > state.last_seq.0 {
                    state.last_seq = EventSeq(quarantined);
                    *sidecar.latest.write() = Arc::new(state.clone());
                }
            }
            caught_up = true;
        }
        tracing::warn!(incident = %id, attempts = MAX_ATTEMPTS, "a command gave up: other servers kept appending first");
        Err(SidecarError::Contended(id.clone()))
    }

    /// Makes `events` durable, then moves the state, tells live subscribers
    /// (here, and on the other nodes through the bus) and reschedules
    /// deadlines. `None` when their first seq was taken by another node
    /// (nothing was written). Called with the incident's lock held.
    async fn commit(
        &self,
        id: &IncidentId,
        sidecar: &Sidecar,
        state: &mut IncidentState,
        events: Vec<Event>,
    ) -> Result<Option<Vec<Event>>, SidecarError> {
        if events.is_empty() {
            return Ok(Some(events));
        }
        let encoded = events.iter().map(encode_event).collect();
        let first = events[0].seq.0;
        let appended = self
            .inner
            .store
            .append_events(id, first, encoded)?
            .await
            .map_err(|_| StoreError::WriterGone)??;
        if appended == EventsAppend::SeqTaken {
            return Ok(None);
        }
        // Durable: now the state moves and everyone hears of it.
        for event in &events {
            crate::metrics::METRICS.event(event.kind.name());
        }
        self.publish(id, &events);
        self.apply(id, sidecar, state, &events);
        // Listeners only hand work off, so running them under the
        // incident's lock costs nothing. Only the node that committed
        // runs them (once cluster-wide).
        let listeners = self.inner.listeners.read().clone();
        for listener in listeners {
            listener(id, &events);
        }
        Ok(Some(events))
    }

    /// Moves the state over durable `events` (the next ones, in order),
    /// tells live subscribers and reschedules deadlines. Called with the
    /// incident's lock held.
    fn apply(
        &self,
        id: &IncidentId,
        sidecar: &Sidecar,
        state: &mut IncidentState,
        events: &[Event],
    ) {
        let mut next = state.clone();
        for event in events {
            next = machine::evolve(Some(next), event);
        }
        *state = next.clone();
        let next = Arc::new(next);
        *sidecar.latest.write() = next.clone();
        for event in events {
            let _ = sidecar.live.send(Arc::new(event.clone()));
        }
        self.schedule(id, &next);
    }

    /// Sends committed events to the other nodes, if in a cluster: a JSON
    /// array, under the first one's seq. Never blocks.
    fn publish(&self, id: &IncidentId, events: &[Event]) {
        let (Some(bus), Some(first)) = (self.inner.bus.get(), events.first()) else {
            return;
        };
        let payload = serde_json::to_vec(events).expect("events serialise");
        bus.publish(Kind::Events, id, first.seq.0, &payload);
    }

    /// Applies the stored events after the state's last seq (other nodes'),
    /// in order. Returns how many seqs the state moved on (quarantined ones
    /// included). Called with the incident's lock held.
    async fn catch_up_locked(
        &self,
        id: &IncidentId,
        sidecar: &Sidecar,
        state: &mut IncidentState,
    ) -> Result<u64, SidecarError> {
        let last = state.last_seq.0;
        let (stored, highest) = self.read_events(id, last, usize::MAX).await?;
        let fresh: Vec<Event> = stored
            .into_iter()
            .map(|(event, _)| event)
            .filter(|event| event.seq.0 > last)
            .collect();
        if !fresh.is_empty() {
            tracing::debug!(incident = %id, after = last, events = fresh.len(), "sidecar caught up from storage");
            self.apply(id, sidecar, state, &fresh);
        }
        if highest > state.last_seq.0 {
            // Seqs that went to the quarantine are never used again.
            state.last_seq = EventSeq(highest);
            *sidecar.latest.write() = Arc::new(state.clone());
        }
        Ok(state.last_seq.0 - last)
    }

    /// Joins the cluster: committed events go out on `bus`, and loaded
    /// sidecars read storage for what the bus did not bring every
    /// [`CATCH_UP_EVERY`] ([`CATCH_UP_OFFLINE`] while the bus is down),
    /// until `shutdown`. Deliveries come in through [`Sidecars::deliver`].
    pub fn join_cluster(&self, bus: Bus, shutdown: tokio_util::sync::CancellationToken) {
        if self.inner.bus.set(bus.clone()).is_err() {
            return;
        }
        let sidecars = self.clone();
        tokio::spawn(async move {
            loop {
                let every = if bus.connected() {
                    CATCH_UP_EVERY
                } else {
                    CATCH_UP_OFFLINE
                };
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(every) => sidecars.catch_up_all().await,
                }
            }
        });
    }

    /// Hands a delivery of the bus to the sidecars: events of another node
    /// are applied when they are the next ones, ignored when already here,
    /// and otherwise read from storage; a (re)subscription makes every
    /// loaded sidecar catch up. An incident not loaded here is loaded (from
    /// storage), so its deadlines are armed on this node too. Never blocks.
    pub fn deliver(&self, delivery: &Delivery) {
        match delivery {
            Delivery::Message {
                kind: Kind::Events,
                incident,
                seq,
                payload,
                ..
            } => {
                let sidecars = self.clone();
                let (incident, seq, payload) = (incident.clone(), *seq, payload.clone());
                tokio::spawn(async move { sidecars.receive(&incident, seq, &payload).await });
            }
            Delivery::Resubscribed => {
                let sidecars = self.clone();
                tokio::spawn(async move { sidecars.catch_up_all().await });
            }
            Delivery::Message { .. } => {}
        }
    }

    /// Another node's events of `id`, the first with seq `first`.
    async fn receive(&self, id: &IncidentId, first: u64, payload: &[u8]) {
        let cell = self.inner.loaded.lock().get(id).cloned();
        let Some(sidecar) = cell.and_then(|cell| cell.get().cloned()) else {
            match self.state(id).await {
                Ok(state) => self.schedule(id, &state),
                Err(error) => {
                    tracing::warn!(incident = %id, %error, "cannot load an incident another server changed")
                }
            }
            return;
        };
        let mut state = sidecar.state.lock().await;
        let last = state.last_seq.0;
        let events: Option<Vec<Event>> = serde_json::from_slice(payload).ok();
        let in_order = events.as_ref().is_some_and(|events| {
            events
                .iter()
                .enumerate()
                .all(|(offset, event)| event.seq.0 == first + offset as u64)
        });
        match events {
            Some(events) if in_order && first <= last + 1 => {
                let fresh: Vec<Event> = events
                    .into_iter()
                    .filter(|event| event.seq.0 > last)
                    .collect();
                if !fresh.is_empty() {
                    self.apply(id, &sidecar, &mut state, &fresh);
                }
            }
            // A gap (a message lost), or a message that does not decode.
            _ => {
                if let Err(error) = self.catch_up_locked(id, &sidecar, &mut state).await {
                    tracing::warn!(incident = %id, %error, "cannot catch up from storage");
                }
            }
        }
    }

    /// Every loaded sidecar reads the events it lacks from storage.
    async fn catch_up_all(&self) {
        let loaded: Vec<(IncidentId, Arc<Sidecar>)> = self
            .inner
            .loaded
            .lock()
            .iter()
            .filter_map(|(id, cell)| Some((id.clone(), cell.get()?.clone())))
            .collect();
        for (id, sidecar) in loaded {
            let mut state = sidecar.state.lock().await;
            if let Err(error) = self.catch_up_locked(&id, &sidecar, &mut state).await {
                tracing::warn!(incident = %id, %error, "cannot catch up from storage");
            }
        }
    }

    /// Everyone the server knows, by id, for a caller whose token covers
    /// `scope` (`None`: every incident): the directory's people, and the
    /// declarer, role holders (past and present) and responders of every
    /// loaded incident in scope (every incident is loaded at start-up and
    /// when declared). The latest name wins.
    pub fn known_people(
        &self,
        directory: &dyn Directory,
        scope: Option<&IncidentId>,
    ) -> HashMap<UserId, KnownPerson> {
        let mut known: HashMap<UserId, KnownPerson> = HashMap::new();
        let mut add = |person: KnownPerson| match known.get(&person.actor.id) {
            Some(existing) if existing.seen_at > person.seen_at => {}
            _ => {
                known.insert(person.actor.id.clone(), person);
            }
        };
        for person in directory.people() {
            add(person);
        }
        let cells: Vec<_> = self
            .inner
            .loaded
            .lock()
            .iter()
            .filter(|(incident, _)| scope.is_none_or(|scope| scope == *incident))
            .map(|(_, cell)| cell.clone())
            .collect();
        for cell in cells {
            let Some(sidecar) = cell.get() else { continue };
            let state = sidecar.latest.read().clone();
            for (actor, seen_at) in machine::people(&state) {
                add(KnownPerson { actor, seen_at });
            }
        }
        known.retain(|id, _| !limits::is_reserved_user_id(&id.0));
        known
    }

    /// `GET /api/people`: the people [`Sidecars::known_people`] knows whose
    /// id or name contains `query` (case-insensitive), sorted by name then
    /// id, at most [`limits::PEOPLE_LISTED`]. Loads the incidents in scope
    /// first.
    pub async fn people(
        &self,
        directory: &dyn Directory,
        scope: Option<&IncidentId>,
        query: &str,
    ) -> Result<Vec<Actor>, SidecarError> {
        let incidents = match scope {
            Some(id) => vec![id.clone()],
            None => {
                let store = self.inner.store.clone();
                tokio::task::spawn_blocking(move || store.list_incidents())
                    .await
                    .map_err(|error| {
                        StoreError::io("listing incidents", std::io::Error::other(error))
                    })??
                    .into_iter()
                    .map(|record| record.id)
                    .collect()
            }
        };
        for id in &incidents {
            match self.load(id).await {
                Ok(_) | Err(SidecarError::NotFound(_) | SidecarError::Corrupt(..)) => {}
                Err(error) => return Err(error),
            }
        }
        let query = query.trim().to_lowercase();
        let mut people: Vec<Actor> = self
            .known_people(directory, scope)
            .into_values()
            .map(|person| person.actor)
            .filter(|actor| {
                query.is_empty()
                    || actor.id.0.to_lowercase().contains(&query)
                    || actor.name.to_lowercase().contains(&query)
            })
            .collect();
        people.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
        people.truncate(limits::PEOPLE_LISTED);
        Ok(people)
    }

    /// The latest durable state.
    pub async fn state(&self, id: &IncidentId) -> Result<Arc<IncidentState>, SidecarError> {
        Ok(self.load(id).await?.latest.read().clone())
    }

    /// Subscribes to live events. Subscribe first, then read the backlog with
    /// [`Sidecars::events_after`], and drop live events already seen.
    pub async fn subscribe(
        &self,
        id: &IncidentId,
    ) -> Result<broadcast::Receiver<Arc<Event>>, SidecarError> {
        Ok(self.load(id).await?.live.subscribe())
    }

    /// Durable events with `seq > after`, at most `limit`. A stored event
    /// that does not decode is left out and moved to the quarantine.
    pub async fn events_after(
        &self,
        id: &IncidentId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Event>, SidecarError> {
        let (events, _) = self.read_events(id, after, limit).await?;
        Ok(events.into_iter().map(|(event, _)| event).collect())
    }

    /// Stored events with `seq > after` that decode, at most `limit`, each
    /// with its stored bytes; and the highest seq read, decoded or not.
    async fn read_events(
        &self,
        id: &IncidentId,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<(Event, Vec<u8>)>, u64), SidecarError> {
        let store = self.inner.store.clone();
        let read_id = id.clone();
        let stored =
            tokio::task::spawn_blocking(move || store.events_after(&read_id, after, limit))
                .await
                .map_err(|error| SidecarError::Corrupt(id.clone(), error.to_string()))??;
        let mut events = Vec::new();
        let mut highest = 0;
        for (seq, bytes) in stored {
            if events.len() >= limit {
                break;
            }
            highest = highest.max(seq);
            match decode_event(seq, &bytes) {
                Ok(event) => events.push((event, bytes)),
                Err(reason) => self.quarantine(id, seq, &bytes, reason),
            }
        }
        Ok((events, highest))
    }

    /// Moves a stored event that does not load to the quarantine (the store
    /// logs the move).
    fn quarantine(&self, id: &IncidentId, seq: u64, bytes: &[u8], reason: String) {
        if let Err(error) = self
            .inner
            .store
            .quarantine_event(id, seq, bytes, reason.clone())
        {
            tracing::error!(incident = %id, seq, %reason, %error, "skipped a stored event that does not load, but cannot move it to the quarantine");
        }
    }

    /// Folds the incident's stored events into its state. Events that do not
    /// load are skipped and quarantined; if the declaration is among them,
    /// the state starts from the incident record instead. The next event's
    /// seq follows every seq ever stored, quarantined ones included.
    async fn rebuild_state(&self, id: &IncidentId) -> Result<IncidentState, SidecarError> {
        let (stored, highest) = self.read_events(id, 0, usize::MAX).await?;
        let mut events = Vec::with_capacity(stored.len() + 1);
        for (event, bytes) in stored {
            let declaration = matches!(event.kind, EventKind::Declared { .. });
            if declaration && !events.is_empty() {
                let reason = format!("event {} declares the incident a second time", event.seq);
                self.quarantine(id, event.seq.0, &bytes, reason);
                continue;
            }
            if !declaration && events.is_empty() {
                events.push(self.declaration_from_record(id, Some(&event))?);
            }
            events.push(event);
        }
        if events.is_empty() {
            events.push(self.declaration_from_record(id, None)?);
        }
        let folded =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| machine::fold(&events)));
        let mut state = match folded {
            Ok(Some(state)) => state,
            Ok(None) => return Err(SidecarError::NotFound(id.clone())),
            Err(_) => {
                return Err(SidecarError::Corrupt(
                    id.clone(),
                    "folding its events panicked".into(),
                ));
            }
        };
        let quarantined = self
            .inner
            .store
            .quarantined_max_seq(id.number(), &[QuarantineKind::Event])?
            .unwrap_or(0);
        let floor = highest.max(quarantined);
        if floor > state.last_seq.0 {
            state.last_seq = EventSeq(floor);
        }
        Ok(state)
    }

    /// A stand-in for an incident's declaration that does not load, from
    /// its record (title, declarer, time; not the declared severity,
    /// criteria or summary). `NotFound` when there is no record either.
    fn declaration_from_record(
        &self,
        id: &IncidentId,
        first: Option<&Event>,
    ) -> Result<Event, SidecarError> {
        let Some(IncidentRecord {
            title,
            created_at,
            created_by,
            ..
        }) = self.inner.store.get_incident(id)?
        else {
            return Err(SidecarError::NotFound(id.clone()));
        };
        tracing::error!(incident = %id, first_loaded = first.map(|event| event.seq.0), "the incident's declaration does not load; its state starts from the incident record, without the declared severity, criteria and summary");
        Ok(Event {
            seq: EventSeq(1),
            at: created_at,
            actor: created_by.clone(),
            kind: EventKind::Declared {
                title,
                severity: None,
                criteria: None,
                summary: None,
                commander: created_by,
            },
        })
    }

    async fn load(&self, id: &IncidentId) -> Result<Arc<Sidecar>, SidecarError> {
        let cell = self
            .inner
            .loaded
            .lock()
            .entry(id.clone())
            .or_default()
            .clone();
        let sidecar = cell
            .get_or_try_init(|| async {
                let state = self.rebuild_state(id).await?;
                let (live, _) = broadcast::channel(256);
                Ok::<_, SidecarError>(Arc::new(Sidecar {
                    latest: parking_lot::RwLock::new(Arc::new(state.clone())),
                    state: tokio::sync::Mutex::new(state),
                    live,
                    refusals_recorded: parking_lot::Mutex::new(HashMap::new()),
                }))
            })
            .await?;
        Ok(sidecar.clone())
    }

    fn schedule(&self, id: &IncidentId, state: &IncidentState) {
        let mut deadlines = self.inner.deadlines.lock();
        deadlines.retain(|(_, incident)| incident != id);
        if let Some(deadline) = machine::next_deadline(state) {
            deadlines.insert((deadline, id.clone()));
        }
        drop(deadlines);
        self.inner.deadlines_changed.notify_one();
    }

    /// Loads every incident so their deadlines are armed (at start-up).
    pub async fn arm_all(&self, incidents: &[IncidentId]) -> Result<(), SidecarError> {
        for id in incidents {
            match self.state(id).await {
                Ok(state) => self.schedule(id, &state),
                Err(SidecarError::Store(error)) => return Err(SidecarError::Store(error)),
                // One incident that does not load must not keep the server
                // from starting.
                Err(error) => {
                    tracing::error!(incident = %id, %error, "cannot load the incident's sidecar; its deadlines are not armed");
                }
            }
        }
        Ok(())
    }

    /// Runs a Tick for every incident whose deadline has passed. Returns the
    /// events produced. The timer task calls this; tests call it directly
    /// with a manual clock.
    pub async fn tick_due(&self) -> Vec<(IncidentId, Event)> {
        let now = self.now();
        let due: Vec<IncidentId> = {
            let deadlines = self.inner.deadlines.lock();
            deadlines
                .iter()
                .take_while(|(deadline, _)| *deadline <= now)
                .map(|(_, id)| id.clone())
                .collect()
        };
        let mut produced = Vec::new();
        for id in due {
            match self.execute(&id, &Command::Tick, &Caller::system()).await {
                Ok(events) => produced.extend(events.into_iter().map(|event| (id.clone(), event))),
                Err(error) => tracing::error!(incident = %id, %error, "timer command failed"),
            }
            // A deadline that a Tick did not move would make the timer spin:
            // drop it (and say so) rather than busy-loop.
            let mut deadlines = self.inner.deadlines.lock();
            let stuck: Vec<_> = deadlines
                .iter()
                .filter(|(deadline, incident)| *incident == id && *deadline <= now)
                .cloned()
                .collect();
            for entry in stuck {
                tracing::error!(incident = %id, deadline = %entry.0, "a due deadline did not clear; dropping it");
                deadlines.remove(&entry);
            }
        }
        produced
    }

    /// The timer: sleeps until the earliest deadline (or until deadlines
    /// change), then ticks what is due. Runs until `shutdown`.
    pub async fn run_timer(self, shutdown: tokio_util::sync::CancellationToken) {
        loop {
            let next = self
                .inner
                .deadlines
                .lock()
                .iter()
                .next()
                .map(|(deadline, _)| *deadline);
            let wait = match next {
                Some(deadline) => (deadline - self.now()).to_std().unwrap_or_default(),
                None => std::time::Duration::from_secs(3600),
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.inner.deadlines_changed.notified() => continue,
                _ = tokio::time::sleep(wait) => {
                    for (id, event) in self.tick_due().await {
                        tracing::info!(incident = %id, seq = %event.seq, "timer event");
                    }
                }
            }
        }
    }
}

/// Decodes a stored event stored under `seq`.
/// An event as stored: JSON.
fn encode_event(event: &Event) -> Vec<u8> {
    serde_json::to_vec(event).expect("events serialise")
}

fn decode_event(seq: u64, bytes: &[u8]) -> Result<Event, String> {
    let event: Event =
        serde_json::from_slice(bytes).map_err(|error| format!("not a valid event: {error}"))?;
    if event.seq.0 != seq {
        return Err(format!(
            "the event says it is seq {} but is stored as seq {seq}",
            event.seq
        ));
    }
    Ok(event)
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};
    use commandpost_shared::incident::EventKind;
    use commandpost_shared::{AccessRole, Actor, UserId};

    use super::*;
    use crate::store::InitialContent;

    fn ada() -> Caller {
        Caller::new(
            Actor {
                id: UserId("ada".into()),
                name: "Ada".into(),
            },
            AccessRole::Responder,
        )
    }

    fn reopen(dir: &std::path::Path) -> Store {
        Store::open_when_unlocked(dir, std::time::Duration::from_secs(60)).unwrap()
    }

    fn overdue(events: &[(IncidentId, Event)]) -> usize {
        events
            .iter()
            .filter(|(_, event)| matches!(event.kind, EventKind::UpdateOverdue { .. }))
            .count()
    }

    #[tokio::test]
    async fn overdue_updates_fire_once_per_deadline_on_an_injected_clock_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let start = Utc.with_ymd_and_hms(2026, 11, 25, 9, 0, 0).unwrap();
        let clock = Arc::new(ManualClock::at(start));
        let id;
        {
            let store = Store::open(dir.path()).unwrap();
            let sidecars = Sidecars::new(store.clone(), clock.clone(), Rules::default());
            id = declared(&sidecars, "Overdue").await;
            let pin = Command::PinStatus {
                summary: "investigating".into(),
                next_update_by: Some(start + Duration::minutes(30)),
                is_final: false,
            };
            sidecars.execute(&id, &pin, &ada()).await.unwrap();

            clock.set(start + Duration::minutes(29));
            assert_eq!(overdue(&sidecars.tick_due().await), 0, "not due yet");
            clock.set(start + Duration::minutes(31));
            assert_eq!(overdue(&sidecars.tick_due().await), 1, "due: announced");
            clock.set(start + Duration::minutes(32));
            assert_eq!(
                overdue(&sidecars.tick_due().await),
                0,
                "announced once per deadline"
            );
            assert!(
                sidecars
                    .state(&id)
                    .await
                    .unwrap()
                    .pin
                    .as_ref()
                    .unwrap()
                    .overdue
            );

            // A new pin arms a new deadline, which passes while the server is down.
            let pin = Command::PinStatus {
                summary: "mitigating".into(),
                next_update_by: Some(start + Duration::minutes(45)),
                is_final: false,
            };
            sidecars.execute(&id, &pin, &ada()).await.unwrap();
        }
        // "Restart": a new service on the reopened store, deadlines re-armed
        // from durable state only.
        let store = reopen(dir.path());
        let sidecars = Sidecars::new(store, clock.clone(), Rules::default());
        clock.set(start + Duration::minutes(50));
        assert_eq!(
            overdue(&sidecars.tick_due().await),
            0,
            "nothing is armed before arm_all"
        );
        sidecars.arm_all(std::slice::from_ref(&id)).await.unwrap();
        let fired = sidecars.tick_due().await;
        assert_eq!(
            overdue(&fired),
            1,
            "the deadline missed while down is announced after restart"
        );
        assert_eq!(overdue(&sidecars.tick_due().await), 0);
        let stored = sidecars.events_after(&id, 0, usize::MAX).await.unwrap();
        assert_eq!(
            stored
                .iter()
                .filter(|e| matches!(e.kind, EventKind::UpdateOverdue { .. }))
                .count(),
            2,
            "both announcements are durable"
        );
    }

    /// Declares an incident titled `title` as Ada, the way the API does.
    async fn declared(sidecars: &Sidecars, title: &str) -> IncidentId {
        let declaration = CreateIncident {
            title: title.into(),
            severity: None,
            criteria: None,
            summary: None,
        };
        let (record, events) = sidecars
            .declare_incident(declaration, &ada())
            .await
            .unwrap();
        assert_eq!(seqs(&events), [1]);
        record.id
    }

    fn note(text: &str) -> Command {
        Command::PostNote { text: text.into() }
    }

    fn seqs(events: &[Event]) -> Vec<u64> {
        events.iter().map(|event| event.seq.0).collect()
    }

    #[tokio::test]
    async fn events_that_do_not_decode_are_quarantined_and_their_seqs_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let start = Utc.with_ymd_and_hms(2026, 11, 25, 9, 0, 0).unwrap();
        let clock = Arc::new(ManualClock::at(start));
        let store = Store::open(dir.path()).unwrap();
        let sidecars = Sidecars::new(store.clone(), clock.clone(), Rules::default());
        let id = declared(&sidecars, "Damaged").await;
        sidecars.execute(&id, &note("first"), &ada()).await.unwrap();
        // Two damaged events at the end of the log: invalid JSON, and an
        // event stored under the wrong seq.
        let mut misplaced = sidecars.events_after(&id, 1, 1).await.unwrap()[0].clone();
        misplaced.seq = EventSeq(9);
        store
            .append_events(
                &id,
                3,
                vec![
                    b"{not json".to_vec(),
                    serde_json::to_vec(&misplaced).unwrap(),
                ],
            )
            .unwrap()
            .await
            .unwrap()
            .unwrap();

        // A fresh service (as after a restart) loads the rest.
        let sidecars = Sidecars::new(store.clone(), clock.clone(), Rules::default());
        let state = sidecars.state(&id).await.unwrap();
        assert_eq!(state.title, "Damaged");
        assert_eq!(state.recent_notes.len(), 1);
        assert_eq!(
            state.last_seq,
            EventSeq(4),
            "numbering continues after them"
        );
        let posted = sidecars
            .execute(&id, &note("second"), &ada())
            .await
            .unwrap();
        assert_eq!(seqs(&posted), [5]);
        assert_eq!(
            seqs(&sidecars.events_after(&id, 0, usize::MAX).await.unwrap()),
            [1, 2, 5]
        );
        let quarantined = store.quarantined().unwrap();
        let reasons: Vec<(Option<u64>, &str)> = quarantined
            .iter()
            .map(|(_, record)| (record.seq, record.reason.as_str()))
            .collect();
        assert_eq!(reasons.len(), 2, "{reasons:?}");
        assert_eq!(reasons[0].0, Some(3));
        assert!(reasons[0].1.contains("not a valid event"), "{reasons:?}");
        assert_eq!(reasons[1].0, Some(4));
        assert!(reasons[1].1.contains("stored as seq 4"), "{reasons:?}");

        // Quarantining the last event must not free its seq either.
        let last = sidecars.events_after(&id, 4, 1).await.unwrap();
        assert_eq!(seqs(&last), [5]);
        store
            .append_events(&id, 6, vec![b"garbage".to_vec()])
            .unwrap()
            .await
            .unwrap()
            .unwrap();
        let sidecars = Sidecars::new(store.clone(), clock.clone(), Rules::default());
        sidecars.state(&id).await.unwrap();
        store.barrier().unwrap().await.unwrap().unwrap();
        assert_eq!(store.quarantined().unwrap().len(), 3);
        let sidecars = Sidecars::new(store.clone(), clock.clone(), Rules::default());
        assert_eq!(sidecars.state(&id).await.unwrap().last_seq, EventSeq(6));
        let posted = sidecars.execute(&id, &note("third"), &ada()).await.unwrap();
        assert_eq!(seqs(&posted), [7]);
    }

    #[tokio::test]
    async fn two_services_on_one_store_take_turns_on_the_next_seq_and_tick_once() {
        // Two "nodes" without a bus: each learns of the other's events only
        // when its append conflicts.
        let dir = tempfile::tempdir().unwrap();
        let start = Utc.with_ymd_and_hms(2026, 11, 25, 9, 0, 0).unwrap();
        let clock = Arc::new(ManualClock::at(start));
        let store = Store::open(dir.path()).unwrap();
        let one = Sidecars::new(store.clone(), clock.clone(), Rules::default());
        let two = Sidecars::new(store.clone(), clock.clone(), Rules::default());
        let id = declared(&one, "Shared").await;
        let mut heard = two.subscribe(&id).await.unwrap();
        assert_eq!(
            seqs(&one.execute(&id, &note("one"), &ada()).await.unwrap()),
            [2]
        );
        assert_eq!(
            seqs(&two.execute(&id, &note("two"), &ada()).await.unwrap()),
            [3]
        );
        assert_eq!(
            seqs(&one.execute(&id, &note("three"), &ada()).await.unwrap()),
            [4]
        );
        let mut got = Vec::new();
        while let Ok(event) = heard.try_recv() {
            got.push(event.seq.0);
        }
        assert_eq!(got, [2, 3], "the other's event first, in order, once");
        let texts = |state: &IncidentState| state.recent_notes.len();
        assert_eq!(texts(&two.state(&id).await.unwrap()), 2);

        let pin = Command::PinStatus {
            summary: "investigating".into(),
            next_update_by: Some(start + Duration::minutes(30)),
            is_final: false,
        };
        two.execute(&id, &pin, &ada()).await.unwrap();
        // `one` learns of the pin when its note conflicts; `two` then lacks
        // the note. Both have the deadline armed: the second Tick conflicts,
        // catches up, and finds the reminder already recorded.
        one.execute(&id, &note("four"), &ada()).await.unwrap();
        clock.set(start + Duration::minutes(31));
        let fired = overdue(&one.tick_due().await) + overdue(&two.tick_due().await);
        assert_eq!(fired, 1, "announced once across both");
        let fired = overdue(&two.tick_due().await) + overdue(&one.tick_due().await);
        assert_eq!(fired, 0);
        let stored = one.events_after(&id, 0, usize::MAX).await.unwrap();
        assert_eq!(seqs(&stored), (1..=stored.len() as u64).collect::<Vec<_>>());
        assert_eq!(
            stored
                .iter()
                .filter(|e| matches!(e.kind, EventKind::UpdateOverdue { .. }))
                .count(),
            1
        );
    }

    #[tokio::test]
    async fn in_a_cluster_a_refusal_is_only_final_after_catching_up_from_storage() {
        let dir = tempfile::tempdir().unwrap();
        let start = Utc.with_ymd_and_hms(2026, 11, 25, 9, 0, 0).unwrap();
        let clock = Arc::new(ManualClock::at(start));
        let store = Store::open(dir.path()).unwrap();
        let one = Sidecars::new(store.clone(), clock.clone(), Rules::default());
        let two = Sidecars::new(store.clone(), clock.clone(), Rules::default());
        // A bus whose Redis never answers, and no periodic catch-up (shut
        // down at once): `two` hears nothing from `one` by itself.
        let (bus, _deliveries) = Bus::start("redis://127.0.0.1:1", None).unwrap();
        let shutdown = tokio_util::sync::CancellationToken::new();
        shutdown.cancel();
        two.join_cluster(bus, shutdown);
        let id = declared(&one, "Handoff").await;
        two.state(&id).await.unwrap();
        let bob = Caller::new(
            Actor {
                id: UserId("bob".into()),
                name: "Bob".into(),
            },
            AccessRole::Responder,
        );
        let offer = Command::OfferHandoff {
            role: commandpost_shared::incident::Role::IncidentCommander,
            to: bob.actor.clone(),
            notes: "yours".into(),
        };
        let offered = one.execute(&id, &offer, &ada()).await.unwrap();
        let EventKind::HandoffOffered { handoff, .. } = offered[0].kind else {
            panic!("{offered:?}");
        };
        // `two` has not heard of the offer: it looks in storage before
        // refusing, and accepts.
        assert!(two.state(&id).await.unwrap().pending_handoffs.is_empty());
        let accepted = two
            .execute(&id, &Command::AcceptHandoff { handoff }, &bob)
            .await
            .unwrap();
        assert_eq!(seqs(&accepted), [3]);
        assert!(matches!(
            accepted[0].kind,
            EventKind::HandoffAccepted { .. }
        ));
        // `one` still sees the offer pending: its acceptance conflicts,
        // catches up, and is refused against the new state.
        let again = one
            .execute(&id, &Command::AcceptHandoff { handoff }, &bob)
            .await;
        assert!(matches!(again, Err(SidecarError::Refused(_))), "{again:?}");
        assert_eq!(
            seqs(&one.events_after(&id, 0, usize::MAX).await.unwrap()),
            [1, 2, 3]
        );
    }

    #[tokio::test]
    async fn an_incident_whose_declaration_does_not_load_starts_from_its_record() {
        let dir = tempfile::tempdir().unwrap();
        let start = Utc.with_ymd_and_hms(2026, 11, 25, 9, 0, 0).unwrap();
        let clock = Arc::new(ManualClock::at(start));
        let store = Store::open(dir.path()).unwrap();
        let id = store
            .create_incident("Headless".into(), ada().actor, start, |_| InitialContent {
                doc: crate::template::initial_update(""),
                events: vec![b"{\"declared\": broken".to_vec()],
            })
            .await
            .unwrap()
            .id;
        let sidecars = Sidecars::new(store.clone(), clock, Rules::default());
        sidecars.arm_all(std::slice::from_ref(&id)).await.unwrap();
        let state = sidecars.state(&id).await.unwrap();
        assert_eq!(state.title, "Headless");
        assert_eq!(state.commander().id, ada().actor.id);
        assert_eq!(state.last_seq, EventSeq(1));
        let posted = sidecars
            .execute(&id, &note("still works"), &ada())
            .await
            .unwrap();
        assert_eq!(seqs(&posted), [2]);
    }
}
