//! A small bounded jitter buffer for one remote audio track, in RTP packets.
//!
//! Packets are kept in sequence-number order (16-bit numbers unwrapped to 64 bits, so a wrap
//! is just the next number). Playout starts once [`TARGET_DEPTH`] packets wait, which is 60 ms
//! at the 20 ms packets every LiveKit SDK sends: enough to absorb ordinary network jitter
//! without making a conversation feel late. From then on every 20 ms tick takes the next number:
//! the packet itself, or, when a later one is already here, a loss for the decoder to conceal.
//! A packet for a number already played (or given up on) is late and dropped; one already
//! waiting is a duplicate and dropped. The depth is capped at [`MAX_DEPTH`]: a burst beyond it
//! (a sender running fast, a network that held packets back) drops the oldest, so latency stays
//! bounded.
//!
//! An empty buffer while playing is first bridged: up to [`BRIDGE_TICKS`] ticks are concealed
//! without giving up on the next number, so a stall a little longer than the target depth (a
//! sender's start, a congested hop: 75 ms gaps show up on loopback) costs a concealed 20 ms
//! instead of silence, and the packets that then arrive together stay as extra depth against the
//! next stall (up to the cap). A buffer still dry after that is an underrun: playout waits for
//! the target depth again, which is also how a paused stream (DTX, mute) resumes cleanly.
//!
//! Pure: no clock, no decoder. The caller ticks it every 20 ms; tests drive it with simulated
//! sequences.
use bytes::Bytes;

/// Packets that must wait before playout (re)starts: 60 ms of 20 ms packets.
pub const TARGET_DEPTH: usize = 3;
/// Packets that may wait at most (160 ms of 20 ms packets); beyond it the oldest is dropped.
pub const MAX_DEPTH: usize = 8;
/// Ticks concealed while the buffer is dry before playout gives up and rebuffers (60 ms).
pub const BRIDGE_TICKS: u32 = 3;

/// What one tick yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// The next packet, in order.
    Packet(Bytes),
    /// The next packet is missing while later ones are here: conceal it (Opus PLC).
    Lost,
    /// Nothing to play: not started yet, or run dry. The source is silent.
    Waiting,
}

/// Why packets were dropped, and how often playout ran dry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Arrived after their turn had passed.
    pub late: u64,
    pub duplicates: u64,
    /// Dropped (oldest first) because the depth cap was reached.
    pub overflow: u64,
    /// Missing at their turn, concealed.
    pub lost: u64,
    /// Ticks concealed while the buffer was dry (a stall bridged).
    pub bridged: u64,
    /// The buffer stayed dry past the bridge: playout rebuffered.
    pub underruns: u64,
}

impl std::ops::AddAssign for JitterStats {
    fn add_assign(&mut self, o: Self) {
        self.late += o.late;
        self.duplicates += o.duplicates;
        self.overflow += o.overflow;
        self.lost += o.lost;
        self.bridged += o.bridged;
        self.underruns += o.underruns;
    }
}

#[derive(Debug)]
struct Slot {
    seq: u64,
    payload: Bytes,
}

#[derive(Debug, Default)]
pub struct JitterBuffer {
    /// Sorted by `seq`, oldest first. Fixed capacity: the hot path never allocates.
    slots: heapless::Vec<Slot, MAX_DEPTH>,
    /// The highest unwrapped sequence number seen, the reference for unwrapping the next.
    highest: Option<u64>,
    /// The number whose turn is next, once playing.
    next: Option<u64>,
    /// Everything below this has been played or given up on.
    floor: u64,
    /// Ticks concealed in a row while dry.
    dry_ticks: u32,
    stats: JitterStats,
}

