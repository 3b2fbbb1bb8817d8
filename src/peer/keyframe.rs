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
use rtc::sansio::Protocol;
use rtc::shared::error::Error;

/// Where the interceptor sits in the chain: last, so every other interceptor has already
/// seen the whole inbound RTCP before this one narrows it down.
pub const KEYFRAME_SLOT: usize = 14_000;

/// Marks inbound PLI, FIR, REMB and RR for delivery to the application; drops other inbound RTCP
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

fn for_application(packet: &dyn rtc::rtcp::Packet) -> bool {
    let any = packet.as_any();
    is_keyframe_request(packet)
        || any.is::<ReceiverEstimatedMaximumBitrate>()
        || any.is::<rtc::rtcp::receiver_report::ReceiverReport>()
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeRequestInterceptor {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            let requests: Vec<Box<dyn rtc::rtcp::Packet>> = packets
                .iter()
                .filter(|packet| for_application(packet.as_ref()))
                .cloned()
                .collect();
            if requests.is_empty() {
                return Ok(());
            }
            msg.message.packet = Packet::Rtcp(requests);
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.read_queue.push_back(msg);
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
        assert!(for_application(&remb));
        assert!(!is_keyframe_request(&remb));
        let pli = PictureLossIndication {
            sender_ssrc: 1,
            media_ssrc: 42,
        };
        assert_eq!(remb_bitrate_for(&pli, 42), None);
        assert!(for_application(&pli));
        // Receiver reports carry the loss the bitrate controller reads.
        assert!(for_application(
            &rtc::rtcp::receiver_report::ReceiverReport::default()
        ));
        assert!(!for_application(
            &rtc::rtcp::sender_report::SenderReport::default()
        ));
    }
}
