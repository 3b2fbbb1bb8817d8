//! webrtc-rs wrappers: publisher/subscriber PeerConnections, the trickle queue, data channels,
//! local tracks fed from the media pipelines.
pub mod codecs;
pub mod keyframe;
pub mod local_track;
pub mod path;
pub mod turn_tls;

use livekit_protocol as proto;
use rtc::ice::mdns::MulticastDnsMode;
use rtc::interceptor::Slot;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tokio::sync::{mpsc, Mutex};
use webrtc::data_channel::{DataChannel, DataChannelEvent, RTCDataChannelInit};
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    register_default_interceptors, MediaEngine, PeerConnection, PeerConnectionBuilder,
    PeerConnectionEventHandler, RTCConfigurationBuilder, RTCIceCandidateInit,
    RTCIceConnectionState, RTCIceServer, RTCPeerConnectionIceEvent, RTCPeerConnectionState,
    RTCSessionDescription, Registry, SettingEngineBuilder,
};

/// Data-channel labels LiveKit uses.
pub const RELIABLE: &str = "_reliable";
pub const LOSSY: &str = "_lossy";

/// The H.264 the device sends (see [`codecs`]).
pub fn h264_codec() -> RTCRtpCodec {
    codecs::h264(codecs::H264_CONSTRAINED_BASELINE, codecs::video_feedback())
}

/// The Opus the device sends (see [`codecs`]).
pub fn opus_codec() -> RTCRtpCodec {
    codecs::opus(codecs::audio_feedback())
}

/// Codecs this device speaks. Sending is H.264 + Opus only; receiving (subscriptions) also
/// takes VP8, which is what most other SDKs publish by default.
fn media_engine(receive_vp8: bool) -> anyhow::Result<MediaEngine> {
    let mut engine = MediaEngine::default();
    let mut register = |codec, payload_type, kind| {
        engine.register_codec(
            RTCRtpCodecParameters {
                rtp_codec: codec,
                payload_type,
            },
            kind,
        )
    };
    register(h264_codec(), codecs::PT_H264_DEVICE, RtpCodecKind::Video)?;
    if receive_vp8 {
        register(
            codecs::vp8(codecs::video_feedback()),
            codecs::PT_VP8,
            RtpCodecKind::Video,
        )?;
    }
    register(opus_codec(), codecs::PT_OPUS, RtpCodecKind::Audio)?;
    Ok(engine)
}

/// How to build one PeerConnection; the device's transports and devroom's SFU peers both go
/// through [`build_peer_connection`], so mDNS, the interceptors and the socket binding are set
/// in one place.
#[derive(Clone, Debug, Default)]
pub struct PcSettings {
    pub ice_servers: Vec<proto::IceServer>,
    pub force_relay: bool,
    /// The local addresses the ICE agent binds (host candidates come only from these).
    pub udp_addrs: Vec<SocketAddr>,
    /// TCP listeners for ICE over TCP. Each gives a passive candidate (its port) and an active
    /// one (port 9); webrtc-rs dials every trickled remote passive TCP candidate (LiveKit's
    /// `rtc.tcp_port`, 7881), so the active side is what reaches a server when UDP is blocked.
    pub tcp_addrs: Vec<SocketAddr>,
    /// Offer loopback host candidates (tests and devroom on 127.0.0.1).
    pub include_loopback: bool,
}

/// The server's ICE servers (JoinResponse / ReconnectResponse) as webrtc-rs takes them.
pub fn rtc_ice_servers(servers: &[proto::IceServer]) -> Vec<RTCIceServer> {
    servers
        .iter()
        .map(|s| RTCIceServer {
            urls: s.urls.clone(),
            username: s.username.clone(),
            credential: s.credential.clone(),
        })
        .collect()
}

/// The RTCConfiguration for `settings`: ICE servers and the relay policy.
pub fn rtc_configuration(
    ice_servers: &[proto::IceServer],
    force_relay: bool,
) -> webrtc::peer_connection::RTCConfiguration {
    let mut config = RTCConfigurationBuilder::new().with_ice_servers(rtc_ice_servers(ice_servers));
    if force_relay {
        config =
            config.with_ice_transport_policy(webrtc::peer_connection::RTCIceTransportPolicy::Relay);
    }
    config.build()
}

