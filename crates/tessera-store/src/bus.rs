//! The change bus: the one place where the changes a process must learn of arrive (from Redis
//! pub/sub, or from polling a database's revocation generation) and from where every holder of
//! a copy takes them: the store's caches ([`CachedStore::follow`](crate::CachedStore::follow)),
//! and the server's denylist and signing keys. Each subscriber reads at its own pace; one that
//! falls so far behind that changes were dropped for it reads [`Change::Everything`] in their
//! place, the safe reading (drop every cache, reload what is held).

use tessera_core::Change;
use tokio::sync::broadcast;

/// How many changes a subscriber may fall behind before it gets [`Change::Everything`] instead.
const CAPACITY: usize = 4096;

/// A bus of [`Change`]s. Clones publish to and subscribe on the same bus.
#[derive(Debug, Clone)]
pub struct ChangeBus {
    tx: broadcast::Sender<Change>,
}

impl Default for ChangeBus {
    fn default() -> Self {
        ChangeBus::new()
    }
}

impl ChangeBus {
    /// A bus with no subscriber yet.
    pub fn new() -> ChangeBus {
        ChangeBus {
            tx: broadcast::channel(CAPACITY).0,
        }
    }

    /// Hands `change` to every subscriber (none: it is dropped, as nobody holds a copy).
    pub fn publish(&self, change: Change) {
        let _ = self.tx.send(change);
    }

    /// A subscription: every change published from now on.
    pub fn subscribe(&self) -> Changes {
        Changes {
            rx: self.tx.subscribe(),
        }
    }
}

/// One subscriber's changes, in the order they were published.
#[derive(Debug)]
pub struct Changes {
    rx: broadcast::Receiver<Change>,
}

impl Changes {
    /// The next change; [`Change::Everything`] for changes this subscriber fell too far behind
    /// to receive; `None` once every publisher is gone.
    pub async fn next(&mut self) -> Option<Change> {
        match self.rx.recv().await {
            Ok(change) => Some(change),
            Err(broadcast::error::RecvError::Lagged(_)) => Some(Change::Everything),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_subscriber_gets_every_change_and_a_laggard_everything() {
        let bus = ChangeBus::new();
        let mut a = bus.subscribe();
        let mut b = bus.subscribe();
        bus.publish(Change::Keys);
        bus.publish(Change::User("usr_1".into()));
        assert_eq!(a.next().await, Some(Change::Keys));
        assert_eq!(b.next().await, Some(Change::Keys));
        assert_eq!(a.next().await, Some(Change::User("usr_1".into())));
        // `b` falls behind by more than the bus holds: what it missed reads as Everything.
        for i in 0..CAPACITY + 10 {
            bus.publish(Change::User(format!("usr_{i}")));
        }
        assert_eq!(b.next().await, Some(Change::Everything));
        drop(bus);
        let mut left = 0;
        while a.next().await.is_some() {
            left += 1;
        }
        assert!(left > 0, "a subscriber keeps what it has not read yet");
    }
}
