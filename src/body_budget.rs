//! Request bodies held in the Wasm VM, and the budget that bounds them.
//!
//! The relay holds each write's body until its end (the signature covers its hash, and the
//! resource checks read it). A VM has at most 1 GiB of memory (Envoy's V8 limit), and running out
//! traps it, so the bytes held by all the requests of one worker are bounded by a budget, checked
//! *before* the host copies a chunk into the VM. Room grows with the bytes that actually arrived,
//! never from a declared `Content-Length` alone (a client can declare 8 MiB and send 100 bytes),
//! and an allocation the VM cannot make is refused rather than aborting.

use std::cell::Cell;
use std::rc::Rc;

/// One worker's budget: bytes held by request bodies now, and the most it may hold.
#[derive(Debug)]
pub struct Budget {
    limit: usize,
    held: Cell<usize>,
}

impl Budget {
    pub fn new(limit: usize) -> Rc<Budget> {
        Rc::new(Budget {
            limit,
            held: Cell::new(0),
        })
    }

    /// Bytes held now by every body of this worker.
    pub fn held(&self) -> usize {
        self.held.get()
    }

    /// Whether `more` bytes fit beside what is held.
    fn fits(&self, more: usize) -> bool {
        self.held
            .get()
            .checked_add(more)
            .is_some_and(|total| total <= self.limit)
    }

    /// A body's charge changes from `old` to `new` bytes.
    fn recharge(&self, old: usize, new: usize) {
        let held = self.held.get().saturating_sub(old).saturating_add(new);
        self.held.set(held);
    }
}

/// Why a chunk could not be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The worker's budget is spent by other requests in flight: try again later.
    Budget,
    /// The VM could not allocate the room.
    Memory,
}

/// One request's body as it arrives; what it holds is charged to the worker's budget until it is
/// dropped (answered, forwarded, or the client went away).
#[derive(Debug)]
pub struct Body {
    bytes: Vec<u8>,
    budget: Rc<Budget>,
    /// Bytes charged: the capacity of `bytes`.
    charged: usize,
}