/// How often the ICE agent runs its checks while connecting (webrtc-rs: 200 ms).
///
/// Why not the default: in webrtc-rs the DTLS client's first flight (ClientHello) is queued when
/// ICE selects a pair, but only leaves at the PeerConnection's next timeout, which while the
/// agent still counts itself as checking is its next check tick, up to 200 ms later, unless
/// some other packet or a trickled candidate wakes the agent first. Whether that happens is a
/// race on every connection, hence a bimodal set-up time. Measured at devroom (whose SFU PCs are
/// built here too and, as the answerer, are the DTLS client of our publisher PC): start -> first
/// RTP was 35-47 ms or 222-307 ms, and the 200 ms sat between "ICE connected" and "PC connected"
/// (see README "Performance"). roomcast is the DTLS client itself whenever it answers (the /rtc
/// subscriber PC). The same tick also paces the controlling agent's nomination when the remote's
/// check does not trigger it. A 20 ms tick bounds those waits at 20 ms; once connected the
/// keep-alive interval (2 s) applies as before.
pub const ICE_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_millis(20);

/// Checks per candidate pair before it is given up: with [`ICE_CHECK_INTERVAL`], the same
/// 1.4 s per pair as webrtc-rs' defaults (7 x 200 ms), so a slow path (RTT up to about a second,
/// a cellular uplink) is not declared failed sooner than before.
pub const ICE_MAX_BINDING_REQUESTS: u16 = 70;

/// One PeerConnection: default interceptors plus the keyframe-request interceptor (without it
/// PLI/FIR never reach the encoder or the SFU), mDNS off (it needs a multicast route, fails PC
/// creation in network namespaces, and a device has no use for it), and local candidates
/// discarded on an ICE restart: with it webrtc-rs also rebinds the UDP sockets (a wildcard
/// address re-expands to the interfaces present now), so a restart after an uplink switch
/// gathers on the new interface instead of the vanished one.
pub async fn build_peer_connection(
    mut engine: MediaEngine,
    settings: &PcSettings,
    handler: Arc<dyn PeerConnectionEventHandler>,
) -> anyhow::Result<Arc<dyn PeerConnection>> {
    let registry = register_default_interceptors(Registry::new(), &mut engine)?;
    let registry = registry.with(
        Slot::from(keyframe::KEYFRAME_SLOT),
        keyframe::KeyframeRequestInterceptor::default(),
    );
    let setting_engine = SettingEngineBuilder::new()
        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
        .with_include_loopback_candidate(settings.include_loopback)
        .with_discard_local_candidates_during_ice_restart(true)
        .with_ice_connection_attempts(Some(ICE_CHECK_INTERVAL), Some(ICE_MAX_BINDING_REQUESTS))
        .with_relay_acceptance_min_wait(Some(path::RELAY_MIN_WAIT))
        .with_prflx_acceptance_min_wait(Some(path::PRFLX_MIN_WAIT))
        .build();
    let pc = PeerConnectionBuilder::new()
        .with_configuration(rtc_configuration(
            &settings.ice_servers,
            settings.force_relay,
        ))
        .with_media_engine(engine)
        .with_setting_engine(setting_engine)
        .with_interceptor_registry(registry)
        .with_handler(handler)
        .with_udp_addrs(settings.udp_addrs.clone())
        .with_tcp_addrs(settings.tcp_addrs.clone())
        .build()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot create a PeerConnection on {:?}: {e}",
                settings.udp_addrs
            )
        })?;
    Ok(Arc::new(pc))
}

/// Which local addresses the ICE agent binds. A wildcard expands to every non-loopback
/// interface (webrtc-rs skips loopback), so when the server itself is reached over loopback
/// (devroom, tests) the loopback address that routes to it is bound explicitly.
pub fn udp_bind_addrs(server: Option<IpAddr>) -> Vec<SocketAddr> {
    let route = server.and_then(|ip| {
        let socket = std::net::UdpSocket::bind((
            if ip.is_ipv4() {
                IpAddr::from([0, 0, 0, 0])
            } else {
                IpAddr::from([0u16; 8])
            },
            0,
        ))
        .ok()?;
        socket.connect((ip, 9)).ok()?;
        socket.local_addr().ok().map(|a| a.ip())
    });
    match route {
        Some(ip) if ip.is_loopback() => vec![SocketAddr::new(ip, 0)],
        _ => vec![SocketAddr::from(([0, 0, 0, 0], 0))],
    }
}

