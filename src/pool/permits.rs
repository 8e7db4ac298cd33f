//! A shard's permits (the right to hold one of its connections) and the borrowers waiting for
//! one, first come, first served; how a pool's borrowers take, wait for and give them back.
//!
//! In place of tokio's semaphore, whose waiters are nodes inside the waiting tasks' futures,
//! linked to one another: handing a returned permit on read and wrote the next borrower's node, in
//! a session's memory that is cold with thousands of clients (callgrind, 2,000 clients: 2 cache
//! misses per borrow), and a wait held an 88-byte node in every session's future. Here a waiter
//! holds a ticket number, and the wakers wait in the shard, in ticket order: a grant pops the
//! front of one queue.
//!
//! A ticket below `front` was granted, unless its waiter left first (then its waker was dropped
//! and the grant passed over it): a waiter that is still there and finds its ticket below `front`
//! holds a permit — of this shard, or of the one `foreign` names (another shard had one spare
//! while nobody waited there).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use super::{Pool, PoolError, WaitTimer};

#[derive(Debug)]
pub(super) struct Permits {
    /// This shard's index: whose permits these are.
    shard: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Permits nobody holds or was granted.
    available: usize,
    /// Permits to take back as they return: the shard shrank while they were lent.
    owed: usize,
    /// The ticket of `queue[0]`.
    front: u64,
    /// The waiters' wakers, by ticket from `front`; None: that waiter left.
    queue: VecDeque<Option<Waker>>,
    /// Tickets granted a permit of another shard, and that shard (few, briefly).
    foreign: Vec<(u64, usize)>,
}

/// What became of a permit given back.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Given {
    /// The longest waiting borrower has it.
    Granted,
    /// Nobody waits here: it is available.
    Kept,
    /// Taken back (the shard shrank).
    Retired,
}

impl Permits {
    pub(super) fn new(shard: usize, available: usize) -> Permits {
        Permits { shard, inner: Mutex::new(Inner { available, ..Inner::default() }) }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing panics while holding it; a poisoned lock's data is still consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes an available permit, if there is one.
    pub(super) fn try_take(&self) -> bool {
        let mut g = self.lock();
        if g.available > 0 {
            g.available -= 1;
            return true;
        }
        false
    }

    /// Permits available now.
    #[cfg(test)]
    fn available(&self) -> usize {
        self.lock().available
    }

    /// Permits lent out of a shard of `size`.
    pub(super) fn lent(&self, size: usize) -> usize {
        let g = self.lock();
        (size + g.owed).saturating_sub(g.available)
    }

    /// Gives a permit back: to the longest waiting borrower (woken), else kept available, unless
    /// the shard owes it.
    pub(super) fn give(&self) -> Given {
        let mut g = self.lock();
        if g.owed > 0 {
            g.owed -= 1;
            return Given::Retired;
        }
        match g.grant() {
            Some(waker) => {
                drop(g);
                waker.wake();
                Given::Granted
            }
            None => {
                g.available += 1;
                Given::Kept
            }
        }
    }

    /// Takes a new size (from `old`): a larger shard grants or keeps the new permits, a smaller
    /// one takes back what is available and the rest as it returns. Returns how many were kept.
    pub(super) fn resize(&self, old: usize, size: usize) -> usize {
        if size < old {
            let mut g = self.lock();
            let take = g.available.min(old - size);
            g.available -= take;
            g.owed += old - size - take;
            return 0;
        }
        (old..size).filter(|_| self.give() == Given::Kept).count()
    }

    /// Queues a waiter (woken through `waker` when granted); returns its ticket. A permit available
    /// now is taken instead (None).
    pub(super) fn enqueue(&self, waker: &Waker) -> Option<u64> {
        let mut g = self.lock();
        if g.available > 0 {
            g.available -= 1;
            return None;
        }
        g.queue.push_back(Some(waker.clone()));
        Some(g.front + g.queue.len() as u64 - 1)
    }

    /// Whether `ticket` was granted, and a permit of which shard; if not, it will wake `cx`'s
    /// waker when it is.
    pub(super) fn poll_ticket(&self, ticket: u64, cx: &Context<'_>) -> Poll<usize> {
        let mut g = self.lock();
        let Some(i) = ticket.checked_sub(g.front) else {
            return Poll::Ready(g.granted_shard(ticket, self.shard));
        };
        if let Some(Some(w)) = g.queue.get_mut(i as usize)
            && !w.will_wake(cx.waker())
        {
            w.clone_from(cx.waker());
        }
        Poll::Pending
    }

    /// The waiter with `ticket` leaves. Returns the shard of the permit it had been granted, if
    /// any (the caller gives it back).
    pub(super) fn leave(&self, ticket: u64) -> Option<usize> {
        let mut g = self.lock();
        let Some(i) = ticket.checked_sub(g.front) else {
            return Some(g.granted_shard(ticket, self.shard));
        };
        if let Some(slot) = g.queue.get_mut(i as usize) {
            *slot = None;
        }
        // Left waiters at either end go at once; those between live ones when a grant passes.
        while let Some(None) = g.queue.back() {
            g.queue.pop_back();
        }
        while let Some(None) = g.queue.front() {
            g.queue.pop_front();
            g.front += 1;
        }
        None
    }

    /// Grants a permit of `shard` (another shard, which had it spare) to the longest waiting
    /// borrower here. Returns false if nobody waits.
    pub(super) fn grant_from(&self, shard: usize) -> bool {
        let mut g = self.lock();
        let Some(waker) = g.grant() else {
            return false;
        };
        let ticket = g.front - 1;
        g.foreign.push((ticket, shard));
        drop(g);
        waker.wake();
        true
    }

    /// Whether a borrower waits here.
    pub(super) fn has_waiters(&self) -> bool {
        self.lock().queue.iter().any(Option::is_some)
    }

    /// Borrowers waiting here now.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.lock().queue.iter().flatten().count()
    }
}

