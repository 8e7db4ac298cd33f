//! The one place that decides when a server connection is free: a queue of the replies the server
//! owes, one entry per request forwarded or injected, in order. Each entry says whose reply it is:
//! the client's (forwarded), pgmux's (dropped), or one the server will never send because pgmux
//! answered for it (a ParseComplete for a statement the connection already has), emitted in place.
//!
//! Release = queue empty, no extended-protocol batch open (no messages since the last Sync), the
//! last ReadyForQuery said idle, and nothing made the connection untrustworthy (`poison`).
//!
//! ParameterStatus always reaches the client, whoever's request caused it: the client's driver must
//! believe what its session runs with (pgmux's own settings apply changes reported values too).

use std::collections::VecDeque;

use bytes::Bytes;

use crate::backend::Spare;
use crate::protocol::{TxStatus, btag};

/// The request a reply answers, which fixes which server message completes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Parse,
    Bind,
    DescribeStatement,
    DescribePortal,
    Execute,
    Close,
    Sync,
    /// Simple Query or FunctionCall: everything up to ReadyForQuery.
    Query,
    /// Not a request: marks where the client ended a COPY FROM STDIN (CopyDone / CopyFail). A
    /// server in copy-in mode ignores Syncs, so those sent before this mark owe no ReadyForQuery.
    CopyEnd,
}

/// Whose reply it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// The client's request: replies go to the client.
    Client,
    /// pgmux's request inside the client's batch (a re-Parse, an eviction Close): replies are
    /// dropped, except an error, which the client must see since the server now skips its messages.
    Injected,
    /// pgmux's own simple query before the client's traffic (settings): all dropped, errors logged.
    InjectedQuery,
    /// pgmux's own simple query whose rows it reads (the session-state check after a transaction).
    Capture,
    /// Never sent to the server: these bytes go to the client when the entry reaches the head.
    Answered(Bytes),
}

/// Undo information for state pgmux recorded optimistically when it queued a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Undo {
    /// A Parse of this server-side statement did not happen (error, or skipped after an error).
    /// `prepared_here`: pgmux sent it (else it answered for a statement the server already had).
    Parse { server_name: std::sync::Arc<str>, client_name: Option<String>, prepared_here: bool },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    request: Request,
    owner: Owner,
    /// Boxed: rare (a Parse pgmux sends or answers), and an entry is moved at every push and pop.
    undo: Option<Box<Undo>>,
    /// A DescribeStatement's ParameterDescription arrived; its row description is next.
    half_done: bool,
}

/// What to do with one server message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Forward,
    Drop,
    /// Drop, and tell the operator: pgmux's own query failed.
    DropError,
    /// A row or row description of pgmux's own query, for pgmux to read.
    Capture,
}

/// The server sent something no request explains.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unexpected server message {0:?}")]
pub struct Unexpected(pub char);

#[derive(Debug)]
pub struct ReplyQueue {
    entries: VecDeque<Entry>,
    /// The server failed a request and skips everything up to the next Sync we have not queued yet.
    skipping: bool,
    batch_open: bool,
    status: TxStatus,
    /// Undo records released by errors and skips, for the session to apply.
    undone: Vec<Undo>,
    /// Answered replies that reached the head, for the session to send.
    answered: Vec<Bytes>,
    /// The server is in copy-in mode and the client has not ended the COPY yet.
    copy_in: bool,
    /// The connection's session is not what pgmux needs (its settings apply failed): never free.
    poisoned: bool,
}

/// Room for an extended-protocol query's five requests (Parse, Bind, Describe, Execute, Sync) and
/// pgmux's own: growing 0 → 4 → 8 took two allocations and a copy (~650 instructions per
/// `-M extended` transaction, callgrind).
const ENTRIES_AT_FIRST: usize = 8;

/// A queue grown past this (a long pipeline) leaves no storage behind.
const SPARE_MAX: usize = 64;

impl ReplyQueue {
    /// A queue in the storage `spare` holds (left there, emptied, boxed): a transaction on a
    /// connection that served one before allocates none (callgrind: one allocation and free,
    /// ~250 instructions, per transaction).
    pub fn from_spare(spare: &mut Spare) -> ReplyQueue {
        let kept = kept_entries(spare).map(std::mem::take).filter(|e| e.capacity() > 0);
        ReplyQueue::with_entries(kept.unwrap_or_else(|| VecDeque::with_capacity(ENTRIES_AT_FIRST)))
    }