/// The TCP listeners for ICE over TCP: the same local addresses as UDP, any free port.
pub fn tcp_bind_addrs(udp_addrs: &[SocketAddr]) -> Vec<SocketAddr> {
    udp_addrs
        .iter()
        .map(|a| SocketAddr::new(a.ip(), 0))
        .collect()
}

/// Relay only: when the config says so, or the server's `client_configuration.force_relay`
/// (LiveKit sets it once its own ICE fallback has settled on TURN/TLS).
pub fn force_relay(client: Option<&proto::ClientConfiguration>, configured: bool) -> bool {
    configured
        || client.is_some_and(|c| c.force_relay == proto::ClientConfigSetting::Enabled as i32)
}

/// Something a PeerConnection reports, tagged with the PC it came from.
pub enum PeerEvent {
    LocalCandidate {
        target: proto::SignalTarget,
        candidate_init: String,
    },
    ConnectionState {
        target: proto::SignalTarget,
        state: RTCPeerConnectionState,
    },
    /// The ICE agent's state: after an ICE restart the PeerConnection may stay Connected while
    /// ICE checks the new path, so this is what says the path is back.
    IceConnectionState {
        target: proto::SignalTarget,
        state: RTCIceConnectionState,
    },
    DataChannel {
        target: proto::SignalTarget,
        channel: Arc<dyn DataChannel>,
    },
    Track {
        target: proto::SignalTarget,
        track: Arc<dyn TrackRemote>,
    },
    DataPacket {
        target: proto::SignalTarget,
        label: String,
        data: bytes::Bytes,
    },
}

struct Handler {
    target: proto::SignalTarget,
    events: mpsc::UnboundedSender<PeerEvent>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        match event.candidate.to_json() {
            Ok(mut init) => {
                // LiveKit's server reads sdpMid/sdpMLineIndex; with BUNDLE everything rides on the first section.
                if init.sdp_mid.as_deref().unwrap_or("").is_empty() {
                    init.sdp_mid = Some("0".into());
                    init.sdp_mline_index = Some(0);
                }
                let json = serde_json::json!({
                    "candidate": init.candidate,
                    "sdpMid": init.sdp_mid,
                    "sdpMLineIndex": init.sdp_mline_index,
                });
                let _ = self.events.send(PeerEvent::LocalCandidate {
                    target: self.target,
                    candidate_init: json.to_string(),
                });
            }
            Err(e) => tracing::warn!("cannot serialise a local ICE candidate: {e}"),
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.events.send(PeerEvent::ConnectionState {
            target: self.target,
            state,
        });
    }

    // The room task logs ICE and PeerConnection states at debug: with timestamps they split a
    // connection's set-up into ICE and DTLS (`RUST_LOG=roomcast::room=debug`).
    async fn on_ice_connection_state_change(&self, state: RTCIceConnectionState) {
        let _ = self.events.send(PeerEvent::IceConnectionState {
            target: self.target,
            state,
        });
    }

    async fn on_data_channel(&self, channel: Arc<dyn DataChannel>) {
        let _ = self.events.send(PeerEvent::DataChannel {
            target: self.target,
            channel,
        });
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let _ = self.events.send(PeerEvent::Track {
            target: self.target,
            track,
        });
    }
}

/// Settings shared by both PCs.
#[derive(Clone, Debug, Default)]
pub struct PeerOptions {
    pub ice_servers: Vec<proto::IceServer>,
    pub force_relay: bool,
    pub udp_addrs: Vec<SocketAddr>,
    pub tcp_addrs: Vec<SocketAddr>,
    /// Register VP8 for receiving (v1 publisher PC that also subscribes, v0 subscriber PC).
    pub receive_vp8: bool,
}

/// One PeerConnection plus its remote-candidate queue.
pub struct Transport {
    pub target: proto::SignalTarget,
    pub pc: Arc<dyn PeerConnection>,
    /// Remote candidates that arrived before the remote description.
    pending: Mutex<Option<Vec<RTCIceCandidateInit>>>,
}

