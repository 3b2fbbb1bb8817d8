//! The codec table: every codec, payload type and fmtp line roomcast and its test server use,
//! written once. The device sends H.264 constrained baseline + Opus and receives VP8 too;
//! devroom's SFU registers the H.264 profiles LiveKit clients offer, from the same builders.
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8,
};
use rtc::rtp_transceiver::rtp_sender::{RTCPFeedback, RTCRtpCodec};

/// Constrained baseline, level 3.1: what roomcast sends (LiveKit's PT 108 entry; the server's
/// matching ignores the level byte).
pub const H264_CONSTRAINED_BASELINE: &str = "42e01f";
/// Dynamic payload types as LiveKit's clients number them.
pub const PT_VP8: u8 = 96;
pub const PT_H264_DEVICE: u8 = 108;
pub const PT_OPUS: u8 = 111;

/// `packetization-mode=1` (FU-A and STAP-A), with the given `profile-level-id`.
pub fn h264_fmtp(profile_level_id: &str) -> String {
    format!("level-asymmetry-allowed=1;packetization-mode=1;profile-level-id={profile_level_id}")
}

pub const OPUS_FMTP: &str = "minptime=10;useinbandfec=1";

pub fn h264(profile_level_id: &str, rtcp_feedback: Vec<RTCPFeedback>) -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_H264.to_owned(),
        clock_rate: 90000,
        channels: 0,
        sdp_fmtp_line: h264_fmtp(profile_level_id),
        rtcp_feedback,
    }
}

pub fn vp8(rtcp_feedback: Vec<RTCPFeedback>) -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_VP8.to_owned(),
        clock_rate: 90000,
        channels: 0,
        sdp_fmtp_line: String::new(),
        rtcp_feedback,
    }
}

/// Opus in stereo signalling (as every WebRTC stack writes it), in-band FEC, no RED.
pub fn opus(rtcp_feedback: Vec<RTCPFeedback>) -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48000,
        channels: 2,
        sdp_fmtp_line: OPUS_FMTP.to_owned(),
        rtcp_feedback,
    }
}

fn feedback(entries: &[(&str, &str)]) -> Vec<RTCPFeedback> {
    entries
        .iter()
        .map(|(typ, parameter)| RTCPFeedback {
            typ: (*typ).into(),
            parameter: (*parameter).into(),
        })
        .collect()
}

/// What a video sender asks of its receivers: REMB/TWCC for bandwidth, FIR/PLI for keyframes,
/// NACK for loss.
pub fn video_feedback() -> Vec<RTCPFeedback> {
    feedback(&[
        ("goog-remb", ""),
        ("transport-cc", ""),
        ("ccm", "fir"),
        ("nack", ""),
        ("nack", "pli"),
    ])
}

pub fn audio_feedback() -> Vec<RTCPFeedback> {
    feedback(&[("transport-cc", "")])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_h264_is_constrained_baseline_packetization_mode_1() {
        let codec = h264(H264_CONSTRAINED_BASELINE, video_feedback());
        assert_eq!(
            codec.sdp_fmtp_line,
            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
        );
        assert!(codec
            .rtcp_feedback
            .iter()
            .any(|f| f.typ == "nack" && f.parameter == "pli"));
        assert_eq!((opus(vec![]).clock_rate, opus(vec![]).channels), (48000, 2));
    }
}
