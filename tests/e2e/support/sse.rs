//! A Server-Sent Events reader for the live event stream, collecting events
//! as JSON in the background.

use std::sync::Arc;

use futures::StreamExt;
use parking_lot::Mutex;
use serde_json::Value;

use super::wait_until;

pub struct EventStream {
    pub events: Arc<Mutex<Vec<Value>>>,
    /// `event: presence` messages (counts, no `seq`), kept apart.
    pub presence: Arc<Mutex<Vec<Value>>>,
    task: tokio::task::JoinHandle<()>,
}

impl EventStream {
    /// Opens `url` (with its token in the query) and waits for the response
    /// headers, so events from then on are not missed.
    pub async fn open(url: &str) -> Self {
        Self::open_with(url, None).await
    }

    /// Like [`EventStream::open`], resuming after `last_event_id`.
    pub async fn open_with(url: &str, last_event_id: Option<u64>) -> Self {
        let mut request = reqwest::Client::new().get(url);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = request.send().await.unwrap();
        assert_eq!(
            response.status(),
            200,
            "event stream refused: {}",
            response.text().await.unwrap()
        );
        let events = Arc::new(Mutex::new(Vec::new()));
        let presence = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let events = events.clone();
            let presence = presence.clone();
            async move {
                let mut body = response.bytes_stream();
                let mut buffer = String::new();
                while let Some(Ok(chunk)) = body.next().await {
                    buffer.push_str(&String::from_utf8_lossy(&chunk));
                    for data in commandpost::client::take_sse_data(&mut buffer) {
                        let value: Value = serde_json::from_str(&data).unwrap();
                        if value.get("seq").is_some() {
                            events.lock().push(value);
                        } else {
                            presence.lock().push(value);
                        }
                    }
                }
            }
        });
        Self {
            events,
            presence,
            task,
        }
    }

    /// Waits until an event of `kind` has arrived; returns it.
    pub async fn wait_for(&self, kind: &str) -> Value {
        let events = self.events.clone();
        let kind_owned = kind.to_owned();
        wait_until(&format!("a `{kind}` event"), || {
            events
                .lock()
                .iter()
                .any(|e| e["type"] == kind_owned.as_str())
        })
        .await;
        self.events
            .lock()
            .iter()
            .find(|e| e["type"] == kind)
            .unwrap()
            .clone()
    }

    pub fn of_kind(&self, kind: &str) -> Vec<Value> {
        self.events
            .lock()
            .iter()
            .filter(|e| e["type"] == kind)
            .cloned()
            .collect()
    }

    pub fn seqs(&self) -> Vec<u64> {
        self.events
            .lock()
            .iter()
            .map(|e| e["seq"].as_u64().unwrap())
            .collect()
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}