impl JitterBuffer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// Packets waiting.
    pub fn depth(&self) -> usize {
        self.slots.len()
    }

    pub fn is_playing(&self) -> bool {
        self.next.is_some()
    }

    /// The 64-bit number for a 16-bit one: the candidate nearest the highest seen.
    fn unwrap_seq(&mut self, seq: u16) -> u64 {
        let Some(highest) = self.highest else {
            // Start well above zero so a reordered packet just before the first still unwraps.
            let first = (1 << 32) + u64::from(seq);
            self.highest = Some(first);
            return first;
        };
        let delta = seq.wrapping_sub(highest as u16) as i16;
        let ext = highest.wrapping_add_signed(i64::from(delta));
        if ext > highest {
            self.highest = Some(ext);
        }
        ext
    }

    pub fn push(&mut self, seq: u16, payload: Bytes) {
        let seq = self.unwrap_seq(seq);
        if seq < self.floor {
            self.stats.late += 1;
            return;
        }
        let at = match self.slots.binary_search_by_key(&seq, |s| s.seq) {
            Ok(_) => {
                self.stats.duplicates += 1;
                return;
            }
            Err(at) => at,
        };
        if self.slots.is_full() {
            if at == 0 {
                // Older than everything waiting in a full buffer: it would be dropped first.
                self.stats.overflow += 1;
                return;
            }
            let oldest = self.slots.remove(0);
            self.stats.overflow += 1;
            self.give_up_to(oldest.seq + 1);
            let _ = self.slots.insert(at - 1, Slot { seq, payload });
        } else {
            let _ = self.slots.insert(at, Slot { seq, payload });
        }
    }

    /// Numbers below `seq` will not be played: later arrivals for them are late.
    fn give_up_to(&mut self, seq: u64) {
        self.floor = self.floor.max(seq);
        if let Some(next) = self.next.as_mut() {
            *next = (*next).max(seq);
        }
    }

    /// One 20 ms tick.
    pub fn pop(&mut self) -> Next {
        let Some(next) = self.next else {
            if self.slots.len() < TARGET_DEPTH {
                return Next::Waiting;
            }
            return self.play_from(self.slots[0].seq);
        };
        match self.slots.first() {
            None if self.dry_ticks < BRIDGE_TICKS => {
                // Maybe late rather than gone: conceal, and keep waiting for `next`.
                self.dry_ticks += 1;
                self.stats.bridged += 1;
                Next::Lost
            }
            None => {
                self.stats.underruns += 1;
                self.next = None;
                self.dry_ticks = 0;
                Next::Waiting
            }
            Some(front) if front.seq == next => self.play_from(next),
            Some(_) => {
                // A gap at the head with later packets waiting: that number is lost.
                self.dry_ticks = 0;
                self.stats.lost += 1;
                self.give_up_to(next + 1);
                Next::Lost
            }
        }
    }

    fn play_from(&mut self, seq: u64) -> Next {
        let slot = self.slots.remove(0);
        debug_assert_eq!(slot.seq, seq);
        self.dry_ticks = 0;
        self.next = Some(seq + 1);
        self.floor = self.floor.max(seq + 1);
        Next::Packet(slot.payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(seq: u16) -> Bytes {
        Bytes::copy_from_slice(&seq.to_be_bytes())
    }

    fn played(next: &Next) -> Option<u16> {
        match next {
            Next::Packet(b) => Some(u16::from_be_bytes([b[0], b[1]])),
            _ => None,
        }
    }

    #[test]
    fn waits_for_the_target_depth_then_plays_in_order() {
        let mut jb = JitterBuffer::new();
        jb.push(10, pkt(10));
        jb.push(11, pkt(11));
        assert_eq!(
            jb.pop(),
            Next::Waiting,
            "two packets are below the 60 ms target"
        );
        jb.push(12, pkt(12));
        let out: Vec<_> = (0..3).map(|_| played(&jb.pop())).collect();
        assert_eq!(out, [Some(10), Some(11), Some(12)]);
    }

    #[test]
    fn reorders_by_sequence_number() {
        let mut jb = JitterBuffer::new();
        for s in [101, 100, 103, 102] {
            jb.push(s, pkt(s));
        }
        let out: Vec<_> = (0..4).map(|_| played(&jb.pop())).collect();
        assert_eq!(out, [Some(100), Some(101), Some(102), Some(103)]);
        assert_eq!(jb.stats(), JitterStats::default());
    }

    #[test]
    fn a_missing_packet_is_lost_and_its_late_arrival_dropped() {
        let mut jb = JitterBuffer::new();
        for s in [1, 2, 4, 5] {
            jb.push(s, pkt(s));
        }
        assert_eq!(played(&jb.pop()), Some(1));
        assert_eq!(played(&jb.pop()), Some(2));
        assert_eq!(jb.pop(), Next::Lost, "3 never came: conceal it");
        jb.push(3, pkt(3));
        assert_eq!(played(&jb.pop()), Some(4));
        assert_eq!(played(&jb.pop()), Some(5));
        let stats = jb.stats();
        assert_eq!((stats.lost, stats.late), (1, 1));
    }

    #[test]
    fn duplicates_and_already_played_packets_are_dropped() {
        let mut jb = JitterBuffer::new();
        for s in [7, 8, 9, 9] {
            jb.push(s, pkt(s));
        }
        assert_eq!(played(&jb.pop()), Some(7));
        jb.push(7, pkt(7));
        assert_eq!(played(&jb.pop()), Some(8));
        assert_eq!(played(&jb.pop()), Some(9));
        let stats = jb.stats();
        assert_eq!((stats.duplicates, stats.late), (1, 1));
    }

    #[test]
    fn the_depth_is_capped_by_dropping_the_oldest() {
        let mut jb = JitterBuffer::new();
        for s in 0..(MAX_DEPTH as u16 + 4) {
            jb.push(s, pkt(s));
        }
        assert_eq!(jb.depth(), MAX_DEPTH);
        assert_eq!(jb.stats().overflow, 4);
        // Playout goes on from the oldest kept, and the dropped ones count as late if they
        // show up again.
        assert_eq!(played(&jb.pop()), Some(4));
        jb.push(2, pkt(2));
        assert_eq!(jb.stats().late, 1);
    }

    #[test]
    fn an_overflow_while_playing_skips_past_the_dropped() {
        let mut jb = JitterBuffer::new();
        for s in 0..3 {
            jb.push(s, pkt(s));
        }
        assert_eq!(played(&jb.pop()), Some(0));
        for s in 1..=(MAX_DEPTH as u16 + 2) {
            jb.push(s, pkt(s));
        }
        // 1..=8 filled the cap; 9 and 10 pushed out 1 and 2.
        assert_eq!(jb.stats().overflow, 2);
        assert_eq!(played(&jb.pop()), Some(3));
    }

    /// A buffer that played 0, 1 and 2 and has nothing left.
    fn played_dry() -> JitterBuffer {
        let mut jb = JitterBuffer::new();
        for s in 0..3 {
            jb.push(s, pkt(s));
        }
        for s in 0..3 {
            assert_eq!(played(&jb.pop()), Some(s));
        }
        jb
    }

    #[test]
    fn a_short_stall_is_bridged_without_losing_its_packets() {
        let mut jb = played_dry();
        // 3 is 40 ms late: two ticks are concealed, then it and its followers play in order.
        assert_eq!(jb.pop(), Next::Lost);
        assert_eq!(jb.pop(), Next::Lost);
        for s in 3..6 {
            jb.push(s, pkt(s));
        }
        let out: Vec<_> = (0..3).map(|_| played(&jb.pop())).collect();
        assert_eq!(out, [Some(3), Some(4), Some(5)]);
        let stats = jb.stats();
        assert_eq!((stats.bridged, stats.lost, stats.underruns), (2, 0, 0));
    }

    #[test]
    fn running_dry_past_the_bridge_is_an_underrun_and_rebuffers() {
        let mut jb = played_dry();
        for _ in 0..BRIDGE_TICKS {
            assert_eq!(jb.pop(), Next::Lost);
        }
        assert_eq!(jb.pop(), Next::Waiting);
        assert_eq!(jb.stats().underruns, 1);
        assert!(!jb.is_playing());
        jb.push(3, pkt(3));
        assert_eq!(jb.pop(), Next::Waiting, "rebuffering to the target depth");
        jb.push(4, pkt(4));
        jb.push(5, pkt(5));
        assert_eq!(played(&jb.pop()), Some(3));
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut jb = JitterBuffer::new();
        for s in [65534, 0, 65535, 1] {
            jb.push(s, pkt(s));
        }
        let out: Vec<_> = (0..4).map(|_| played(&jb.pop())).collect();
        assert_eq!(out, [Some(65534), Some(65535), Some(0), Some(1)]);
    }
}
