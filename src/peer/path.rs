//! Which of LiveKit's four paths the media took: ICE/UDP, TURN/UDP, ICE/TCP or TURN/TLS, and
//! the order they are tried in.
//!
//! LiveKit's order is UDP, TURN/UDP, ICE/TCP, TURN/TLS. ICE priorities alone would not give it:
//! a host TCP candidate outranks any relay candidate (type preference 126 against 0), and to
//! webrtc-rs a TURN/TLS candidate is a relay candidate over UDP, as good as TURN/UDP. The device
//! is the controlling agent (it offers), and rtc-ice nominates the best pair that has passed
//! its checks once the pair's candidate types have waited their "acceptance" time. So the
//! order is made with time:
//!
//! 1. host UDP pairs are nominated as soon as they pass (acceptance wait 0);
//! 2. relay pairs wait [`RELAY_MIN_WAIT`] from the start of the checks, so a working direct UDP
//!    path wins, and TURN/UDP is nominated after that;
//! 3. the server's TCP candidates are handed to the ICE agent [`TCP_DEFER`] after they arrive,
//!    so ICE/TCP pairs only exist once TURN/UDP has had its chance;
//! 4. the TURN/TLS relay ([`super::turn_tls`]) holds a client's first allocation for
//!    [`TLS_DEFER`] (the TURN client retransmits), so a TURN/TLS candidate comes last.
//!
//! Each step only costs time on a network where every earlier path is blocked (see the README's
//! time to first media per path). The relay records the addresses it allocated, which is how
//! the two relay paths are told apart in the report.
use serde::Serialize;
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use webrtc::peer_connection::PeerConnection;

/// How long relay pairs wait before they may be nominated (rtc-ice's default is 2 s).
pub const RELAY_MIN_WAIT: Duration = Duration::from_millis(500);
/// How long pairs with a peer-reflexive candidate wait before they may be nominated
/// (rtc-ice's default is 1 s).
///
/// Why zero: the server trickles its candidates after its answer, and its first connectivity
/// check often arrives before them. The device then knows the server's address only as a
/// peer-reflexive candidate, and with the default the nomination waited a full second: that was
/// the 1 s uplink switch (the resume and the checks took about 20 ms, then nothing happened for
/// 1000 ms, in every run where the check beat the trickle). A peer-reflexive remote is the
/// server's own address seen on a path that already works; the local candidate's type still
/// gates the pair, so a relayed local candidate keeps its [`RELAY_MIN_WAIT`] and the fallback
/// order below is unchanged.
pub const PRFLX_MIN_WAIT: Duration = Duration::ZERO;
/// How long the server's TCP candidates are held back before ICE sees them.
pub const TCP_DEFER: Duration = Duration::from_millis(1000);
/// How long the TURN/TLS relay holds a client's first allocation.
pub const TLS_DEFER: Duration = Duration::from_millis(2000);

/// Whether a trickled candidate (its `candidate:` line) is an ICE-TCP candidate.
pub fn is_tcp_candidate(candidate: &str) -> bool {
    let line = candidate.strip_prefix("candidate:").unwrap_or(candidate);
    line.split_ascii_whitespace()
        .nth(2)
        .is_some_and(|proto| proto.eq_ignore_ascii_case("tcp"))
}

/// The selected candidate pair, as the device reports it (room event `media_path`, STATUS=).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MediaPath {
    /// `udp`, `turn/udp`, `tcp` or `turn/tls`.
    pub path: &'static str,
    /// The local candidate: `<type> <protocol> <address>:<port>`.
    pub local: String,
    /// The remote candidate, in the same form.
    pub remote: String,
}

/// The path a local candidate of this type and protocol stands for.
pub fn classify(
    local_type: &str,
    local_protocol: &str,
    local_addr: Option<SocketAddr>,
    tls_relayed: &HashSet<SocketAddr>,
) -> &'static str {
    match (local_type, local_protocol) {
        ("relay", _) if local_addr.is_some_and(|a| tls_relayed.contains(&a)) => "turn/tls",
        ("relay", _) => "turn/udp",
        (_, "tcp") => "tcp",
        _ => "udp",
    }
}

/// The publisher PC's selected pair, once ICE has one.
pub async fn selected(pc: &Arc<dyn PeerConnection>) -> Option<MediaPath> {
    let sctp = pc.sctp().await?;
    let pair = sctp
        .transport()
        .ice_transport()
        .get_selected_candidate_pair()
        .await
        .ok()??;
    let (local, remote) = (pair.local(), pair.remote());
    let local_addr = local
        .address
        .parse::<IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, local.port));
    let describe = |c: &rtc::peer_connection::transport::RTCIceCandidate| {
        format!("{} {} {}:{}", c.typ, c.protocol, c.address, c.port)
    };
    Some(MediaPath {
        path: classify(
            &local.typ.to_string(),
            &local.protocol.to_string(),
            local_addr,
            &super::turn_tls::relayed_addresses(),
        ),
        local: describe(local),
        remote: describe(remote),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_candidates_are_recognised() {
        assert!(is_tcp_candidate(
            "candidate:1 1 tcp 1671430143 198.51.100.1 7881 typ host tcptype passive"
        ));
        assert!(is_tcp_candidate(
            "2 1 TCP 1671430143 198.51.100.1 7881 typ host tcptype passive"
        ));
        assert!(!is_tcp_candidate(
            "candidate:1 1 udp 2130706431 198.51.100.1 7882 typ host"
        ));
        assert!(!is_tcp_candidate(""));
    }

    #[test]
    fn each_candidate_kind_maps_to_one_of_the_four_paths() {
        let tls: HashSet<SocketAddr> = ["198.51.100.1:30007".parse().unwrap()].into();
        let relay_udp = Some("198.51.100.1:30001".parse().unwrap());
        let relay_tls = Some("198.51.100.1:30007".parse().unwrap());
        assert_eq!(classify("host", "udp", None, &tls), "udp");
        assert_eq!(classify("srflx", "udp", None, &tls), "udp");
        assert_eq!(classify("prflx", "udp", None, &tls), "udp");
        assert_eq!(classify("host", "tcp", None, &tls), "tcp");
        assert_eq!(classify("prflx", "tcp", None, &tls), "tcp");
        assert_eq!(classify("relay", "udp", relay_udp, &tls), "turn/udp");
        assert_eq!(classify("relay", "udp", relay_tls, &tls), "turn/tls");
    }
}