    /// Every field spelled out: a `..` from a whole default queue would build and drop (out of
    /// line) its empty entries (callgrind: ~65 instructions per transaction).
    fn with_entries(entries: VecDeque<Entry>) -> ReplyQueue {
        ReplyQueue {
            entries,
            skipping: false,
            batch_open: false,
            status: TxStatus::Idle,
            undone: Vec::new(),
            answered: Vec::new(),
            copy_in: false,
            poisoned: false,
        }
    }

    /// Leaves the (emptied) storage in `spare` for the connection's next transaction; the queue
    /// keeps none. By reference: taking the queue by value costs a default queue left in its
    /// place and a second drop (~65 instructions each).
    pub fn leave_storage(&mut self, spare: &mut Spare) {
        let mut entries = std::mem::take(&mut self.entries);
        if entries.capacity() > SPARE_MAX {
            return;
        }
        entries.clear();
        match kept_entries(spare) {
            Some(slot) => *slot = entries,
            None => *spare = Some(Box::new(entries)),
        }
    }
}

/// The reply-queue storage in `spare`, if it holds one.
fn kept_entries(spare: &mut Spare) -> Option<&mut VecDeque<Entry>> {
    spare.as_mut().and_then(|b| b.downcast_mut())
}

fn is_mark(e: &Entry) -> bool {
    matches!(e.owner, Owner::Answered(_)) || e.request == Request::CopyEnd
}

fn completes(request: Request, tag: u8, half_done: bool) -> bool {
    match request {
        Request::Parse => tag == btag::PARSE_COMPLETE,
        Request::Bind => tag == btag::BIND_COMPLETE,
        Request::DescribeStatement => half_done && matches!(tag, btag::ROW_DESCRIPTION | btag::NO_DATA),
        Request::DescribePortal => matches!(tag, btag::ROW_DESCRIPTION | btag::NO_DATA),
        Request::Execute => {
            matches!(tag, btag::COMMAND_COMPLETE | btag::EMPTY_QUERY_RESPONSE | btag::PORTAL_SUSPENDED)
        }
        Request::Close => tag == btag::CLOSE_COMPLETE,
        Request::Sync | Request::Query => tag == btag::READY_FOR_QUERY,
        Request::CopyEnd => false,
    }
}

impl ReplyQueue {
    /// Queues the reply owed for a request about to be sent (or answered by pgmux).
    pub fn push(&mut self, request: Request, owner: Owner, undo: Option<Undo>) {
        match request {
            Request::CopyEnd if self.copy_in => {
                self.copy_in = false;
                return;
            }
            // Ignored by a server in copy-in mode.
            Request::Sync if self.copy_in => return,
            Request::Sync => self.batch_open = false,
            Request::Query | Request::CopyEnd => {}
            _ => self.batch_open = true,
        }
        if self.skipping {
            if request == Request::Sync {
                self.skipping = false;
            } else {
                // The server will ignore it: it owes nothing, and whatever it stood for did not happen.
                self.undone.extend(undo);
                return;
            }
        }
        self.entries.push_back(Entry { request, owner, undo: undo.map(Box::new), half_done: false });
        self.answer_head();
    }

    /// A Flush or other message that owes no reply but belongs to an open batch.
    pub fn note_batch_message(&mut self) {
        self.batch_open = true;
    }

    /// Moves Answered entries at the head to the output (and drops copy marks that got there).
    /// Every method that changes the head ends with it, so the head is never one of those between
    /// calls.
    fn answer_head(&mut self) {
        while self.entries.front().is_some_and(is_mark) {
            if let Some(Entry { owner: Owner::Answered(bytes), .. }) = self.entries.pop_front() {
                self.answered.push(bytes);
            }
        }
    }

    /// CopyInResponse: Syncs the client sent between the COPY and its end are ignored by the server.
    fn enter_copy_in(&mut self) {
        let mut i = 1;
        while i < self.entries.len() {
            match self.entries[i].request {
                Request::CopyEnd => {
                    self.entries.remove(i);
                    return;
                }
                Request::Sync => {
                    self.entries.remove(i);
                }
                _ => i += 1,
            }
        }
        self.copy_in = true;
    }