impl Transport {
    pub async fn new(
        target: proto::SignalTarget,
        options: &PeerOptions,
        events: mpsc::UnboundedSender<PeerEvent>,
    ) -> anyhow::Result<Self> {
        let settings = PcSettings {
            ice_servers: options.ice_servers.clone(),
            force_relay: options.force_relay,
            udp_addrs: options.udp_addrs.clone(),
            tcp_addrs: options.tcp_addrs.clone(),
            include_loopback: options.udp_addrs.iter().any(|a| a.ip().is_loopback()),
        };
        let pc = build_peer_connection(
            media_engine(options.receive_vp8)?,
            &settings,
            Arc::new(Handler { target, events }),
        )
        .await
        .map_err(|e| anyhow::anyhow!("cannot create the {target:?} PeerConnection: {e:#}"))?;
        Ok(Self {
            target,
            pc,
            pending: Mutex::new(Some(Vec::new())),
        })
    }

    /// Apply a trickled candidate now, or keep it until the remote description is set.
    pub async fn add_remote_candidate(&self, candidate_init: &str) -> anyhow::Result<()> {
        let init: RTCIceCandidateInit = serde_json::from_str(candidate_init).map_err(|e| {
            anyhow::anyhow!("server sent an unreadable ICE candidate {candidate_init:?}: {e}")
        })?;
        if init.candidate.is_empty() {
            return Ok(()); // end-of-candidates marker
        }
        let mut pending = self.pending.lock().await;
        if let Some(queue) = pending.as_mut() {
            queue.push(init);
            return Ok(());
        }
        drop(pending);
        self.apply_remote_candidate(init).await
    }

    /// Hand a remote candidate to the ICE agent; TCP ones after [`path::TCP_DEFER`], so ICE/TCP
    /// comes after TURN/UDP (see [`path`]).
    async fn apply_remote_candidate(&self, init: RTCIceCandidateInit) -> anyhow::Result<()> {
        if path::is_tcp_candidate(&init.candidate) {
            let pc = self.pc.clone();
            tokio::spawn(async move {
                tokio::time::sleep(path::TCP_DEFER).await;
                if let Err(e) = pc.add_ice_candidate(init).await {
                    tracing::debug!("deferred TCP candidate rejected: {e}");
                }
            });
            return Ok(());
        }
        self.pc
            .add_ice_candidate(init)
            .await
            .map_err(|e| anyhow::anyhow!("add ICE candidate: {e}"))
    }

    pub async fn set_remote_description(&self, desc: RTCSessionDescription) -> anyhow::Result<()> {
        self.pc
            .set_remote_description(desc)
            .await
            .map_err(|e| anyhow::anyhow!("set remote description: {e}"))?;
        let queued = self.pending.lock().await.take().unwrap_or_default();
        for init in queued {
            if let Err(e) = self.apply_remote_candidate(init).await {
                tracing::warn!("queued ICE candidate rejected: {e}");
            }
        }
        Ok(())
    }

    /// Create an offer, apply it locally and return its SDP.
    pub async fn create_offer(&self) -> anyhow::Result<String> {
        self.create_offer_with(false).await
    }

    /// Create an offer (with new ICE credentials when `ice_restart`), apply it locally and
    /// return its SDP.
    pub async fn create_offer_with(&self, ice_restart: bool) -> anyhow::Result<String> {
        let offer = self.create_unapplied_offer_with(ice_restart).await?;
        let sdp = offer.sdp.clone();
        self.apply_local_offer(offer).await?;
        Ok(sdp)
    }

    /// Create an offer without applying it. webrtc-rs starts gathering when the local
    /// description is set, with the ICE servers and relay policy it has at that moment; the
    /// first v1 offer rides in join_request (no candidates yet) and is applied only once
    /// JoinResponse has given the ICE servers ([`Transport::apply_ice_servers_then_gather`]).
    pub async fn create_unapplied_offer(&self) -> anyhow::Result<RTCSessionDescription> {
        self.create_unapplied_offer_with(false).await
    }

    async fn create_unapplied_offer_with(
        &self,
        ice_restart: bool,
    ) -> anyhow::Result<RTCSessionDescription> {
        let options = ice_restart
            .then_some(rtc::peer_connection::configuration::RTCOfferOptions { ice_restart });
        self.pc
            .create_offer(options)
            .await
            .map_err(|e| anyhow::anyhow!("create offer: {e}"))
    }

