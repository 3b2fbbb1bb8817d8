//! The little SDP reading signalling needs: per m-section kind, mid, direction and the msid
//! track id (which must equal the AddTrackRequest cid, as LiveKit's `populateSdpCid`).
//! Pure text parsing, no SDP library: devroom only looks, the SFU does the real negotiation.

/// One m-section of an offer, as far as signalling cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaSection {
    /// "audio", "video" or "application".
    pub kind: String,
    pub mid: String,
    /// "sendrecv", "sendonly", "recvonly", "inactive" (sendrecv if absent).
    pub direction: String,
    /// The track id of `a=msid:<stream> <track>` (or `a=ssrc:N msid:<stream> <track>`).
    pub msid_track_id: Option<String>,
}

impl MediaSection {
    /// The client sends media in this section.
    pub fn client_sends(&self) -> bool {
        self.direction == "sendonly" || self.direction == "sendrecv"
    }
    /// The client can receive media in this section (the SFU may attach a forwarded track).
    pub fn client_receives(&self) -> bool {
        self.direction == "recvonly" || self.direction == "sendrecv" || self.direction == "inactive"
    }
}

pub fn media_sections(sdp: &str) -> Vec<MediaSection> {
    let mut out: Vec<MediaSection> = Vec::new();
    for line in sdp.lines().map(str::trim_end) {
        if let Some(rest) = line.strip_prefix("m=") {
            let kind = rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
            out.push(MediaSection {
                kind,
                mid: String::new(),
                direction: "sendrecv".into(),
                msid_track_id: None,
            });
            continue;
        }
        let Some(section) = out.last_mut() else {
            continue;
        };
        if let Some(mid) = line.strip_prefix("a=mid:") {
            section.mid = mid.trim().to_string();
        } else if let Some(msid) = line.strip_prefix("a=msid:") {
            if let Some(track) = msid.split_whitespace().nth(1) {
                section.msid_track_id = Some(track.to_string());
            }
        } else if let Some(ssrc) = line.strip_prefix("a=ssrc:") {
            if section.msid_track_id.is_none() {
                if let Some(pos) = ssrc.find("msid:") {
                    if let Some(track) = ssrc[pos + 5..].split_whitespace().nth(1) {
                        section.msid_track_id = Some(track.to_string());
                    }
                }
            }
        } else if let Some(dir) = line.strip_prefix("a=") {
            if matches!(dir, "sendrecv" | "sendonly" | "recvonly" | "inactive") {
                section.direction = dir.to_string();
            }
        }
    }
    out
}

/// The kind ("audio"/"video") of the section carrying `mid`.
pub fn kind_of_mid(sdp: &str, mid: &str) -> Option<String> {
    media_sections(sdp)
        .into_iter()
        .find(|s| s.mid == mid)
        .map(|s| s.kind)
}

