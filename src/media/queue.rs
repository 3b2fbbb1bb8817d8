//! The bounded hand-off between a capture thread and the network: when it is full, the oldest
//! frame goes, never the newest, because live media is worth less the older it is.
//!
//! Video frames depend on the ones before them, so dropping one also makes every following delta
//! undecodable up to the next keyframe. The queue drops those too (sending them would only show
//! the subscriber a corrupt picture) and, when no keyframe is already queued, says so: the
//! pipeline turns that into `request_keyframe()`, and deltas that arrive before the keyframe are
//! dropped on the way in. Audio frames are all independent and just go one at a time.
//!
//! Pure: no locks, no clock. The pipeline wraps it in a mutex with a wake-up for the consumer.
//! The storage is allocated once, at its capacity, and never grows.
use std::collections::VecDeque;

/// What a push did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pushed {
    /// Frames dropped by this push (the oldest, the deltas that depended on it, or the pushed
    /// frame itself while waiting for a keyframe).
    pub dropped: u32,
    /// The stream is broken until the next keyframe and none is queued: ask the encoder for an
    /// IDR now. Raised once per break, not again for every delta dropped while waiting.
    pub request_keyframe: bool,
}

#[derive(Debug)]
pub struct DropOldest<T> {
    /// Each frame with whether it is independently decodable.
    items: VecDeque<(T, bool)>,
    capacity: usize,
    /// A video frame was dropped and no keyframe has been accepted since.
    awaiting_keyframe: bool,
    dropped: u64,
}

impl<T> DropOldest<T> {
    pub fn new(capacity: usize) -> Self {
        assert!(capacity > 0, "a queue must hold at least one frame");
        Self {
            items: VecDeque::with_capacity(capacity),
            capacity,
            awaiting_keyframe: false,
            dropped: 0,
        }
    }

    /// Queue `item`. `independent` says whether a decoder can use it without the frames before
    /// it: a video keyframe, or any audio frame.
    pub fn push(&mut self, item: T, independent: bool) -> Pushed {
        let mut pushed = Pushed::default();
        if self.awaiting_keyframe {
            if !independent {
                pushed.dropped = 1;
                self.dropped += 1;
                return pushed;
            }
            self.awaiting_keyframe = false;
        }
        if self.items.len() >= self.capacity {
            // Drop the oldest, then whatever depended on it, up to the next independent frame.
            self.items.pop_front();
            pushed.dropped += 1;
            while matches!(self.items.front(), Some((_, false))) {
                self.items.pop_front();
                pushed.dropped += 1;
            }
            if self.items.is_empty() && !independent {
                // Nothing decodable is left and the new frame is a delta too: wait for an IDR.
                self.awaiting_keyframe = true;
                pushed.request_keyframe = true;
                pushed.dropped += 1;
                self.dropped += pushed.dropped as u64;
                return pushed;
            }
            self.dropped += pushed.dropped as u64;
        }
        // Never beyond capacity: either there was room, or the oldest just went.
        self.items.push_back((item, independent));
        pushed
    }

    pub fn pop(&mut self) -> Option<T> {
        self.items.pop_front().map(|(item, _)| item)
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Frames dropped since the queue was made.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    pub fn awaiting_keyframe(&self) -> bool {
        self.awaiting_keyframe
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audio_drops_only_the_oldest() {
        let mut q: DropOldest<u32> = DropOldest::new(3);
        for i in 0..3 {
            assert_eq!(q.push(i, true), Pushed::default());
        }
        let pushed = q.push(3, true);
        assert_eq!(pushed.dropped, 1);
        assert!(!pushed.request_keyframe);
        assert_eq!(q.len(), 3);
        assert_eq!(q.dropped(), 1);
        assert_eq!(
            [q.pop(), q.pop(), q.pop(), q.pop()],
            [Some(1), Some(2), Some(3), None]
        );
    }

    #[test]
    fn a_video_drop_with_no_keyframe_queued_requests_one_and_skips_deltas_until_it() {
        let mut q: DropOldest<&str> = DropOldest::new(3);
        q.push("K0", true);
        q.push("D1", false);
        q.push("D2", false);
        // Full: K0 goes, D1 and D2 depended on it, and D3 cannot be decoded either.
        let pushed = q.push("D3", false);
        assert_eq!(pushed.dropped, 4);
        assert!(pushed.request_keyframe);
        assert!(q.is_empty());
        assert!(q.awaiting_keyframe());
        // Deltas that come before the IDR are dropped on arrival, without asking again.
        assert_eq!(
            q.push("D4", false),
            Pushed {
                dropped: 1,
                request_keyframe: false
            }
        );
        // The IDR is accepted and the stream resumes.
        assert_eq!(q.push("K5", true), Pushed::default());
        assert_eq!(q.push("D6", false), Pushed::default());
        assert!(!q.awaiting_keyframe());
        assert_eq!([q.pop(), q.pop(), q.pop()], [Some("K5"), Some("D6"), None]);
        assert_eq!(q.dropped(), 5);
    }

    #[test]
    fn a_video_drop_stops_at_a_queued_keyframe_and_asks_for_nothing() {
        let mut q: DropOldest<&str> = DropOldest::new(4);
        for (f, key) in [("D0", false), ("D1", false), ("K2", true), ("D3", false)] {
            q.push(f, key);
        }
        let pushed = q.push("D4", false);
        // D0 went, D1 depended on it; K2 starts a decodable run.
        assert_eq!(pushed.dropped, 2);
        assert!(!pushed.request_keyframe);
        assert_eq!(
            [q.pop(), q.pop(), q.pop(), q.pop()],
            [Some("K2"), Some("D3"), Some("D4"), None]
        );
    }

    #[test]
    fn a_keyframe_arriving_at_a_full_queue_of_deltas_is_kept() {
        let mut q: DropOldest<&str> = DropOldest::new(2);
        q.push("D0", false);
        q.push("D1", false);
        let pushed = q.push("K2", true);
        assert_eq!(pushed.dropped, 2);
        assert!(!pushed.request_keyframe, "the new frame is the keyframe");
        assert_eq!([q.pop(), q.pop()], [Some("K2"), None]);
    }

    #[test]
    fn never_holds_more_than_its_capacity() {
        let mut q: DropOldest<u64> = DropOldest::new(8);
        for i in 0..10_000u64 {
            q.push(i, i % 30 == 0);
            assert!(q.len() <= q.capacity());
        }
        // Every frame pushed is either queued or counted as dropped.
        assert_eq!(q.len() as u64 + q.dropped(), 10_000);
    }
}