    /// Classifies one server message by its tag; `status` is the ReadyForQuery byte if it is one.
    pub fn on_server(&mut self, tag: u8, status: Option<TxStatus>) -> Result<Verdict, Unexpected> {
        debug_assert!(!self.entries.front().is_some_and(is_mark));
        let Some(head) = self.entries.front_mut() else {
            return match tag {
                btag::NOTICE_RESPONSE | btag::PARAMETER_STATUS | btag::NOTIFICATION_RESPONSE => Ok(Verdict::Forward),
                t => Err(Unexpected(t as char)),
            };
        };
        let verdict = match (&head.owner, tag) {
            (Owner::Client, _) | (_, btag::PARAMETER_STATUS) => Verdict::Forward,
            (Owner::InjectedQuery | Owner::Capture, btag::ERROR_RESPONSE) => Verdict::DropError,
            (Owner::Capture, btag::DATA_ROW | btag::ROW_DESCRIPTION) => Verdict::Capture,
            (Owner::Capture, _) => Verdict::Drop,
            (Owner::InjectedQuery, _) => Verdict::Drop,
            (Owner::Injected, btag::ERROR_RESPONSE | btag::NOTICE_RESPONSE | btag::NOTIFICATION_RESPONSE) => {
                Verdict::Forward
            }
            (Owner::Injected, _) => Verdict::Drop,
            // answer_head() above never leaves one there.
            (Owner::Answered(_), _) => Verdict::Drop,
        };
        if matches!(tag, btag::NOTICE_RESPONSE | btag::PARAMETER_STATUS | btag::NOTIFICATION_RESPONSE) {
            return Ok(verdict);
        }
        if tag == btag::COPY_IN_RESPONSE {
            self.enter_copy_in();
            return Ok(verdict);
        }
        if matches!(tag, btag::ERROR_RESPONSE | btag::READY_FOR_QUERY) {
            // A COPY that fails leaves copy-in mode at once (the server drops the client's later
            // CopyData/CopyDone), and its Syncs are answered again.
            self.copy_in = false;
        }
        if tag == btag::ERROR_RESPONSE && !matches!(head.request, Request::Sync | Request::Query) {
            let failed = self.entries.pop_front().expect("head exists");
            self.undone.extend(failed.undo.map(|u| *u));
            self.skip_to_sync();
        } else if tag == btag::PARAMETER_DESCRIPTION && head.request == Request::DescribeStatement {
            head.half_done = true;
        } else if completes(head.request, tag, head.half_done) {
            let done = self.entries.pop_front().expect("head exists");
            if done.request == Request::Sync || done.request == Request::Query {
                self.status = status.ok_or(Unexpected('Z'))?;
            }
        }
        self.answer_head();
        Ok(verdict)
    }

    /// After an error in an extended batch, the server owes nothing until the next Sync.
    fn skip_to_sync(&mut self) {
        while let Some(e) = self.entries.front() {
            if e.request == Request::Sync {
                return;
            }
            let skipped = self.entries.pop_front().expect("front exists");
            self.undone.extend(skipped.undo.map(|u| *u));
        }
        self.skipping = true;
    }

    /// Whether the next message belongs to pgmux's own query, for whole-frame inspection.
    pub fn head_is_injected(&self) -> bool {
        matches!(
            self.entries.front(),
            Some(Entry { owner: Owner::Injected | Owner::InjectedQuery | Owner::Capture, .. })
        )
    }

    /// A query whose rows pgmux reads is still running.
    pub fn capture_open(&self) -> bool {
        self.entries.iter().any(|e| e.owner == Owner::Capture)
    }

    pub fn is_free(&self) -> bool {
        self.settled() && self.status == TxStatus::Idle
    }

    /// Nothing owed and no batch open, but a transaction (maybe failed) is open.
    pub fn needs_rollback_only(&self) -> bool {
        self.settled() && self.status != TxStatus::Idle
    }

    fn settled(&self) -> bool {
        self.entries.is_empty() && !self.batch_open && !self.skipping && !self.poisoned
    }

    /// The connection must be closed, never reused (pgmux could not give it the client's settings).
    pub fn poison(&mut self) {
        self.poisoned = true;
    }

    /// pgmux's own query before the client's traffic (the settings apply) is still running.
    pub fn injected_query_open(&self) -> bool {
        self.entries.iter().any(|e| e.owner == Owner::InjectedQuery)
    }

