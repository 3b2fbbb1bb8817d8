//! The video bitrate decision: what the far end reports about our stream → the encoder's target,
//! within `[video] min_bitrate`/`max_bitrate`.
//!
//! What a LiveKit server sends a publisher: an RTCP receiver report per track about once a
//! second (livekit `pkg/sfu/buffer` `getRTCPReceiverReport`), whose fraction lost is the larger of
//! the loss the SFU saw and the loss it proxies from subscribers; TWCC feedback (LiveKit's
//! `TransportWideCCResponder`) for packets that carry transport-wide sequence numbers; REMB only
//! in its single-PC setup. This controller uses the receiver reports' loss (and REMB, which sets
//! the target and caps increases, when it comes). TWCC is not used: our packets carry no
//! transport-wide numbers (webrtc-rs' TWCC sender interceptor is not installed). webrtc-rs 0.21
//! has a GCC estimator for it (`configure_congestion_control`), but it brings a pacer, which adds
//! queueing delay to every frame; that trade has not been measured here.
//!
//! The rule is loss-based AIMD, after GCC's loss controller (draft-ietf-rmcat-gcc §6): above
//! [`HIGH_LOSS`] the target drops by half the loss fraction; below [`LOW_LOSS`] it rises by
//! [`INCREASE`]; in between it holds. The thresholds are lower than GCC's 10 % and 2 % because
//! LiveKit's loss is what is left after retransmission (a packet NACK recovered in time counts
//! as received): random loss that NACK repairs reports nothing, and what does get reported is
//! loss the picture shows. Measured against livekit-server with a policed uplink (suite 56's
//! uplink case): with GCC's thresholds the target settled where the reports said 5–9 % and the
//! subscriber decoded no picture at all, since every keyframe lost a packet.
//!
//! The target moves at most once per [`MIN_CHANGE_INTERVAL`], and only goes up again
//! [`HOLD_AFTER_DECREASE`] after a decrease, so a link at its limit settles instead of swinging
//! every report. A decrease starts from what was really sent when that is
//! less than the target (GCC, too, backs off from the measured rate): an encoder whose picture
//! needs less than its target would otherwise spend the first seconds of a congestion lowering a
//! target it was not using. Pure: the caller passes the time and the bytes sent, tests simulate
//! both.
use super::pipeline::BitrateLimits;
use std::time::{Duration, Instant};

/// Loss left after retransmission above this (fraction of packets) means the uplink is over its
/// capacity: back off. 6/256 and up.
pub const HIGH_LOSS: f64 = 0.02;
/// Below this the link is clean: probe upwards. 0 or 1 packet in 256.
pub const LOW_LOSS: f64 = 0.005;
/// How much a clean report raises the target: 5 %, about +2.5 Mbit/s a minute from 1 Mbit/s.
pub const INCREASE: f64 = 0.05;
/// The target changes at most this often. LiveKit reports about once a second, so a report
/// that still describes the stream before the last change is not acted on twice.
pub const MIN_CHANGE_INTERVAL: Duration = Duration::from_secs(1);
/// After a decrease, no increase for this long: probing straight back into the loss that just
/// happened would oscillate.
pub const HOLD_AFTER_DECREASE: Duration = Duration::from_secs(4);

#[derive(Debug, Clone)]
pub struct LossController {
    limits: BitrateLimits,
    target: u32,
    /// The receiver's own estimate (REMB), when it sent one: increases stop there.
    ceiling: Option<u32>,
    last_change: Option<Instant>,
    last_decrease: Option<Instant>,
    /// What the encoder's output really went out at lately (bit/s), when measured.
    sent: Option<u32>,
}

impl LossController {
    /// Starts at `start_bps` (the encoder's configured bitrate), clamped to `limits`.
    pub fn new(limits: BitrateLimits, start_bps: u32) -> Self {
        Self {
            limits,
            target: limits.clamp(start_bps),
            ceiling: None,
            last_change: None,
            last_decrease: None,
            sent: None,
        }
    }

    /// The rate the video really went out at over the last interval (see [`SentRate`]).
    pub fn on_sent_rate(&mut self, bps: u32) {
        self.sent = Some(bps);
    }

    pub fn target(&self) -> u32 {
        self.target
    }

    /// A receiver report about our stream: `fraction_lost` is RTCP's 8-bit fraction (lost/256).
    /// Returns the new target when it changed.
    pub fn on_receiver_report(&mut self, fraction_lost: u8, now: Instant) -> Option<u32> {
        if self
            .last_change
            .is_some_and(|at| now.duration_since(at) < MIN_CHANGE_INTERVAL)
        {
            return None;
        }
        let loss = f64::from(fraction_lost) / 256.0;
        let (next, decrease) = if loss > HIGH_LOSS {
            let base = self.sent.map_or(self.target, |sent| sent.min(self.target));
            (f64::from(base) * (1.0 - 0.5 * loss), true)
        } else if loss < LOW_LOSS {
            if self
                .last_decrease
                .is_some_and(|at| now.duration_since(at) < HOLD_AFTER_DECREASE)
            {
                return None;
            }
            (f64::from(self.target) * (1.0 + INCREASE), false)
        } else {
            return None;
        };
        let mut next = self.limits.clamp(next.round() as u32);
        if decrease {
            self.last_decrease = Some(now);
        } else {
            // Probing stops at the receiver's estimate; it never pushes the target down.
            next = next.min(self.ceiling.unwrap_or(u32::MAX).max(self.target));
        }
        self.change_to(next, now)
    }

