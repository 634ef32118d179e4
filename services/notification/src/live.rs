//! Live notifications: a subscriber registers for live notifications first, then reads what it
//! missed after the last id it saw, and drops duplicates by id — nothing falls in the gap
//! between the two.

use tokio::sync::broadcast;
use uuid::Uuid;

use crate::error::{NotificationError, Result};

use crate::notifier::*;

/// A subscriber's notifications, in sequence; it ends when the service cannot go on.
pub type LiveStream = std::pin::Pin<Box<dyn futures::Stream<Item = Notification> + Send>>;

/// One subscriber: its live receiver, where it is in the user's sequence, and what it still
/// has to send from the store. While `behind`, the store has more after `last` than was sent:
/// it is read a page at a time as the client takes it (a client back after a long time gets
/// everything it missed, in order, without holding it all in memory). Dropping it (the client
/// left) forgets the user's channel on this replica when nobody else listens.
pub(crate) struct Subscriber {
    live: broadcast::Receiver<Live>,
    notifier: Notifier,
    user: Uuid,
    last: i64,
    behind: bool,
    pending: std::collections::VecDeque<Notification>,
}

impl Subscriber {
    /// Queues the next page of stored notifications after `last`, advancing `last`; a short
    /// page means caught up.
    pub(crate) async fn read_page(&mut self) -> Result<()> {
        let page = self.notifier.after(self.user, self.last).await?;
        self.behind = page.len() as u64 == PAGE;
        for n in page {
            self.last = n.seq;
            self.pending.push_back(Notification::from(&n));
        }
        Ok(())
    }

    /// The next notification in sequence; `None` ends the stream.
    pub(crate) async fn next(&mut self) -> Option<Notification> {
        loop {
            if let Some(n) = self.pending.pop_front() {
                return Some(n);
            }
            if self.behind {
                if self.read_page().await.is_err() {
                    return None;
                }
                continue;
            }
            match self.live.recv().await {
                Ok(Live { seq, notification }) => {
                    if seq <= self.last {
                        continue; // sent already (from the store, or a repeat)
                    }
                    if seq == self.last + 1 {
                        self.last = seq;
                        return Some(notification);
                    }
                    // A gap: another replica's notification whose fan-out is still on its way.
                    // Everything up to this one is stored already: it all goes from the store.
                    self.behind = true;
                }
                // Too slow for the live feed: catch up from the store.
                Err(broadcast::error::RecvError::Lagged(_)) => self.behind = true,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        // Leave the receiver count first (swap in a receiver of a throwaway channel).
        drop(std::mem::replace(&mut self.live, broadcast::channel(1).1));
        self.notifier.forget_idle(self.user);
    }
}

impl Notifier {
    /// The user's live stream: what came after `after_id` first, in order, then each new one.
    /// A plain stream over the user's broadcast receiver (no task and no channel per
    /// subscriber: ten thousand idle sockets are ten thousand small states).
    pub async fn subscribe(&self, user: Uuid, after_id: &str) -> Result<LiveStream> {
        let invalid =
            || NotificationError::Invalid("after_id", skillup_kit::invalid::not_yours("after_id"));
        let after_seq = match after_id {
            "" => None,
            s => {
                let id = Uuid::parse_str(s).map_err(|_| invalid())?;
                Some(self.store.seq_of(user, id).await?.ok_or_else(invalid)?)
            }
        };
        // Live first, then the backlog: nothing can fall between the two.
        let live = {
            let mut map = self.live.lock().expect("live");
            map.entry(user).or_insert_with(|| broadcast::channel(64).0).subscribe()
        };
        metrics::gauge!("notification_streams").increment(1.0);
        // A console is open: a finished generation shows here, not by email.
        self.note_present(user).await;
        let mut state = Subscriber {
            live,
            notifier: self.clone(),
            user,
            last: 0,
            behind: false,
            pending: std::collections::VecDeque::new(),
        };
        match after_seq {
            Some(s) => {
                state.last = s;
                state.read_page().await?;
            }
            None => state.last = self.newest_seq(user).await?,
        }
        Ok(Box::pin(futures::stream::unfold(state, |mut st| async move {
            st.next().await.map(|n| (n, st))
        })))
    }

    /// Drops the user's live channel once nobody listens on this replica.
    pub(crate) fn forget_idle(&self, user: Uuid) {
        metrics::gauge!("notification_streams").decrement(1.0);
        let mut map = self.live.lock().expect("live");
        if map.get(&user).is_some_and(|tx| tx.receiver_count() == 0) {
            map.remove(&user);
        }
    }
}