    /// Requests whose ReadyForQuery the client still waits for.
    pub fn pending_ready(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| e.owner == Owner::Client && matches!(e.request, Request::Sync | Request::Query))
            .count()
    }

    pub fn batch_open(&self) -> bool {
        self.batch_open
    }

    /// Requests waiting for replies (bounded by the session, so a client cannot grow it at will).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The server has nothing to do for the client: the transaction (or extended-protocol batch)
    /// waits on the client's next message. An Execute not yet followed by Sync may still be
    /// running (or its rows wait for a Flush), so it does not count as waiting on the client.
    pub fn awaiting_client(&self) -> bool {
        if self.copy_in {
            return false;
        }
        if self.entries.is_empty() {
            return self.status != TxStatus::Idle || self.batch_open;
        }
        self.batch_open && !self.entries.iter().any(|e| matches!(e.request, Request::Execute | Request::Query))
    }

    /// The server is in COPY FROM STDIN and the client has not ended it.
    pub fn copy_in(&self) -> bool {
        self.copy_in
    }

    /// ReadyForQuery messages the server still owes (for whoever asked).
    pub fn ready_owed(&self) -> usize {
        self.entries.iter().filter(|e| matches!(e.request, Request::Sync | Request::Query)).count()
    }

    pub fn status(&self) -> TxStatus {
        self.status
    }

    pub fn take_undone(&mut self) -> Vec<Undo> {
        std::mem::take(&mut self.undone)
    }

    pub fn take_answered(&mut self) -> Vec<Bytes> {
        std::mem::take(&mut self.answered)
    }

    pub fn has_output(&self) -> bool {
        !self.answered.is_empty() || !self.undone.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Option<TxStatus> = Some(TxStatus::Idle);

    fn q() -> ReplyQueue {
        ReplyQueue::from_spare(&mut None)
    }

    #[test]
    fn simple_query_frees_on_idle_ready() {
        let mut r = q();
        r.push(Request::Query, Owner::Client, None);
        assert!(!r.is_free());
        for t in *b"TDC" {
            assert_eq!(r.on_server(t, None), Ok(Verdict::Forward));
        }
        assert_eq!(r.on_server(b'Z', Some(TxStatus::InTransaction)), Ok(Verdict::Forward));
        assert!(!r.is_free());
        assert!(r.needs_rollback_only());
        r.push(Request::Query, Owner::Client, None);
        r.on_server(b'C', None).unwrap();
        r.on_server(b'Z', IDLE).unwrap();
        assert!(r.is_free());
    }

    #[test]
    fn extended_batch_holds_until_sync_and_every_ready() {
        let mut r = q();
        for req in [
            Request::Parse,
            Request::Bind,
            Request::Execute,
            Request::Sync,
            Request::Bind,
            Request::Execute,
            Request::Sync,
        ] {
            r.push(req, Owner::Client, None);
        }
        for t in *b"12DCZ" {
            r.on_server(t, IDLE).unwrap();
        }
        assert!(!r.is_free());
        assert_eq!(r.pending_ready(), 1);
        for t in *b"2CZ" {
            r.on_server(t, IDLE).unwrap();
        }
        assert!(r.is_free());
        r.push(Request::Parse, Owner::Client, None);
        r.note_batch_message();
        r.on_server(b'1', None).unwrap();
        assert!(!r.is_free(), "no Sync yet");
    }

    #[test]
    fn a_connection_keeps_its_reply_queue_storage_between_loans() {
        let mut spare: Spare = None;
        let mut r = ReplyQueue::from_spare(&mut spare);
        assert!(r.entries.capacity() >= ENTRIES_AT_FIRST);
        r.push(Request::Query, Owner::Client, None);
        let at = r.entries.as_slices().0.as_ptr();
        r.on_server(b'Z', IDLE).unwrap();
        r.leave_storage(&mut spare);
        let r = ReplyQueue::from_spare(&mut spare);
        assert_eq!(r.entries.as_slices().0.as_ptr(), at, "the same storage, not a new allocation");
        assert!(r.entries.is_empty());
        // A long pipeline's storage is not kept: the next loan starts at the usual size.
        let mut r = r;
        for _ in 0..(SPARE_MAX + 1) {
            r.push(Request::Sync, Owner::Client, None);
        }
        r.leave_storage(&mut spare);
        let r = ReplyQueue::from_spare(&mut spare);
        assert!((ENTRIES_AT_FIRST..=SPARE_MAX).contains(&r.entries.capacity()));
    }

    #[test]
    fn answered_entries_are_emitted_in_order() {
        let mut r = q();
        r.push(Request::Parse, Owner::Answered(Bytes::from_static(b"P1")), None);
        assert_eq!(r.take_answered(), vec![Bytes::from_static(b"P1")]);
        r.push(Request::Bind, Owner::Client, None);
        r.push(Request::Close, Owner::Answered(Bytes::from_static(b"C3")), None);
        r.push(Request::Sync, Owner::Client, None);
        assert!(r.take_answered().is_empty(), "must wait for the Bind's reply");
        r.on_server(b'2', None).unwrap();
        assert_eq!(r.take_answered(), vec![Bytes::from_static(b"C3")]);
        r.on_server(b'Z', IDLE).unwrap();
        assert!(r.is_free());
    }

    #[test]
    fn injected_replies_dropped_but_their_errors_reach_the_client() {
        let mut r = q();
        let undo = Undo::Parse { server_name: "pgmux_x".into(), client_name: None, prepared_here: true };
        r.push(Request::Parse, Owner::Injected, Some(undo.clone()));
        r.push(Request::Bind, Owner::Client, None);
        r.push(Request::Close, Owner::Answered(Bytes::from_static(b"C3")), None);
        r.push(Request::Sync, Owner::Client, None);
        assert_eq!(r.on_server(b'E', None), Ok(Verdict::Forward));
        assert_eq!(r.take_undone(), vec![undo]);
        assert!(r.take_answered().is_empty(), "answers after an error are never sent");
        assert_eq!(r.on_server(b'Z', IDLE), Ok(Verdict::Forward));
        assert!(r.is_free());

        r.push(Request::Parse, Owner::Injected, None);
        r.push(Request::Bind, Owner::Client, None);
        assert_eq!(r.on_server(b'1', None), Ok(Verdict::Drop));
        assert_eq!(r.on_server(b'2', None), Ok(Verdict::Forward));
    }

    #[test]
    fn error_before_sync_is_queued_skips_later_requests() {
        let mut r = q();
        r.push(
            Request::Parse,
            Owner::Client,
            Some(Undo::Parse { server_name: "a".into(), client_name: Some("s1".into()), prepared_here: true }),
        );
        r.on_server(b'E', None).unwrap();
        assert_eq!(r.take_undone().len(), 1);
        r.push(
            Request::Bind,
            Owner::Injected,
            Some(Undo::Parse { server_name: "b".into(), client_name: None, prepared_here: true }),
        );
        assert_eq!(r.take_undone().len(), 1, "a request sent while the server skips never happens");
        r.push(Request::Sync, Owner::Client, None);
        r.on_server(b'Z', IDLE).unwrap();
        assert!(r.is_free());
    }

    #[test]
    fn injected_query_is_swallowed_whole() {
        let mut r = q();
        r.push(Request::Query, Owner::InjectedQuery, None);
        r.push(Request::Query, Owner::Client, None);
        assert!(r.head_is_injected());
        assert!(r.injected_query_open());
        assert_eq!(r.on_server(b'T', None), Ok(Verdict::Drop));
        assert_eq!(r.on_server(b'S', None), Ok(Verdict::Forward), "the client must know its session's parameters");
        assert_eq!(r.on_server(b'E', None), Ok(Verdict::DropError));
        assert_eq!(r.on_server(b'Z', IDLE), Ok(Verdict::Drop));
        assert!(!r.injected_query_open());
        assert_eq!(r.on_server(b'C', None), Ok(Verdict::Forward));
        assert_eq!(r.on_server(b'Z', IDLE), Ok(Verdict::Forward));
        assert!(r.is_free());
        r.poison();
        assert!(!r.is_free() && !r.needs_rollback_only(), "a poisoned connection is never reused");
    }

    #[test]
    fn syncs_sent_during_copy_in_owe_nothing() {
        let mut r = q();
        // tokio-postgres: Bind, Execute, Sync, then CopyData…, CopyDone, Sync.
        for req in [Request::Bind, Request::Execute, Request::Sync] {
            r.push(req, Owner::Client, None);
        }
        r.on_server(b'2', None).unwrap();
        r.on_server(b'G', None).unwrap();
        r.push(Request::CopyEnd, Owner::Client, None);
        r.push(Request::Sync, Owner::Client, None);
        r.on_server(b'C', None).unwrap();
        r.on_server(b'Z', IDLE).unwrap();
        assert!(r.is_free());
        // The same when the client's CopyDone was queued before the CopyInResponse arrived.
        for req in [Request::Bind, Request::Execute, Request::Sync, Request::CopyEnd, Request::Sync] {
            r.push(req, Owner::Client, None);
        }
        for t in *b"2GC" {
            r.on_server(t, None).unwrap();
        }
        r.on_server(b'Z', IDLE).unwrap();
        assert!(r.is_free());
        // Simple-protocol COPY: the mark is dropped once it reaches the head.
        r.push(Request::Query, Owner::Client, None);
        r.push(Request::CopyEnd, Owner::Client, None);
        r.on_server(b'G', None).unwrap();
        r.on_server(b'C', None).unwrap();
        r.on_server(b'Z', IDLE).unwrap();
        assert!(r.is_free());
    }

    #[test]
    fn a_failed_copy_leaves_copy_mode() {
        // Extended protocol: the COPY fails mid-way; the server then answers the client's Sync.
        let mut r = q();
        for req in [Request::Bind, Request::Execute, Request::Sync] {
            r.push(req, Owner::Client, None);
        }
        r.on_server(b'2', None).unwrap();
        r.on_server(b'G', None).unwrap();
        assert!(r.copy_in());
        r.on_server(b'E', None).unwrap();
        assert!(!r.copy_in());
        r.push(Request::Sync, Owner::Client, None);
        r.push(Request::CopyEnd, Owner::Client, None);
        assert_eq!(r.on_server(b'Z', IDLE), Ok(Verdict::Forward));
        assert!(r.is_free());
        // Simple protocol: error and ReadyForQuery end it; the client's late CopyDone owes nothing.
        r.push(Request::Query, Owner::Client, None);
        r.on_server(b'G', None).unwrap();
        r.on_server(b'E', None).unwrap();
        r.on_server(b'Z', IDLE).unwrap();
        r.push(Request::CopyEnd, Owner::Client, None);
        assert!(r.is_free());
    }

    #[test]
    fn waiting_on_the_client() {
        let mut r = q();
        assert!(!r.awaiting_client(), "idle, nothing open");
        r.push(Request::Query, Owner::Client, None);
        assert!(!r.awaiting_client(), "the server is working");
        r.on_server(b'Z', Some(TxStatus::InTransaction)).unwrap();
        assert!(r.awaiting_client(), "idle in transaction");
        r.push(Request::Parse, Owner::Client, None);
        r.push(Request::Bind, Owner::Client, None);
        assert!(r.awaiting_client(), "a batch without Sync and nothing to execute");
        r.push(Request::Execute, Owner::Client, None);
        assert!(!r.awaiting_client(), "an Execute may be running");
    }

    #[test]
    fn describe_statement_needs_both_replies() {
        let mut r = q();
        r.push(Request::DescribeStatement, Owner::Client, None);
        r.push(Request::Sync, Owner::Client, None);
        r.on_server(b't', None).unwrap();
        r.on_server(b'n', None).unwrap();
        assert_eq!(r.pending_ready(), 1);
        r.on_server(b'Z', IDLE).unwrap();
        assert!(r.is_free());
    }

    #[test]
    fn unexplained_messages_are_errors_but_async_ones_pass() {
        let mut r = q();
        assert_eq!(r.on_server(b'N', None), Ok(Verdict::Forward));
        assert_eq!(r.on_server(b'A', None), Ok(Verdict::Forward));
        assert!(r.on_server(b'D', None).is_err());
    }

    #[test]
    fn random_conversations_never_panic() {
        let mut seed: u64 = 0x2545f4914f6cdd1d;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let requests = [
            Request::Parse,
            Request::Bind,
            Request::DescribeStatement,
            Request::DescribePortal,
            Request::Execute,
            Request::Close,
            Request::Sync,
            Request::Query,
            Request::CopyEnd,
        ];
        let tags = b"123tTnDCIsZEGHdcNSA";
        for _ in 0..2000 {
            let mut r = q();
            for _ in 0..50 {
                if next() % 2 == 0 {
                    let req = requests[(next() % requests.len() as u64) as usize];
                    let owner = match next() % 4 {
                        0 => Owner::Injected,
                        1 => Owner::Answered(Bytes::from_static(b"x")),
                        2 => Owner::Capture,
                        _ => Owner::Client,
                    };
                    r.push(req, owner, None);
                } else {
                    let tag = tags[(next() % tags.len() as u64) as usize];
                    let _ = r.on_server(tag, Some(TxStatus::Idle));
                }
                let _ = (r.is_free(), r.pending_ready(), r.take_answered(), r.take_undone());
            }
        }
    }
}