/// Reorder the payload types of the m-sections with these mids so `codec` (an rtpmap encoding
/// name such as "H264", case-insensitive) comes first. The SFU answers in the offer's order, so this
/// is how devroom honours the codec an AddTrackRequest asked for, as the Go server does with codec
/// preferences in its answer (livekit-client lists VP8 first whatever codec it publishes).
pub fn prefer_codec(sdp: &str, mids: &[String], codec: &str) -> String {
    let eol = if sdp.contains("\r\n") { "\r\n" } else { "\n" };
    let lines: Vec<&str> = sdp.lines().collect();
    // Section boundaries: indexes of m= lines.
    let starts: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with("m="))
        .map(|(i, _)| i)
        .collect();
    let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    for (n, &start) in starts.iter().enumerate() {
        let end = starts.get(n + 1).copied().unwrap_or(lines.len());
        let section = &lines[start..end];
        let mid = section
            .iter()
            .find_map(|l| l.strip_prefix("a=mid:"))
            .map(str::trim);
        if !mid.is_some_and(|m| mids.iter().any(|x| x == m)) {
            continue;
        }
        let preferred: Vec<&str> = section
            .iter()
            .filter_map(|l| l.strip_prefix("a=rtpmap:"))
            .filter_map(|r| {
                let (pt, rest) = r.split_once(' ')?;
                let name = rest.split('/').next()?;
                name.eq_ignore_ascii_case(codec).then_some(pt)
            })
            .collect();
        if preferred.is_empty() {
            continue;
        }
        let fields: Vec<&str> = lines[start].split(' ').collect();
        if fields.len() < 4 {
            continue;
        }
        let (head, formats) = fields.split_at(3);
        let mut reordered: Vec<&str> = formats
            .iter()
            .copied()
            .filter(|f| preferred.contains(f))
            .collect();
        reordered.extend(formats.iter().copied().filter(|f| !preferred.contains(f)));
        out[start] = head
            .iter()
            .chain(reordered.iter())
            .copied()
            .collect::<Vec<_>>()
            .join(" ");
    }
    let mut joined = out.join(eol);
    if sdp.ends_with('\n') {
        joined.push_str(eol);
    }
    joined
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
a=group:BUNDLE 0 1 2 3\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=recvonly\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=sendonly\r\na=msid:stream-1 TRACK_CID_V\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:2\r\na=sendrecv\r\na=ssrc:1234 cname:x\r\na=ssrc:1234 msid:s TRACK_CID_A\r\n\
m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:3\r\n";

    #[test]
    fn msid_track_ids_mids_and_directions() {
        let sections = media_sections(OFFER);
        assert_eq!(sections.len(), 4);
        assert_eq!(sections[0].mid, "0");
        assert_eq!(sections[0].direction, "recvonly");
        assert_eq!(sections[0].msid_track_id, None);
        assert!(sections[0].client_receives() && !sections[0].client_sends());
        assert_eq!(sections[1].msid_track_id.as_deref(), Some("TRACK_CID_V"));
        assert!(sections[1].client_sends() && !sections[1].client_receives());
        assert_eq!(
            sections[2].msid_track_id.as_deref(),
            Some("TRACK_CID_A"),
            "ssrc msid fallback"
        );
        assert_eq!(sections[3].kind, "application");
        assert_eq!(kind_of_mid(OFFER, "1").as_deref(), Some("video"));
        assert_eq!(kind_of_mid(OFFER, "9"), None);
    }

    #[test]
    fn official_python_offer_has_six_receive_sections() {
        let text =
            include_str!("../../fixtures/official-sdk-requests/captured_connect_requests.json");
        let json: serde_json::Value = serde_json::from_str(text).unwrap();
        let mut sdps = Vec::new();
        fn collect(v: &serde_json::Value, out: &mut Vec<String>) {
            match v {
                serde_json::Value::String(s) if s.starts_with("v=0") => out.push(s.clone()),
                serde_json::Value::Array(a) => a.iter().for_each(|x| collect(x, out)),
                serde_json::Value::Object(o) => o.values().for_each(|x| collect(x, out)),
                _ => {}
            }
        }
        collect(&json["python_v1"], &mut sdps);
        let sdp = sdps
            .first()
            .expect("python_v1 capture holds the publisher offer");
        let sections = media_sections(sdp);
        let receive = |kind: &str| {
            sections
                .iter()
                .filter(|s| s.kind == kind && s.client_receives())
                .count()
        };
        assert_eq!((receive("audio"), receive("video")), (3, 3));
        assert!(sections.iter().all(|s| s.msid_track_id.is_none()));
    }

    #[test]
    fn prefer_codec_moves_the_codec_first_only_in_the_named_sections() {
        let offer = "v=0\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103\r\na=mid:0\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:97 rtx/90000\r\n\
a=rtpmap:102 H264/90000\r\na=rtpmap:103 rtx/90000\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 102\r\na=mid:1\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:102 H264/90000\r\n";
        let munged = prefer_codec(offer, &["0".to_string()], "h264");
        assert!(
            munged.contains("m=video 9 UDP/TLS/RTP/SAVPF 102 96 97 103\r\n"),
            "{munged}"
        );
        assert!(
            munged.contains("m=video 9 UDP/TLS/RTP/SAVPF 96 102\r\na=mid:1"),
            "other sections untouched"
        );
        assert!(munged.ends_with("\r\n"));
        assert_eq!(munged.len(), offer.len());
        // A codec the section lacks leaves it alone.
        assert_eq!(prefer_codec(offer, &["0".to_string()], "AV1"), offer);
    }
}
