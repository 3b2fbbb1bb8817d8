//! Hands inbound PLI/FIR to the application: the encoder on the device, the SFU in devroom.
//! REMB and receiver reports go through as well: the receiver's bandwidth estimate and the loss
//! it saw, which the device turns into the encoder's bitrate (`media::bitrate`).
//!
//! webrtc 0.21 stops inbound RTCP at the end of the interceptor chain unless an interceptor
//! marks a packet with `Attribute::DeliverToApplication` (webrtc `track_local/mod.rs`). Without
//! this a keyframe request never reaches the encoder (or devroom's SFU), so a new subscriber waits
//! for the publisher's next periodic keyframe (seconds) instead of ~0.3 s.

use std::collections::VecDeque;
use std::time::Instant;

use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;

/// Where the interceptor sits in the chain: last, so every other interceptor has already
/// seen the whole inbound RTCP before this one narrows it down.
pub const KEYFRAME_SLOT: usize = 14_000;

/// Marks inbound PLI, FIR, REMB and RR blocks for delivery to the application; drops other inbound RTCP
/// at this stage (the interceptors before it have acted on it already).
#[derive(Default)]
pub struct KeyframeRequestInterceptor {
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

/// Whether an RTCP packet asks for a keyframe.
pub fn is_keyframe_request(packet: &dyn rtc::rtcp::Packet) -> bool {
    let any = packet.as_any();
    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
}

/// The bitrate (bit/s) a REMB packet allows for `ssrc`, if it is one that covers it.
pub fn remb_bitrate_for(packet: &dyn rtc::rtcp::Packet, ssrc: u32) -> Option<u32> {
    let remb = packet
        .as_any()
        .downcast_ref::<ReceiverEstimatedMaximumBitrate>()?;
    if !remb.ssrcs.is_empty() && !remb.ssrcs.contains(&ssrc) {
        return None;
    }
    Some(remb.bitrate.clamp(0.0, u32::MAX as f32) as u32)
}

/// PLI, FIR and REMB: requests about the media SSRC they name.
fn is_request(packet: &dyn rtc::rtcp::Packet) -> bool {
    is_keyframe_request(packet) || packet.as_any().is::<ReceiverEstimatedMaximumBitrate>()
}

/// What of one inbound RTCP compound goes to the application, as separate messages. webrtc-rs
/// routes a message to one track, by the destination SSRC of its first packet. So the requests
/// go together (a compound's requests are about one stream), and every reception report block
/// goes alone, as a receiver report of its own: a browser's compound reports on the audio and
/// the video stream in one RR before its PLI, and delivered whole it would all reach the audio
/// track.
fn for_application(packets: &[Box<dyn rtc::rtcp::Packet>]) -> Vec<Vec<Box<dyn rtc::rtcp::Packet>>> {
    let requests: Vec<_> = packets
        .iter()
        .filter(|p| is_request(p.as_ref()))
        .cloned()
        .collect();
    let reports = packets
        .iter()
        .filter_map(|p| p.as_any().downcast_ref::<ReceiverReport>())
        .flat_map(|rr| {
            rr.reports.iter().map(|block| {
                vec![Box::new(ReceiverReport {
                    ssrc: rr.ssrc,
                    reports: vec![block.clone()],
                    ..Default::default()
                }) as Box<dyn rtc::rtcp::Packet>]
            })
        });
    (!requests.is_empty())
        .then_some(requests)
        .into_iter()
        .chain(reports)
        .collect()
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeRequestInterceptor {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        let Packet::Rtcp(packets) = &msg.message.packet else {
            self.read_queue.push_back(msg);
            return Ok(());
        };
        for packets in for_application(packets) {
            let mut out = TaggedPacket {
                now: msg.now,
                transport: msg.transport,
                message: Packet::Rtcp(packets).into(),
            };
            out.message.attributes = msg.message.attributes.clone();
            out.message.add(Attribute::DeliverToApplication);
            self.read_queue.push_back(out);
        }
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }
}

impl Interceptor for KeyframeRequestInterceptor {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remb_gives_the_bitrate_for_the_ssrcs_it_names() {
        let remb = ReceiverEstimatedMaximumBitrate {
            sender_ssrc: 1,
            bitrate: 750_000.0,
            ssrcs: vec![42, 43],
        };
        assert_eq!(remb_bitrate_for(&remb, 42), Some(750_000));
        assert_eq!(remb_bitrate_for(&remb, 7), None);
        assert!(!is_keyframe_request(&remb));
        let pli = PictureLossIndication {
            sender_ssrc: 1,
            media_ssrc: 42,
        };
        assert_eq!(remb_bitrate_for(&pli, 42), None);
    }

    #[test]
    fn requests_go_together_and_each_report_block_alone_so_each_reaches_its_own_track() {
        use rtc::rtcp::sender_report::SenderReport;
        // A browser's compound: one RR about audio (7) and video (42), then a PLI for video.
        let compound: Vec<Box<dyn rtc::rtcp::Packet>> = vec![
            Box::new(crate::media::bitrate::tests::receiver_report(&[
                (7, 0),
                (42, 30),
            ])),
            Box::new(PictureLossIndication {
                sender_ssrc: 1,
                media_ssrc: 42,
            }),
            Box::new(SenderReport::default()),
        ];
        let out = for_application(&compound);
        let destinations: Vec<Vec<u32>> = out.iter().map(|m| m[0].destination_ssrc()).collect();
        assert_eq!(destinations, vec![vec![42], vec![7], vec![42]]);
        assert!(is_keyframe_request(out[0][0].as_ref()));
        assert_eq!(out[0].len(), 1, "the sender report is dropped");
        assert_eq!(
            crate::media::bitrate::fraction_lost_for(out[2][0].as_ref(), 42),
            Some(30)
        );
        // Nothing for the application: nothing delivered.
        assert!(for_application(&[Box::new(SenderReport::default()) as Box<_>]).is_empty());
    }
}