impl Body {
    pub fn new(budget: Rc<Budget>) -> Body {
        Body {
            bytes: Vec::new(),
            budget,
            charged: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.bytes
    }

    /// Makes room for the body to reach `total` bytes, before the host copies the new chunk
    /// into the VM: refused when the chunk (while it is copied) and the body's growth would not
    /// fit in the worker's budget. Growth doubles (amortised), never below what is needed and
    /// never past `most` (the declared length, or the relay's body limit without one).
    pub fn prepare(&mut self, total: usize, most: usize) -> Result<(), Refused> {
        let chunk = total.saturating_sub(self.bytes.len());
        let capacity = self.bytes.capacity();
        // The first chunk becomes the body as the host hands it over: no copy, no growth.
        let new_capacity = if self.bytes.is_empty() || total <= capacity {
            capacity
        } else {
            capacity.saturating_mul(2).clamp(total, most.max(total))
        };
        let growth = new_capacity - capacity;
        if !self.budget.fits(growth.saturating_add(chunk)) {
            return Err(Refused::Budget);
        }
        if growth > 0 {
            self.bytes
                .try_reserve_exact(new_capacity - self.bytes.len())
                .map_err(|_| Refused::Memory)?;
            self.charge();
        }
        Ok(())
    }

    /// Appends a chunk the host copied in after [`Body::prepare`] made room for it.
    pub fn push(&mut self, chunk: Vec<u8>) {
        if self.bytes.is_empty() {
            self.bytes = chunk;
        } else {
            self.bytes.extend_from_slice(&chunk);
        }
        self.charge();
    }

    /// Charges what the body really holds (the allocator may round up).
    fn charge(&mut self) {
        let capacity = self.bytes.capacity();
        self.budget.recharge(self.charged, capacity);
        self.charged = capacity;
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        self.budget.recharge(self.charged, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1024 * 1024;

    #[test]
    fn a_declared_length_alone_reserves_nothing() {
        let budget = Budget::new(10 * MIB);
        let mut body = Body::new(Rc::clone(&budget));
        // 8 MiB declared, 100 bytes sent.
        body.prepare(100, 8 * MIB).unwrap();
        body.push(vec![b'x'; 100]);
        assert_eq!(budget.held(), 100);
        body.prepare(300, 8 * MIB).unwrap();
        body.push(vec![b'y'; 200]);
        assert_eq!(body.len(), 300);
        assert!(
            budget.held() >= 300 && budget.held() <= 600,
            "{}",
            budget.held()
        );
        drop(body);
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn chunks_are_held_in_order() {
        let budget = Budget::new(MIB);
        let mut body = Body::new(Rc::clone(&budget));
        assert!(body.is_empty());
        assert_eq!(body.as_slice(), b"");
        body.prepare(3, MIB).unwrap();
        body.push(b"{\"a".to_vec());
        assert!(!body.is_empty());
        body.prepare(7, MIB).unwrap();
        body.push(b"\":1}".to_vec());
        body.prepare(7, MIB).unwrap();
        body.push(Vec::new());
        assert_eq!(body.as_slice(), b"{\"a\":1}");
        assert_eq!(body.len(), 7);
    }

    #[test]
    fn growth_doubles_up_to_the_declared_length() {
        let budget = Budget::new(100 * MIB);
        let mut body = Body::new(Rc::clone(&budget));
        let declared = 5 * MIB;
        let mut sent = 0;
        let mut reallocations = 0;
        while sent < declared {
            let next = (sent + 64 * 1024).min(declared);
            let before = body.as_slice().as_ptr();
            body.prepare(next, declared).unwrap();
            body.push(vec![0; next - sent]);
            reallocations += usize::from(before != body.as_slice().as_ptr());
            sent = next;
        }
        assert_eq!(body.len(), declared);
        assert!(reallocations <= 8, "{reallocations}");
        // Never more room than declared (the allocator may round up a little).
        assert!(budget.held() < declared + 4096, "{}", budget.held());
    }

    #[test]
    fn without_a_declared_length_growth_still_doubles() {
        let budget = Budget::new(100 * MIB);
        let mut body = Body::new(Rc::clone(&budget));
        let mut reallocations = 0;
        for n in 1..=128 {
            let before = body.as_slice().as_ptr();
            body.prepare(n * 16 * 1024, 8 * MIB).unwrap();
            body.push(vec![0; 16 * 1024]);
            reallocations += usize::from(before != body.as_slice().as_ptr());
        }
        assert_eq!(body.len(), 2 * MIB);
        assert!(reallocations <= 9, "{reallocations}");
    }

    #[test]
    fn the_budget_is_shared_and_given_back() {
        let budget = Budget::new(MIB);
        let mut a = Body::new(Rc::clone(&budget));
        a.prepare(600 * 1024, MIB).unwrap();
        a.push(vec![0; 600 * 1024]);
        let mut b = Body::new(Rc::clone(&budget));
        // Does not fit beside a: refused before anything is copied in.
        assert_eq!(b.prepare(600 * 1024, MIB), Err(Refused::Budget));
        assert!(b.is_empty());
        b.prepare(300 * 1024, MIB).unwrap();
        b.push(vec![0; 300 * 1024]);
        // a's next chunk would need a's growth too.
        assert_eq!(a.prepare(700 * 1024, MIB), Err(Refused::Budget));
        drop(a);
        assert_eq!(budget.held(), 300 * 1024);
        drop(b);
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn an_impossible_allocation_is_refused_not_aborted() {
        let budget = Budget::new(usize::MAX);
        let mut body = Body::new(Rc::clone(&budget));
        body.prepare(10, 10).unwrap();
        body.push(vec![0; 10]);
        assert_eq!(
            body.prepare(usize::MAX / 2, usize::MAX / 2),
            Err(Refused::Memory)
        );
        assert_eq!(budget.held(), 10);
    }
}