impl Inner {
    /// Grants a permit to the longest waiting borrower: its waker, to wake once unlocked.
    fn grant(&mut self) -> Option<Waker> {
        while let Some(slot) = self.queue.pop_front() {
            self.front += 1;
            if slot.is_some() {
                return slot;
            }
        }
        None
    }

    /// The shard whose permit granted `ticket` holds (`own` unless another's), forgetting it.
    fn granted_shard(&mut self, ticket: u64, own: usize) -> usize {
        match self.foreign.iter().position(|(t, _)| *t == ticket) {
            Some(i) => self.foreign.swap_remove(i).1,
            None => own,
        }
    }
}

/// How a pool's borrowers take, wait for and give back its shards' permits.
impl Pool {
    /// A permit of shard `home`, or else of any other shard with one free now.
    pub(super) fn try_permit(&self, home: usize) -> Option<(usize, Permit<'_>)> {
        if self.shards[home].permits.try_take() {
            return Some((home, Permit { pool: self, shard: home }));
        }
        self.try_permit_elsewhere(home)
    }

    pub(super) fn try_permit_elsewhere(&self, home: usize) -> Option<(usize, Permit<'_>)> {
        let n = self.shards.len();
        let shard = (1..n).map(|k| (home + k) % n).find(|&i| self.shards[i].permits.try_take())?;
        Some((shard, Permit { pool: self, shard }))
    }

