//! A token bucket: `n` tokens, refilled at `n` per second; a request takes one or is over the
//! rate.

use std::time::Instant;

#[derive(Clone, Debug)]
pub struct TokenBucket {
    capacity: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket allowing `per_second` requests per second, in bursts of up to that many.
    pub fn new(per_second: u32) -> Self {
        let capacity = f64::from(per_second);
        TokenBucket {
            capacity,
            tokens: capacity,
            last: None,
        }
    }

    /// Takes a token for a request arriving at `now`; false when the bucket is empty.
    pub fn try_take(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.capacity).min(self.capacity);
        }
        self.last = Some(self.last.map_or(now, |last| last.max(now)));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut b = TokenBucket::new(4);
        // A burst of 4, then empty.
        assert!((0..4).all(|_| b.try_take(t0)));
        assert!(!b.try_take(t0));
        assert!(!b.try_take(at(100)));
        // 4 per second: one token every 250 ms (100 ms already accrued 0.4).
        assert!(!b.try_take(at(240)));
        assert!(b.try_take(at(260)));
        assert!(!b.try_take(at(400)));
        assert!(b.try_take(at(520)));
        // A long pause refills to the bucket size, not beyond.
        assert!((0..4).all(|_| b.try_take(at(60_000))));
        assert!(!b.try_take(at(60_000)));
    }

    #[test]
    fn one_per_second() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1);
        assert!(b.try_take(t0));
        assert!(!b.try_take(t0 + Duration::from_millis(999)));
        assert!(b.try_take(t0 + Duration::from_millis(2000)));
    }

    #[test]
    fn tolerates_a_clock_reading_from_before_the_last() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(1);
        let mut b = TokenBucket::new(1);
        assert!(b.try_take(later));
        // An earlier reading neither refills nor moves the clock back.
        assert!(!b.try_take(t0));
        assert!(!b.try_take(later));
        assert!(b.try_take(later + Duration::from_secs(1)));
    }
}