    /// Apply an offer from [`Transport::create_unapplied_offer`]; gathering starts now.
    pub async fn apply_local_offer(&self, offer: RTCSessionDescription) -> anyhow::Result<()> {
        self.pc
            .set_local_description(offer)
            .await
            .map_err(|e| anyhow::anyhow!("set local offer: {e}"))
    }

    /// Give the PC the server's ICE servers and relay policy, then apply `offer` (if any),
    /// which starts gathering — so TURN is gathered and `force_relay` holds from the first
    /// candidate on.
    pub async fn apply_ice_servers_then_gather(
        &self,
        ice_servers: &[proto::IceServer],
        force_relay: bool,
        offer: Option<RTCSessionDescription>,
    ) -> anyhow::Result<()> {
        self.pc
            .set_configuration(rtc_configuration(ice_servers, force_relay))
            .await
            .map_err(|e| anyhow::anyhow!("cannot apply the server's ICE servers: {e}"))?;
        if let Some(offer) = offer {
            self.apply_local_offer(offer).await?;
        }
        Ok(())
    }

    pub async fn apply_answer(&self, sdp: String) -> anyhow::Result<()> {
        let answer = RTCSessionDescription::answer(sdp)
            .map_err(|e| anyhow::anyhow!("server answer is not valid SDP: {e}"))?;
        self.set_remote_description(answer).await
    }

    /// Answer a server offer (subscriber PC in v0).
    pub async fn answer_offer(&self, sdp: String) -> anyhow::Result<String> {
        let offer = RTCSessionDescription::offer(sdp)
            .map_err(|e| anyhow::anyhow!("server offer is not valid SDP: {e}"))?;
        self.set_remote_description(offer).await?;
        let answer = self
            .pc
            .create_answer(None)
            .await
            .map_err(|e| anyhow::anyhow!("create answer: {e}"))?;
        let sdp = answer.sdp.clone();
        self.pc
            .set_local_description(answer)
            .await
            .map_err(|e| anyhow::anyhow!("set local answer: {e}"))?;
        Ok(sdp)
    }

    /// `_reliable` (ordered, reliable) and `_lossy` (unordered, no retransmits), as LiveKit expects.
    pub async fn create_data_channels(&self) -> anyhow::Result<Vec<Arc<dyn DataChannel>>> {
        let reliable = self
            .pc
            .create_data_channel(
                RELIABLE,
                Some(RTCDataChannelInit {
                    ordered: true,
                    ..Default::default()
                }),
            )
            .await
            .map_err(|e| anyhow::anyhow!("create {RELIABLE}: {e}"))?;
        let lossy = self
            .pc
            .create_data_channel(
                LOSSY,
                Some(RTCDataChannelInit {
                    ordered: false,
                    max_retransmits: Some(0),
                    ..Default::default()
                }),
            )
            .await
            .map_err(|e| anyhow::anyhow!("create {LOSSY}: {e}"))?;
        Ok(vec![reliable, lossy])
    }

    /// Receive-only media sections for the single-PC mode, so the server can send us tracks.
    pub async fn add_receive_sections(&self, audio: usize, video: usize) -> anyhow::Result<()> {
        for (kind, n) in [(RtpCodecKind::Audio, audio), (RtpCodecKind::Video, video)] {
            for _ in 0..n {
                self.pc
                    .add_transceiver_from_kind(
                        kind,
                        Some(RTCRtpTransceiverInit {
                            direction: RTCRtpTransceiverDirection::Recvonly,
                            ..Default::default()
                        }),
                    )
                    .await
                    .map_err(|e| anyhow::anyhow!("add recvonly {kind} transceiver: {e}"))?;
            }
        }
        Ok(())
    }

    pub async fn close(&self) {
        if let Err(e) = self.pc.close().await {
            tracing::debug!("closing {:?} PC: {e}", self.target);
        }
    }
}

