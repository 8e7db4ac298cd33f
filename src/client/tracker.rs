//! The one place that decides when a server connection is free: a count of the replies the server
//! still owes for what was forwarded, plus the transaction status it last reported.

use crate::protocol::{TxStatus, ftag};

/// Tracks one borrowed server connection's conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxTracker {
    /// Query / Sync / FunctionCall messages forwarded whose ReadyForQuery has not come back.
    pending_ready: u32,
    /// Extended-protocol messages forwarded since the last Sync (the server owes a Sync's worth).
    batch_open: bool,
    /// ReadyForQuery-terminated replies at the head of the stream that answer pgmux's own queries.
    swallow: u32,
    status: TxStatus,
}

/// What a frontend message means for the conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientMsg {
    /// Forward it.
    Forward,
    /// The client is leaving: do not forward.
    Terminate,
    /// Not a message a client may send now.
    Invalid,
}

impl Default for TxTracker {
    fn default() -> Self {
        TxTracker {
            pending_ready: 0,
            batch_open: false,
            swallow: 0,
            status: TxStatus::Idle,
        }
    }
}

impl TxTracker {
    /// Classifies and counts a message the client sends to the server.
    pub fn on_client(&mut self, tag: u8) -> ClientMsg {
        match tag {
            ftag::QUERY | ftag::FUNCTION_CALL | ftag::SYNC => {
                self.pending_ready += 1;
                self.batch_open = false;
            }
            ftag::PARSE
            | ftag::BIND
            | ftag::DESCRIBE
            | ftag::EXECUTE
            | ftag::CLOSE
            | ftag::FLUSH => {
                self.batch_open = true;
            }
            ftag::COPY_DATA | ftag::COPY_DONE | ftag::COPY_FAIL => {}
            ftag::TERMINATE => return ClientMsg::Terminate,
            _ => return ClientMsg::Invalid,
        }
        ClientMsg::Forward
    }

    /// pgmux queued a query of its own ahead of the client's traffic.
    pub fn on_injected(&mut self) {
        self.swallow += 1;
    }

    /// Whether the next server message belongs to pgmux's own query (and must not reach the client).
    pub fn swallowing(&self) -> bool {
        self.swallow > 0
    }

    /// A ReadyForQuery arrived. Returns true if it belongs to the client.
    pub fn on_ready(&mut self, status: TxStatus) -> bool {
        if self.swallow > 0 {
            self.swallow -= 1;
            return false;
        }
        self.pending_ready = self.pending_ready.saturating_sub(1);
        self.status = status;
        true
    }

    /// Nothing in flight, no transaction open: the connection can serve another client.
    pub fn is_free(&self) -> bool {
        self.pending_ready == 0
            && self.swallow == 0
            && !self.batch_open
            && self.status == TxStatus::Idle
    }

    /// Nothing in flight, but a transaction (maybe failed) is open: a ROLLBACK makes it clean.
    pub fn needs_rollback_only(&self) -> bool {
        self.pending_ready == 0
            && self.swallow == 0
            && !self.batch_open
            && self.status != TxStatus::Idle
    }

    /// ReadyForQuery replies the client is still owed.
    pub fn pending_ready(&self) -> u32 {
        self.pending_ready
    }

    /// The client sent extended-protocol messages without their Sync yet.
    pub fn batch_open(&self) -> bool {
        self.batch_open
    }

    pub fn status(&self) -> TxStatus {
        self.status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_query_frees_on_idle_ready() {
        let mut t = TxTracker::default();
        assert_eq!(t.on_client(b'Q'), ClientMsg::Forward);
        assert!(!t.is_free());
        assert!(t.on_ready(TxStatus::Idle));
        assert!(t.is_free());
    }

    #[test]
    fn open_transaction_holds_connection() {
        let mut t = TxTracker::default();
        t.on_client(b'Q');
        t.on_ready(TxStatus::InTransaction);
        assert!(!t.is_free());
        assert!(t.needs_rollback_only());
        t.on_client(b'Q');
        t.on_ready(TxStatus::Failed);
        assert!(!t.is_free());
        t.on_client(b'Q');
        t.on_ready(TxStatus::Idle);
        assert!(t.is_free());
    }

    #[test]
    fn pipelined_syncs_need_every_ready() {
        let mut t = TxTracker::default();
        for tag in *b"PBESPBES" {
            t.on_client(tag);
        }
        t.on_ready(TxStatus::Idle);
        assert!(!t.is_free());
        t.on_ready(TxStatus::Idle);
        assert!(t.is_free());
    }

    #[test]
    fn extended_batch_without_sync_holds_connection() {
        let mut t = TxTracker::default();
        for tag in *b"PDH" {
            t.on_client(tag);
        }
        assert!(!t.is_free());
        assert!(!t.needs_rollback_only());
        t.on_client(b'S');
        t.on_ready(TxStatus::Idle);
        assert!(t.is_free());
    }

    #[test]
    fn injected_replies_come_first_and_are_swallowed() {
        let mut t = TxTracker::default();
        t.on_injected();
        t.on_client(b'Q');
        assert!(t.swallowing());
        assert!(!t.on_ready(TxStatus::Idle));
        assert!(!t.is_free());
        assert!(t.on_ready(TxStatus::Idle));
        assert!(t.is_free());
    }

    #[test]
    fn classifies_messages() {
        let mut t = TxTracker::default();
        assert_eq!(t.on_client(b'X'), ClientMsg::Terminate);
        assert_eq!(t.on_client(b'Z'), ClientMsg::Invalid);
        assert_eq!(t.on_client(b'p'), ClientMsg::Invalid);
        assert_eq!(t.on_client(b'd'), ClientMsg::Forward);
    }
}
