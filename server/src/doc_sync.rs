//! Keeps the incident document's exit-criteria block in step with the
//! sidecar, which is the authority on exit criteria.
//!
//! The block is server-written text between two HTML-comment markers under
//! `## Exit criteria` ([`crate::template::exit_criteria_block`]). Whenever a
//! command adds a criterion or marks one met or unmet, the server rewrites
//! the block from the sidecar's current state as one edit of its own, which
//! every connected client receives like anyone's edit. Everything outside
//! the markers is left alone; an edit inside them is replaced at the next
//! rewrite; a deleted block is written again under the heading at the next change. A
//! room that loads is checked once as well, so a rewrite lost to a crash (the
//! event was durable, the edit not yet) is made when the document is next
//! opened; that check only updates a block that is there.

use std::sync::Arc;

use commandpost_shared::IncidentId;
use commandpost_shared::incident::{Event, EventKind};

use crate::rooms::Rooms;
use crate::sidecar::Sidecars;
use crate::template;

/// Rewrites the document's block whenever a command changes the exit
/// criteria. Rewrites are serialised, and each reads the sidecar's state
/// when it runs, so the last one written shows the latest criteria.
pub fn keep_exit_criteria_in_step(sidecars: &Sidecars, rooms: &Rooms) {
    let sync = ExitCriteriaSync {
        sidecars: sidecars.clone(),
        rooms: rooms.clone(),
        one_at_a_time: Arc::new(tokio::sync::Mutex::new(())),
    };
    let listener = sync.clone();
    sidecars.on_events(Arc::new(move |id: &IncidentId, events: &[Event]| {
        if events.iter().any(changes_criteria) {
            let sync = listener.clone();
            let id = id.clone();
            tokio::spawn(async move { sync.run(&id, Missing::WriteAgain).await });
        }
    }));
    rooms.on_load(Arc::new(move |id: &IncidentId| {
        let sync = sync.clone();
        let id = id.clone();
        tokio::spawn(async move { sync.run(&id, Missing::LeaveOut).await });
    }));
}

fn changes_criteria(event: &Event) -> bool {
    matches!(
        event.kind,
        EventKind::ExitCriterionAdded { .. } | EventKind::ExitCriterionSet { .. }
    )
}

/// What a rewrite does when the document has no block.
#[derive(Clone, Copy)]
enum Missing {
    /// Writes it under the heading (the criteria changed).
    WriteAgain,
    /// Leaves the document alone (a room loaded: only a stale block is
    /// brought up to date; documents without one stay as people left them).
    LeaveOut,
}

#[derive(Clone)]
struct ExitCriteriaSync {
    sidecars: Sidecars,
    rooms: Rooms,
    one_at_a_time: Arc<tokio::sync::Mutex<()>>,
}

impl ExitCriteriaSync {
    async fn run(&self, id: &IncidentId, missing: Missing) {
        let _turn = self.one_at_a_time.lock().await;
        let state = match self.sidecars.state(id).await {
            Ok(state) => state,
            Err(error) => {
                tracing::warn!(incident = %id, %error, "cannot read the exit criteria to write them into the document");
                return;
            }
        };
        let edit = |body: &str| match missing {
            Missing::LeaveOut if !template::has_exit_criteria_block(body) => None,
            _ => template::exit_criteria_splice(body, &state.exit_criteria),
        };
        match self.rooms.edit_body(id, edit).await {
            Ok(true) => {
                tracing::info!(incident = %id, criteria = state.exit_criteria.len(), "wrote the exit criteria into the document");
            }
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(incident = %id, %error, "could not write the exit criteria into the document; the next change to them tries again");
            }
        }
    }
}
