//! The ingest thread -> span pipeline queue. Exchanges cross in batches (one wakeup of the
//! pipeline per batch, not per exchange), but the bound is in exchanges: a batch is refused
//! (and the caller counts its exchanges as dropped) when the exchanges queued would exceed the
//! capacity, so memory stays bounded however small the batches are.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::mpsc;

use crate::model::Exchange;

pub type Batch = Vec<Exchange>;

/// A bounded queue of exchange batches: the sending half.
#[derive(Clone)]
pub struct HandoffTx {
    tx: mpsc::UnboundedSender<Batch>,
    queued: Arc<AtomicUsize>,
    capacity: usize,
}

/// The receiving half.
pub struct HandoffRx {
    rx: mpsc::UnboundedReceiver<Batch>,
    queued: Arc<AtomicUsize>,
    capacity: usize,
}

/// A queue holding at most `capacity` exchanges.
pub fn handoff(capacity: usize) -> (HandoffTx, HandoffRx) {
    let (tx, rx) = mpsc::unbounded_channel();
    let queued = Arc::new(AtomicUsize::new(0));
    let capacity = capacity.max(1);
    (
        HandoffTx {
            tx,
            queued: Arc::clone(&queued),
            capacity,
        },
        HandoffRx {
            rx,
            queued,
            capacity,
        },
    )
}

/// Whether a queue holding `queued` of `capacity` exchanges is falling behind
/// ([`crate::yielding::backlogged`]).
fn behind(queued: &AtomicUsize, capacity: usize) -> bool {
    crate::yielding::backlogged(queued.load(Ordering::Relaxed) as u64, capacity as u64)
}

impl HandoffTx {
    /// Whether the consumer is falling behind.
    pub fn behind(&self) -> bool {
        behind(&self.queued, self.capacity)
    }

    /// Queue `batch` whole if it fits; never blocks. Gives it back when full or closed.
    pub fn try_send(&self, batch: Batch) -> Result<(), Batch> {
        let n = batch.len();
        let fits = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                (q + n <= self.capacity).then_some(q + n)
            })
            .is_ok();
        if !fits {
            return Err(batch);
        }
        self.tx.send(batch).map_err(|e| {
            self.queued.fetch_sub(n, Ordering::AcqRel);
            e.0
        })
    }
}

impl HandoffRx {
    /// Whether the consumer is falling behind.
    pub fn behind(&self) -> bool {
        behind(&self.queued, self.capacity)
    }

    /// The next batch; None once every sender is gone and the queue is empty.
    pub async fn recv(&mut self) -> Option<Batch> {
        let b = self.rx.recv().await?;
        self.queued.fetch_sub(b.len(), Ordering::AcqRel);
        Some(b)
    }

    /// The next batch if one is queued now.
    pub fn try_recv(&mut self) -> Option<Batch> {
        let b = self.rx.try_recv().ok()?;
        self.queued.fetch_sub(b.len(), Ordering::AcqRel);
        Some(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bound_is_in_exchanges_not_batches() {
        let (tx, mut rx) = handoff(3);
        assert!(tx.try_send(Vec::new()).is_ok());
        assert!(!rx.behind());
        use crate::model::Role;
        use crate::spans::testutil::{exchange, record, redis};
        let ex = exchange(
            1,
            1,
            1,
            Role::Client,
            "127.0.0.1:40000",
            "127.0.0.1:6379",
            record(
                agent_protocols::ProtocolKind::Redis,
                (1, 2, 3, 4),
                redis("GET"),
            ),
        );
        assert!(tx.try_send(vec![ex.clone(), ex.clone()]).is_ok());
        // 2 queued: a batch of 2 more does not fit, a batch of 1 does.
        assert_eq!(
            tx.try_send(vec![ex.clone(), ex.clone()])
                .map_err(|b| b.len()),
            Err(2)
        );
        assert!(tx.try_send(vec![ex.clone()]).is_ok());
        // 3 of 3 queued: the consumer is behind (and does not yield its CPU).
        assert!(rx.behind());
        assert_eq!(rx.recv().await.map(|b| b.len()), Some(0));
        assert_eq!(rx.recv().await.map(|b| b.len()), Some(2));
        // 1 of 3 queued: more than a quarter, still behind.
        assert!(rx.behind());
        // Room again once received.
        assert!(tx.try_send(vec![ex.clone(), ex]).is_ok());
        drop(tx);
        assert_eq!(rx.recv().await.map(|b| b.len()), Some(1));
        assert_eq!(rx.recv().await.map(|b| b.len()), Some(2));
        assert!(rx.recv().await.is_none());
    }
}