    /// A REMB: the receiver's estimate of what it can take. It sets the target at once (within
    /// the limits) and caps later increases.
    pub fn on_remb(&mut self, bps: u32, now: Instant) -> Option<u32> {
        self.ceiling = Some(bps);
        let next = self.limits.clamp(bps);
        if next < self.target {
            self.last_decrease = Some(now);
        }
        self.change_to(next, now)
    }

    fn change_to(&mut self, next: u32, now: Instant) -> Option<u32> {
        if next == self.target {
            return None;
        }
        self.target = next;
        self.last_change = Some(now);
        Some(next)
    }
}

/// The rate of a growing byte counter, measured between the times it is read (at each receiver
/// report, about once a second).
#[derive(Debug, Default)]
pub struct SentRate {
    last: Option<(Instant, u64)>,
}

impl SentRate {
    /// Below this a reading is too short to say anything; it waits for the next.
    const MIN_INTERVAL: Duration = Duration::from_millis(250);

    /// The bit/s since the previous reading, or `None` on the first one or one too soon.
    pub fn sample(&mut self, total_bytes: u64, now: Instant) -> Option<u32> {
        let Some((then, bytes)) = self.last else {
            self.last = Some((now, total_bytes));
            return None;
        };
        let elapsed = now.duration_since(then);
        if elapsed < Self::MIN_INTERVAL {
            return None;
        }
        self.last = Some((now, total_bytes));
        let bps = bits_per_second(total_bytes.saturating_sub(bytes), elapsed);
        Some(u32::try_from(bps).unwrap_or(u32::MAX))
    }
}

/// `bytes` over `interval` as bit/s (0 for an empty interval): the rate congestion control
/// starts a decrease from, and `media_stats`' `sent_bps`.
pub fn bits_per_second(bytes: u64, interval: Duration) -> u64 {
    let ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return 0;
    }
    bytes.saturating_mul(8_000) / ms
}