    /// Waits in shard `home`'s queue (first come, first served) for a permit: of that shard, or of
    /// another that had one spare (granted by `offer_spare`); until `deadline`.
    /// A plain function returning the future (not an `async fn`, which would keep its arguments
    /// beside it): the wait's state is in every waiting session's future.
    pub(super) fn wait_permit<'a>(
        &'a self,
        home: usize,
        now: Instant,
        deadline: Instant,
        timer: &'a mut WaitTimer,
    ) -> impl Future<Output = Result<(usize, Permit<'a>), PoolError>> + 'a {
        let mut place = Place { pool: self, shard: home, ticket: None };
        let mut expiry = timer.until(deadline.into(), now.into());
        std::future::poll_fn(move |cx| {
            // The whole place moves into the future (its fields alone would be copied, and the
            // place dropped as this function returns).
            let place = &mut place;
            let (pool, home) = (place.pool, place.shard);
            let permits = &pool.shards[home].permits;
            let granted = match place.ticket {
                None => match permits.enqueue(cx.waker()) {
                    None => Poll::Ready(home),
                    Some(ticket) => {
                        place.ticket = Some(ticket);
                        // Queued first, then looking: a permit another shard keeps spare from
                        // now on is granted here (see `offer_spare`).
                        if let Some(p) = pool.try_permit_elsewhere(home) {
                            return Poll::Ready(Ok(p));
                        }
                        Poll::Pending
                    }
                },
                Some(ticket) => permits.poll_ticket(ticket, cx),
            };
            if let Poll::Ready(shard) = granted {
                place.ticket = None; // taken: nothing to leave
                return Poll::Ready(Ok((shard, Permit { pool, shard })));
            }
            std::pin::Pin::new(&mut expiry).poll(cx).map(|()| Err(PoolError::Timeout))
        })
    }

    /// Gives a permit back to `shard`: to its longest waiting borrower, or else (kept spare) to one
    /// waiting in another shard.
    pub(super) fn give_back(&self, shard: usize) {
        if self.shards[shard].permits.give() == Given::Kept {
            self.offer_spare(shard);
        }
    }

    /// A permit `shard` keeps spare goes to the longest waiting borrower of another shard, if any.
    /// With the borrower's order (queued, then looking at the other shards' spare permits: see
    /// `wait_permit`), a permit kept spare while someone waits is never missed by both.
    pub(super) fn offer_spare(&self, shard: usize) {
        let n = self.shards.len();
        if n == 1 || self.waiting.load(Ordering::Relaxed) == 0 {
            return;
        }
        for other in (1..n).map(|k| (shard + k) % n) {
            if !self.shards[other].permits.has_waiters() {
                continue;
            }
            if !self.shards[shard].permits.try_take() {
                return; // taken meanwhile
            }
            if self.shards[other].permits.grant_from(shard) {
                return;
            }
            // Its waiters left meanwhile: the permit is this shard's again.
            if self.shards[shard].permits.give() != Given::Kept {
                return;
            }
        }
    }
}

/// A permit of `shard`, given back when dropped unless lent on (`forget`).
pub(super) struct Permit<'a> {
    pool: &'a Pool,
    shard: usize,
}

impl Permit<'_> {
    /// The loan holds it from here (see `Pooled`'s drop).
    pub(super) fn forget(self) {
        std::mem::forget(self);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.pool.give_back(self.shard);
    }
}