/// Forward every message of a data channel as [`PeerEvent::DataPacket`] until it closes.
pub fn watch_data_channel(
    target: proto::SignalTarget,
    channel: Arc<dyn DataChannel>,
    events: mpsc::UnboundedSender<PeerEvent>,
) {
    tokio::spawn(async move {
        let label = channel.label().await.unwrap_or_default();
        while let Some(event) = channel.poll().await {
            match event {
                DataChannelEvent::OnMessage(msg) if !msg.is_string => {
                    let data = msg.data.freeze();
                    if events
                        .send(PeerEvent::DataPacket {
                            target,
                            label: label.clone(),
                            data,
                        })
                        .is_err()
                    {
                        break;
                    }
                }
                DataChannelEvent::OnClose => break,
                _ => {}
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The remote candidates the ICE agent knows about, as (address, port).
    async fn agent_remote_candidates(transport: &Transport) -> Vec<(String, u16)> {
        use rtc::statistics::report::RTCStatsReportEntry;
        let report = transport
            .pc
            .get_stats(
                std::time::Instant::now(),
                webrtc::peer_connection::StatsSelector::None,
            )
            .await;
        report
            .iter()
            .filter_map(|entry| match entry {
                RTCStatsReportEntry::RemoteCandidate(c) => {
                    Some((c.address.clone().unwrap_or_default(), c.port))
                }
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn a_candidate_before_the_remote_description_is_held_then_applied() {
        let (events, _events_rx) = mpsc::unbounded_channel();
        let options = PeerOptions {
            udp_addrs: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
            ..Default::default()
        };
        let offerer = Transport::new(proto::SignalTarget::Publisher, &options, events.clone())
            .await
            .unwrap();
        let answerer = Transport::new(proto::SignalTarget::Subscriber, &options, events)
            .await
            .unwrap();
        offerer.create_data_channels().await.unwrap();
        let offer = offerer.create_offer().await.unwrap();
        let answer = answerer.answer_offer(offer).await.unwrap();

        // The server's candidate overtakes its answer.
        let trickled = r#"{"candidate":"candidate:1 1 udp 2130706431 127.0.0.1 50999 typ host","sdpMid":"0","sdpMLineIndex":0}"#;
        offerer.add_remote_candidate(trickled).await.unwrap();
        assert_eq!(
            offerer.pending.lock().await.as_ref().map(Vec::len),
            Some(1),
            "the candidate must wait for the remote description"
        );
        assert!(
            !agent_remote_candidates(&offerer)
                .await
                .contains(&("127.0.0.1".into(), 50999)),
            "the agent got the candidate before the remote description"
        );

        offerer.apply_answer(answer).await.unwrap();
        assert!(
            offerer.pending.lock().await.is_none(),
            "the queue is drained and closed once the remote description is set"
        );
        assert!(
            agent_remote_candidates(&offerer)
                .await
                .contains(&("127.0.0.1".into(), 50999)),
            "the held candidate never reached the ICE agent: {:?}",
            agent_remote_candidates(&offerer).await
        );

        // Later candidates go straight to the agent.
        let late = r#"{"candidate":"candidate:2 1 udp 2130706431 127.0.0.1 50998 typ host","sdpMid":"0","sdpMLineIndex":0}"#;
        offerer.add_remote_candidate(late).await.unwrap();
        assert!(agent_remote_candidates(&offerer)
            .await
            .contains(&("127.0.0.1".into(), 50998)));
        offerer.close().await;
        answerer.close().await;
    }

    #[test]
    fn a_loopback_server_binds_the_loopback_address_explicitly() {
        // webrtc-rs skips loopback when expanding a wildcard, so it must be named.
        let addrs = udp_bind_addrs(Some(IpAddr::from([127, 0, 0, 1])));
        assert_eq!(addrs, vec![SocketAddr::from(([127, 0, 0, 1], 0))]);
    }

    #[test]
    fn no_server_address_binds_every_interface() {
        assert_eq!(
            udp_bind_addrs(None),
            vec![SocketAddr::from(([0, 0, 0, 0], 0))]
        );
    }

    #[test]
    fn we_offer_only_constrained_baseline_with_packetization_mode_1() {
        let codec = h264_codec();
        assert!(codec.sdp_fmtp_line.contains("profile-level-id=42e01f"));
        assert!(codec.sdp_fmtp_line.contains("packetization-mode=1"));
        assert!(codec
            .rtcp_feedback
            .iter()
            .any(|f| f.typ == "nack" && f.parameter == "pli"));
        assert!(codec
            .rtcp_feedback
            .iter()
            .any(|f| f.typ == "ccm" && f.parameter == "fir"));
    }
}