/// The fraction lost (of 256) that an RTCP receiver report gives for `ssrc`. Only receiver
/// reports: the server sends nothing else on the publisher connection, and sender reports on the
/// subscriber one are about other streams.
pub fn fraction_lost_for(packet: &dyn rtc::rtcp::Packet, ssrc: u32) -> Option<u8> {
    let rr = packet
        .as_any()
        .downcast_ref::<rtc::rtcp::receiver_report::ReceiverReport>()?;
    rr.reports
        .iter()
        .find(|r| r.ssrc == ssrc)
        .map(|r| r.fraction_lost)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const LIMITS: BitrateLimits = BitrateLimits {
        min_bps: 300_000,
        max_bps: 2_000_000,
    };

    /// Percent loss as RTCP's fraction of 256.
    fn lost(percent: u32) -> u8 {
        (percent * 256 / 100) as u8
    }

    /// Feeds one report a second, `count` times, from `t`; the targets after each.
    fn reports(c: &mut LossController, t: &mut Instant, percent: u32, count: usize) -> Vec<u32> {
        (0..count)
            .map(|_| {
                *t += Duration::from_secs(1);
                c.on_receiver_report(lost(percent), *t);
                c.target()
            })
            .collect()
    }

    #[test]
    fn heavy_loss_backs_off_by_half_the_loss() {
        let mut t = Instant::now();
        let mut c = LossController::new(LIMITS, 1_000_000);
        t += Duration::from_secs(1);
        // 20 % lost (51/256 = 19.9 %): 1 Mbit/s × (1 − 0.0996).
        assert_eq!(c.on_receiver_report(lost(20), t), Some(900_391));
    }

    #[test]
    fn a_decrease_starts_from_the_rate_really_sent_when_that_is_lower() {
        let mut t = Instant::now();
        let mut c = LossController::new(LIMITS, 1_000_000);
        // The picture needs only 600 kbit/s of its 1 Mbit/s.
        c.on_sent_rate(600_000);
        t += Duration::from_secs(1);
        // 20 % lost: 600 kbit/s × (1 − 0.0996), not 1 Mbit/s × the same.
        assert_eq!(c.on_receiver_report(lost(20), t), Some(540_234));
        // Sending more than the target (a keyframe burst) does not raise the base.
        c.on_sent_rate(2_000_000);
        t += Duration::from_secs(1);
        assert_eq!(c.on_receiver_report(lost(20), t), Some(486_422));
    }

    #[test]
    fn the_sent_rate_is_the_counter_growth_over_the_time_between_readings() {
        let mut rate = SentRate::default();
        let t = Instant::now();
        assert_eq!(rate.sample(1_000, t), None, "the first reading only starts");
        assert_eq!(
            rate.sample(1_100, t + Duration::from_millis(100)),
            None,
            "too soon"
        );
        // 125 000 bytes in 2 s.
        assert_eq!(
            rate.sample(126_000, t + Duration::from_secs(2)),
            Some(500_000)
        );
        assert_eq!(rate.sample(126_000, t + Duration::from_secs(3)), Some(0));
    }

    #[test]
    fn sent_bytes_become_bits_per_second_over_the_interval() {
        assert_eq!(bits_per_second(250_000, Duration::from_secs(2)), 1_000_000);
        assert_eq!(bits_per_second(1_500, Duration::from_millis(1_500)), 8_000);
        assert_eq!(bits_per_second(1_000, Duration::ZERO), 0);
    }

    #[test]
    fn clean_reports_probe_up_five_percent_a_second_to_the_maximum() {
        let mut t = Instant::now();
        let mut c = LossController::new(LIMITS, 1_000_000);
        let targets = reports(&mut c, &mut t, 0, 20);
        assert_eq!(&targets[..3], &[1_050_000, 1_102_500, 1_157_625]);
        assert_eq!(*targets.last().unwrap(), 2_000_000, "{targets:?}");
        assert!(targets.windows(2).all(|w| w[1] >= w[0]));
    }

    #[test]
    fn moderate_loss_holds_the_target() {
        let mut t = Instant::now();
        let mut c = LossController::new(LIMITS, 1_000_000);
        // 1 % (2/256): between the thresholds.
        assert_eq!(reports(&mut c, &mut t, 1, 10), vec![1_000_000; 10]);
    }

    #[test]
    fn the_target_stays_within_the_limits() {
        let mut t = Instant::now();
        let mut c = LossController::new(LIMITS, 5_000_000);
        assert_eq!(c.target(), 2_000_000, "the start is clamped too");
        let down = reports(&mut c, &mut t, 50, 30);
        assert_eq!(*down.last().unwrap(), 300_000);
        assert!(down.iter().all(|&b| b >= 300_000));
        let up = reports(&mut c, &mut t, 0, 60);
        assert_eq!(*up.last().unwrap(), 2_000_000);
    }

    #[test]
    fn reports_faster_than_a_second_change_the_target_at_most_once_a_second() {
        let mut t = Instant::now();
        let mut c = LossController::new(LIMITS, 1_000_000);
        let mut changes = Vec::new();
        // Loss and clean alternate every 100 ms for a minute: a flapping link.
        for i in 0..600u32 {
            t += Duration::from_millis(100);
            let percent = if i % 2 == 0 { 30 } else { 0 };
            if c.on_receiver_report(lost(percent), t).is_some() {
                changes.push(t);
            }
        }
        assert!(!changes.is_empty());
        assert!(changes
            .windows(2)
            .all(|w| w[1].duration_since(w[0]) >= MIN_CHANGE_INTERVAL));
    }

    #[test]
    fn after_a_decrease_the_target_holds_before_probing_again() {
        let mut t = Instant::now();
        let mut c = LossController::new(LIMITS, 1_000_000);
        let after_loss = reports(&mut c, &mut t, 20, 1)[0];
        // Clean reports at 1..=3 s after the decrease: no increase yet.
        assert_eq!(reports(&mut c, &mut t, 0, 3), vec![after_loss; 3]);
        // From 4 s on it probes again.
        assert!(reports(&mut c, &mut t, 0, 1)[0] > after_loss);
    }

    #[test]
    fn remb_sets_the_target_and_caps_probing() {
        let mut t = Instant::now();
        let mut c = LossController::new(LIMITS, 1_000_000);
        t += Duration::from_secs(1);
        assert_eq!(c.on_remb(1_200_000, t), Some(1_200_000));
        let up = reports(&mut c, &mut t, 0, 30);
        assert_eq!(*up.last().unwrap(), 1_200_000, "probing stops at REMB");
        // Loss still backs off below it.
        assert!(reports(&mut c, &mut t, 30, 1)[0] < 1_200_000);
        // A REMB below the minimum is clamped to it.
        t += Duration::from_secs(1);
        c.on_remb(10_000, t);
        assert_eq!(c.target(), 300_000);
    }

    /// A receiver report from SSRC 1 with a block per `(ssrc, fraction_lost)`.
    pub(crate) fn receiver_report(
        blocks: &[(u32, u8)],
    ) -> rtc::rtcp::receiver_report::ReceiverReport {
        rtc::rtcp::receiver_report::ReceiverReport {
            ssrc: 1,
            reports: blocks
                .iter()
                .map(
                    |&(ssrc, fraction_lost)| rtc::rtcp::reception_report::ReceptionReport {
                        ssrc,
                        fraction_lost,
                        ..Default::default()
                    },
                )
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn the_loss_of_our_ssrc_is_read_from_a_receiver_report() {
        let rr = receiver_report(&[(7, 3), (42, 64)]);
        assert_eq!(fraction_lost_for(&rr, 42), Some(64));
        assert_eq!(fraction_lost_for(&rr, 99), None);
        let pli = rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication {
            sender_ssrc: 1,
            media_ssrc: 42,
        };
        assert_eq!(fraction_lost_for(&pli, 42), None);
    }
}