/// A borrower's place in a shard's queue while it waits for a permit; leaving it, with a permit
/// granted and not taken, gives that back.
struct Place<'a> {
    pool: &'a Pool,
    shard: usize,
    /// Queued (None: not yet, or its permit was taken).
    ticket: Option<u64>,
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket
            && let Some(granted) = self.pool.shards[self.shard].permits.leave(ticket)
        {
            self.pool.give_back(granted);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Given, Permits};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll, Wake, Waker};

    /// A waker that counts its wakes.
    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    fn waker() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count(AtomicUsize::new(0)));
        (c.clone(), Waker::from(c))
    }
    fn wakes(c: &Count) -> usize {
        c.0.load(Ordering::SeqCst)
    }

    #[test]
    fn permits_go_to_waiters_first_come_first_served() {
        let p = Permits::new(0, 1);
        let (_, w0) = waker();
        assert_eq!(p.enqueue(&w0), None, "an available permit is taken at once");
        assert!(!p.try_take());
        let (c1, w1) = waker();
        let (c2, w2) = waker();
        let t1 = p.enqueue(&w1).unwrap();
        let t2 = p.enqueue(&w2).unwrap();
        let cx1 = Context::from_waker(&w1);
        let cx2 = Context::from_waker(&w2);
        assert_eq!(p.poll_ticket(t1, &cx1), Poll::Pending);
        assert_eq!(p.give(), Given::Granted);
        assert_eq!((wakes(&c1), wakes(&c2)), (1, 0), "the first in line is woken");
        assert_eq!(p.poll_ticket(t1, &cx1), Poll::Ready(0));
        assert_eq!(p.poll_ticket(t2, &cx2), Poll::Pending);
        assert!(!p.try_take(), "a granted permit is not available to others");
        assert_eq!(p.give(), Given::Granted);
        assert_eq!(wakes(&c2), 1);
        assert_eq!(p.poll_ticket(t2, &cx2), Poll::Ready(0));
        assert_eq!(p.give(), Given::Kept, "nobody waits: kept");
        assert!(p.try_take());
    }

    #[test]
    fn a_waiter_that_leaves_is_passed_over_and_a_granted_one_gives_its_permit_back() {
        let p = Permits::new(0, 0);
        let (c, w): (Vec<_>, Vec<_>) = (0..4).map(|_| waker()).unzip();
        let t: Vec<u64> = w.iter().map(|w| p.enqueue(w).unwrap()).collect();
        assert_eq!(p.waiting(), 4);
        // The second leaves before its turn: the grant passes over it.
        assert_eq!(p.leave(t[1]), None);
        assert_eq!(p.give(), Given::Granted);
        assert_eq!(p.give(), Given::Granted);
        assert_eq!((wakes(&c[0]), wakes(&c[1]), wakes(&c[2])), (1, 0, 1));
        // The third was granted but leaves (its borrow was cancelled): it holds a permit.
        assert_eq!(p.leave(t[2]), Some(0), "a granted waiter that leaves must give its permit back");
        assert_eq!(p.give(), Given::Granted);
        assert_eq!(wakes(&c[3]), 1);
        assert_eq!(p.waiting(), 0);
        // Left waiters at the back go at once: nothing grows while nobody is granted.
        let (_, wx) = waker();
        for _ in 0..1000 {
            let t = p.enqueue(&wx).unwrap();
            assert_eq!(p.leave(t), None);
        }
        assert_eq!(p.lock().queue.len(), 0);
    }

    #[test]
    fn a_waiter_keeps_its_place_with_a_new_waker() {
        let p = Permits::new(0, 0);
        let (c_old, w_old) = waker();
        let (c_new, w_new) = waker();
        let t = p.enqueue(&w_old).unwrap();
        assert_eq!(p.poll_ticket(t, &Context::from_waker(&w_new)), Poll::Pending);
        assert_eq!(p.give(), Given::Granted);
        assert_eq!((wakes(&c_old), wakes(&c_new)), (0, 1), "the waker of the last poll is woken");
    }

    #[test]
    fn a_smaller_shard_takes_permits_back_as_they_return_and_a_larger_grants_to_waiters() {
        let p = Permits::new(0, 4);
        assert!(p.try_take());
        assert!(p.try_take());
        assert!(p.try_take());
        assert_eq!(p.lent(4), 3);
        // 4 -> 1: the one available goes now, two of the three lent when they return.
        assert_eq!(p.resize(4, 1), 0);
        assert_eq!(p.available(), 0);
        assert_eq!(p.lent(1), 3);
        assert_eq!(p.give(), Given::Retired);
        assert_eq!(p.give(), Given::Retired);
        assert_eq!(p.lent(1), 1);
        assert_eq!(p.give(), Given::Kept);
        assert!(p.try_take());
        // 1 -> 3 with a borrower waiting: it is granted one, the other is kept.
        let (c, w) = waker();
        let t = p.enqueue(&w).unwrap();
        assert_eq!(p.resize(1, 3), 1);
        assert_eq!(wakes(&c), 1);
        assert_eq!(p.poll_ticket(t, &Context::from_waker(&w)), Poll::Ready(0));
        assert_eq!(p.available(), 1);
        assert_eq!(p.lent(3), 2);
    }

    #[test]
    fn another_shards_spare_permit_goes_to_the_first_waiter_and_back_to_that_shard() {
        let p = Permits::new(0, 0);
        assert!(!p.grant_from(1), "nobody waits");
        let (c0, w0) = waker();
        let (c1, w1) = waker();
        let t0 = p.enqueue(&w0).unwrap();
        let t1 = p.enqueue(&w1).unwrap();
        assert!(p.has_waiters());
        assert!(p.grant_from(1));
        assert_eq!((wakes(&c0), wakes(&c1)), (1, 0));
        assert_eq!(p.poll_ticket(t0, &Context::from_waker(&w0)), Poll::Ready(1), "a permit of shard 1");
        assert!(p.grant_from(1));
        assert_eq!(p.leave(t1), Some(1), "left after the grant: shard 1's permit goes back to it");
        assert!(!p.has_waiters());
        assert!(p.lock().foreign.is_empty());
    }
}
