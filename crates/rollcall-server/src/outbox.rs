//! One connection's outgoing queue: bounded in bytes, never blocking the sender.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;
use rollcall_core::codes::Disconnect;
use tokio::sync::Notify;

/// The sending side, cheap to clone: the session, the hub and the engine push into it.
///
/// `send` never waits. When the bytes queued exceed the limit the connection is marked for
/// closing with 3008 (slow) and later sends are dropped: one slow reader can never delay the
/// task that fans a push out to thousands of others.
#[derive(Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
}

struct Inner {
    // A parking_lot mutex held only to push or drain a VecDeque: never across an await.
    queue: Mutex<VecDeque<Bytes>>,
    queued_bytes: AtomicUsize,
    max_bytes: usize,
    /// 0 while open; else the close code chosen first.
    close_code: AtomicU16,
    close_reason: Mutex<Option<Disconnect>>,
    notify: Notify,
    /// Requests for the session task (not the writer): see [`Control`].
    control: Mutex<Vec<Control>>,
    /// Wakes `take_control` only: sharing it with `closing` would let one waiter swallow the
    /// other's wake-up.
    control_notify: Notify,
    /// Wakes `closing` (every waiter, via `notify_waiters`).
    closed_notify: Notify,
}

/// A request from outside the session to its own task (which owns the subscription state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// The server unsubscribes the client from a channel (namespace removed on reload).
    Unsubscribe(rollcall_core::presence::Channel),
}

/// Why `send` did not queue a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// The connection is closing.
    Closed,
    /// This message overflowed the queue; the connection now closes with 3008.
    Overflow,
}

impl Outbox {
    /// A new queue allowing `max_bytes` unsent bytes, and its receiving side.
    pub fn new(max_bytes: usize) -> (Outbox, OutboxReceiver) {
        let inner = Arc::new(Inner {
            queue: Mutex::new(VecDeque::new()),
            queued_bytes: AtomicUsize::new(0),
            max_bytes,
            close_code: AtomicU16::new(0),
            close_reason: Mutex::new(None),
            notify: Notify::new(),
            control: Mutex::new(Vec::new()),
            control_notify: Notify::new(),
            closed_notify: Notify::new(),
        });
        (
            Outbox {
                inner: inner.clone(),
            },
            OutboxReceiver { inner },
        )
    }

    /// Queues one message (one JSON line, without newline). Never blocks.
    pub fn send(&self, msg: Bytes) -> Result<(), SendError> {
        if self.is_closing() {
            return Err(SendError::Closed);
        }
        let len = msg.len();
        let total = self.inner.queued_bytes.fetch_add(len, Ordering::AcqRel) + len;
        if total > self.inner.max_bytes {
            self.inner.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            self.close(Disconnect::Slow);
            return Err(SendError::Overflow);
        }
        self.inner.queue.lock().push_back(msg);
        self.inner.notify.notify_one();
        Ok(())
    }

    /// Asks the connection to close with `reason`. The first reason wins; messages already
    /// queued are still written before the close frame.
    pub fn close(&self, reason: Disconnect) {
        let mut slot = self.inner.close_reason.lock();
        if slot.is_none() {
            *slot = Some(reason);
            self.inner
                .close_code
                .store(reason.code(), Ordering::Release);
        }
        drop(slot);
        self.inner.notify.notify_one();
        // Wake the session task too, so it stops reading.
        self.inner.closed_notify.notify_waiters();
    }

    /// Whether a close was asked for.
    pub fn is_closing(&self) -> bool {
        self.inner.close_code.load(Ordering::Acquire) != 0
    }

    /// The close asked for, if any (the first one).
    pub fn reason(&self) -> Option<Disconnect> {
        *self.inner.close_reason.lock()
    }

    /// Hands a request to the session task.
    pub fn control(&self, request: Control) {
        self.inner.control.lock().push(request);
        self.inner.control_notify.notify_one();
    }

    /// Waits for control requests and takes them all (for the session task only).
    pub async fn take_control(&self) -> Vec<Control> {
        loop {
            let taken = std::mem::take(&mut *self.inner.control.lock());
            if !taken.is_empty() {
                return taken;
            }
            self.inner.control_notify.notified().await;
        }
    }

