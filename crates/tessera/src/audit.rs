//! The audit trail in PostgreSQL: a tracing layer picks up every event logged under the
//! `audit` target and a task appends them, in batches, to the shared database's
//! `audit_events` table. Logging never waits for the database: events are queued (bounded) and
//! dropped, counted in a warning, when the queue is full or no database is attached.

// Built without PostgreSQL there is nowhere to write: the layer stays and finds no sink.
#![cfg_attr(not(feature = "postgres"), allow(dead_code))]

use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;

/// Events waiting for the database, at most.
const QUEUE: usize = 10_000;
/// Events written per statement, at most.
const BATCH: usize = 500;

enum Event {
    Record(i64, String, String),
    /// Answered once everything queued before it is written.
    Flush(tokio::sync::oneshot::Sender<()>),
}

static SINK: OnceLock<mpsc::Sender<Event>> = OnceLock::new();

/// The layer to add to the subscriber.
pub(crate) struct AuditLayer;

struct Fields(Map<String, Value>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for AuditLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() != "audit" {
            return;
        }
        let Some(sink) = SINK.get() else { return };
        let mut fields = Fields(Map::new());
        event.record(&mut fields);
        let name = match fields.0.remove("event") {
            Some(Value::String(s)) => s,
            _ => return,
        };
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        // Full: dropped rather than slowing the request that logged it.
        let _ = sink.try_send(Event::Record(at, name, Value::Object(fields.0).to_string()));
    }
}

/// Starts writing audit events to `store`; until the process ends.
#[cfg(feature = "postgres")]
pub(crate) fn attach(store: tessera_store::PostgresStore) {
    let (tx, mut rx) = mpsc::channel::<Event>(QUEUE);
    if SINK.set(tx).is_err() {
        return;
    }
    tokio::spawn(async move {
        let mut queued = Vec::with_capacity(BATCH);
        let mut batch = Vec::with_capacity(BATCH);
        while rx.recv_many(&mut queued, BATCH).await > 0 {
            let mut flushed = Vec::new();
            for e in queued.drain(..) {
                match e {
                    Event::Record(at, event, fields) => batch.push((at, event, fields)),
                    Event::Flush(done) => flushed.push(done),
                }
            }
            // A database that is down keeps the batch for a few tries, then lets it go (the
            // events are in the log lines too).
            for attempt in 0..3 {
                match store.record_audit(&batch).await {
                    Ok(()) => break,
                    Err(e) if attempt == 2 => {
                        tracing::warn!(error = %e, dropped = batch.len(), "audit events not stored");
                    }
                    Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
                }
            }
            batch.clear();
            for done in flushed {
                let _ = done.send(());
            }
        }
    });
}

/// Waits until the events logged so far are written (a command about to exit).
pub(crate) async fn flush() {
    let Some(sink) = SINK.get() else { return };
    let (done, wait) = tokio::sync::oneshot::channel();
    if sink.send(Event::Flush(done)).await.is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(5), wait).await;
    }
}