    /// Waits until a close was asked for.
    pub async fn closing(&self) {
        while !self.is_closing() {
            // Created before the check: `notify_waiters` wakes futures created before it.
            let notified = self.inner.closed_notify.notified();
            if self.is_closing() {
                return;
            }
            notified.await;
        }
    }

    /// Whether two handles point at the same connection.
    pub fn same(&self, other: &Outbox) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

/// The receiving side, owned by the connection's writer.
pub struct OutboxReceiver {
    inner: Arc<Inner>,
}

/// What the writer should do next.
#[derive(Debug)]
pub enum Next {
    /// Write these bytes as one frame (messages joined with `\n`).
    Frame(Vec<u8>),
    /// Everything queued before the close was written: send this close frame and stop.
    Close(Disconnect),
}

impl OutboxReceiver {
    /// Waits for queued messages and returns them as one frame, or the close to send.
    /// Batching everything queued into one frame is what Centrifugo SDKs expect and saves
    /// syscalls under fan-out bursts.
    pub async fn next(&mut self) -> Next {
        loop {
            if let Some(frame) = self.drain() {
                return Next::Frame(frame);
            }
            if let Some(reason) = *self.inner.close_reason.lock() {
                return Next::Close(reason);
            }
            self.inner.notify.notified().await;
        }
    }

    fn drain(&mut self) -> Option<Vec<u8>> {
        let mut queue = self.inner.queue.lock();
        if queue.is_empty() {
            return None;
        }
        let bytes: usize = queue.iter().map(|m| m.len() + 1).sum();
        let mut frame = Vec::with_capacity(bytes);
        let mut taken = 0;
        for msg in queue.drain(..) {
            if !frame.is_empty() {
                frame.push(b'\n');
            }
            frame.extend_from_slice(&msg);
            taken += msg.len();
        }
        drop(queue);
        self.inner.queued_bytes.fetch_sub(taken, Ordering::AcqRel);
        Some(frame)
    }

    /// The sending handle of this queue.
    pub fn outbox(&self) -> Outbox {
        Outbox {
            inner: self.inner.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn batches_queued_messages_into_one_frame() {
        let (tx, mut rx) = Outbox::new(1024);
        tx.send(Bytes::from_static(b"{\"id\":1}")).unwrap();
        tx.send(Bytes::from_static(b"{}")).unwrap();
        match rx.next().await {
            Next::Frame(f) => assert_eq!(f, b"{\"id\":1}\n{}"),
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn overflow_closes_with_slow_and_drops_later_sends() {
        let (tx, mut rx) = Outbox::new(10);
        tx.send(Bytes::from_static(b"12345")).unwrap();
        assert_eq!(
            tx.send(Bytes::from_static(b"1234567")),
            Err(SendError::Overflow)
        );
        assert!(tx.is_closing());
        assert_eq!(tx.send(Bytes::from_static(b"1")), Err(SendError::Closed));
        // What was queued before the overflow is still written, then the close.
        assert!(matches!(rx.next().await, Next::Frame(f) if f == b"12345"));
        assert!(matches!(rx.next().await, Next::Close(Disconnect::Slow)));
    }

    #[tokio::test]
    async fn first_close_reason_wins() {
        let (tx, mut rx) = Outbox::new(10);
        tx.close(Disconnect::Shutdown);
        tx.close(Disconnect::Slow);
        assert!(matches!(rx.next().await, Next::Close(Disconnect::Shutdown)));
    }

    #[tokio::test]
    async fn control_wakes_take_control_while_closing_also_waits() {
        let (tx, _rx) = Outbox::new(100);
        let waiter = tx.clone();
        let task = tokio::spawn(async move {
            tokio::select! {
                got = waiter.take_control() => got,
                _ = waiter.closing() => Vec::new(),
            }
        });
        tokio::task::yield_now().await;
        tx.control(Control::Unsubscribe("c".into()));
        let got = tokio::time::timeout(std::time::Duration::from_secs(1), task)
            .await
            .expect("take_control was woken")
            .unwrap();
        assert_eq!(got, vec![Control::Unsubscribe("c".into())]);
    }

    #[tokio::test]
    async fn draining_frees_room() {
        let (tx, mut rx) = Outbox::new(8);
        tx.send(Bytes::from_static(b"12345678")).unwrap();
        assert!(matches!(rx.next().await, Next::Frame(_)));
        tx.send(Bytes::from_static(b"12345678")).unwrap();
        assert!(!tx.is_closing());
    }
}
