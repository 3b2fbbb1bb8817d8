//! The sans-IO signal session under simulated time: every instant is `start + offset`, no sleeps.
use livekit_protocol as proto;
use proto::signal_request::Message as Req;
use proto::signal_response::Message as Resp;
use roomcast::signal::session::{
    CloseReason, SessionEvent, SessionOptions, SessionState, SignalSession,
};
use std::time::{Duration, Instant};

fn at(start: Instant, ms: u64) -> Instant {
    start + Duration::from_millis(ms)
}

fn resp(message: Resp) -> proto::SignalResponse {
    proto::SignalResponse {
        message: Some(message),
    }
}

fn join_response(ping_interval: i32, ping_timeout: i32) -> Resp {
    Resp::Join(proto::JoinResponse {
        ping_interval,
        ping_timeout,
        participant: Some(proto::ParticipantInfo {
            sid: "PA_me".into(),
            identity: "cam-1".into(),
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn leave_response(reason: proto::DisconnectReason, action: proto::leave_request::Action) -> Resp {
    Resp::Leave(proto::LeaveRequest {
        reason: reason as i32,
        action: action as i32,
        ..Default::default()
    })
}

fn drain_transmit(session: &mut SignalSession) -> Vec<Req> {
    std::iter::from_fn(|| session.poll_transmit())
        .map(|r| r.message.expect("frame carries a message"))
        .collect()
}

fn drain_events(session: &mut SignalSession) -> Vec<SessionEvent> {
    std::iter::from_fn(|| session.poll_event()).collect()
}

fn joined_session(start: Instant) -> SignalSession {
    let mut session = SignalSession::new(SessionOptions::default(), start);
    session.handle_response(resp(join_response(5, 15)), start);
    assert_eq!(session.state(), SessionState::Active);
    let events = drain_events(&mut session);
    assert!(
        matches!(events.as_slice(), [SessionEvent::Joined(j)] if j.participant.as_ref().unwrap().sid == "PA_me")
    );
    session
}

fn add_track(cid: &str) -> Req {
    Req::AddTrack(proto::AddTrackRequest {
        cid: cid.into(),
        ..Default::default()
    })
}

#[test]
fn join_response_activates_and_schedules_the_first_ping() {
    let start = Instant::now();
    let mut session = SignalSession::new(SessionOptions::default(), start);
    assert_eq!(session.state(), SessionState::AwaitingFirstMessage);
    assert_eq!(
        session.poll_timeout(),
        Some(at(start, 5000)),
        "first-message deadline"
    );
    session.handle_response(resp(join_response(5, 15)), at(start, 100));
    assert_eq!(session.state(), SessionState::Active);
    assert_eq!(
        session.ping_config(),
        (Some(Duration::from_secs(5)), Some(Duration::from_secs(15)))
    );
    assert_eq!(
        session.poll_timeout(),
        Some(at(start, 5100)),
        "first ping one interval after the join"
    );
    assert!(
        drain_transmit(&mut session).is_empty(),
        "nothing to send right after the join"
    );
}

#[test]
fn pings_follow_the_interval_and_carry_the_measured_rtt() {
    let start = Instant::now();
    let mut session = joined_session(start);

    session.handle_timeout(at(start, 4999));
    assert!(
        drain_transmit(&mut session).is_empty(),
        "no ping before the interval"
    );

    session.handle_timeout(at(start, 5000));
    let sent = drain_transmit(&mut session);
    let [Req::PingReq(first)] = sent.as_slice() else {
        panic!("expected one ping_req, got {sent:?}")
    };
    assert_eq!(first.rtt, 0, "no rtt measured yet");
    assert_eq!(session.poll_timeout(), Some(at(start, 10_000)));

    // The pong comes back 42 ms later: that is the rtt the next ping reports.
    let pong = proto::Pong {
        last_ping_timestamp: first.timestamp,
        timestamp: 1,
    };
    session.handle_response(resp(Resp::PongResp(pong)), at(start, 5042));
    assert_eq!(session.rtt(), Some(Duration::from_millis(42)));
    assert!(
        drain_events(&mut session).is_empty(),
        "pongs are not surfaced as events"
    );

    session.handle_timeout(at(start, 10_000));
    let sent = drain_transmit(&mut session);
    let [Req::PingReq(second)] = sent.as_slice() else {
        panic!("expected one ping_req, got {sent:?}")
    };
    assert_eq!(second.rtt, 42);
    assert!(second.timestamp > first.timestamp, "timestamps increase");
    assert_eq!(session.state(), SessionState::Active);
}

#[test]
fn silence_for_ping_timeout_kills_the_session() {
    let start = Instant::now();
    let mut session = joined_session(start);
    // Pings keep going out, but nothing comes back.
    for ms in [5000, 10_000] {
        session.handle_timeout(at(start, ms));
        assert_eq!(drain_transmit(&mut session).len(), 1);
    }
    session.handle_timeout(at(start, 14_999));
    assert_eq!(session.state(), SessionState::Active);
    session.handle_timeout(at(start, 15_000));
    assert_eq!(session.state(), SessionState::Closed);
    assert!(matches!(
        drain_events(&mut session).as_slice(),
        [SessionEvent::PingTimeout]
    ));
    assert_eq!(session.close_reason(), Some(&CloseReason::PingTimeout));
    assert!(
        session.close_reason().unwrap().may_rejoin(),
        "a dead link is worth a resume"
    );
    assert_eq!(session.poll_timeout(), None);
    session.send(add_track("late"));
    assert!(
        drain_transmit(&mut session).is_empty(),
        "nothing goes out after close"
    );
}

#[test]
fn any_message_rearms_the_ping_timeout() {
    let start = Instant::now();
    let mut session = joined_session(start);
    // Not a pong: a participant update at 14 s keeps the link alive until 29 s.
    session.handle_response(
        resp(Resp::Update(proto::ParticipantUpdate::default())),
        at(start, 14_000),
    );
    for ms in [5000, 10_000, 15_000, 20_000, 25_000] {
        session.handle_timeout(at(start, ms));
        assert_eq!(session.state(), SessionState::Active, "alive at {ms} ms");
    }
    session.handle_timeout(at(start, 28_999));
    assert_eq!(session.state(), SessionState::Active);
    session.handle_timeout(at(start, 29_000));
    assert_eq!(session.state(), SessionState::Closed);
    assert_eq!(session.close_reason(), Some(&CloseReason::PingTimeout));
}

#[test]
fn a_late_tick_sends_one_ping_not_a_burst() {
    let start = Instant::now();
    let mut session = joined_session(start);
    session.handle_response(resp(Resp::Update(Default::default())), at(start, 12_000));
    session.handle_timeout(at(start, 12_000));
    assert_eq!(drain_transmit(&mut session).len(), 1);
    assert_eq!(session.poll_timeout(), Some(at(start, 17_000)));
}

#[test]
fn first_message_timeout_closes_the_session() {
    let start = Instant::now();
    let opts = SessionOptions {
        first_message_timeout: Duration::from_secs(3),
        resuming: false,
    };
    let mut session = SignalSession::new(opts, start);
    session.handle_timeout(at(start, 2999));
    assert_eq!(session.state(), SessionState::AwaitingFirstMessage);
    session.handle_timeout(at(start, 3000));
    assert_eq!(session.state(), SessionState::Closed);
    assert!(matches!(
        drain_events(&mut session).as_slice(),
        [SessionEvent::FirstMessageTimeout]
    ));
    // A JoinResponse after the deadline changes nothing.
    session.handle_response(resp(join_response(5, 15)), at(start, 3001));
    assert_eq!(session.state(), SessionState::Closed);
    assert!(drain_events(&mut session).is_empty());
}

#[test]
fn requests_are_held_until_joined_except_pass_through_kinds() {
    let start = Instant::now();
    let mut session = SignalSession::new(SessionOptions::default(), start);
    session.send(add_track("cam"));
    session.send(Req::Trickle(proto::TrickleRequest {
        candidate_init: "{}".into(),
        ..Default::default()
    }));
    session.send(Req::Offer(proto::SessionDescription {
        r#type: "offer".into(),
        ..Default::default()
    }));
    session.send(Req::Mute(proto::MuteTrackRequest {
        sid: "TR_1".into(),
        muted: true,
    }));
    session.send(Req::SyncState(Default::default()));
    session.send(Req::Answer(Default::default()));
    session.send(Req::Simulate(Default::default()));
    let early = drain_transmit(&mut session);
    assert!(
        matches!(
            early.as_slice(),
            [
                Req::Trickle(_),
                Req::Offer(_),
                Req::SyncState(_),
                Req::Answer(_),
                Req::Simulate(_)
            ]
        ),
        "only pass-through kinds go out before the join: {early:?}"
    );
    assert_eq!(session.held_requests(), 2);

    session.handle_response(resp(join_response(5, 15)), at(start, 10));
    let flushed = drain_transmit(&mut session);
    match flushed.as_slice() {
        [Req::AddTrack(a), Req::Mute(m)] => {
            assert_eq!(a.cid, "cam");
            assert_eq!(m.sid, "TR_1");
        }
        other => panic!("held requests flushed in order after the join, got {other:?}"),
    }
    session.send(add_track("mic"));
    assert!(
        matches!(drain_transmit(&mut session).as_slice(), [Req::AddTrack(a)] if a.cid == "mic")
    );
}

#[test]
fn hold_until_release_keeps_requests_back_after_resume() {
    let start = Instant::now();
    let mut session = SignalSession::new(
        SessionOptions {
            resuming: true,
            ..Default::default()
        },
        start,
    );
    session.hold_requests_until_release();
    session.handle_response(resp(Resp::Reconnect(Default::default())), start);
    session.send(add_track("cam"));
    session.send(Req::SyncState(Default::default()));
    assert!(matches!(
        drain_transmit(&mut session).as_slice(),
        [Req::SyncState(_)]
    ));
    session.release_requests();
    assert!(matches!(
        drain_transmit(&mut session).as_slice(),
        [Req::AddTrack(_)]
    ));
}

#[test]
fn client_leave_sends_only_the_leave_and_closes() {
    let start = Instant::now();
    let mut session = joined_session(start);
    session.send(add_track("cam"));
    session.leave(proto::DisconnectReason::ClientInitiated);
    assert_eq!(session.state(), SessionState::Leaving);
    session.send(add_track("after"));
    session.handle_timeout(at(start, 5000));
    let sent = drain_transmit(&mut session);
    let [Req::Leave(leave)] = sent.as_slice() else {
        panic!("only the Leave goes out, got {sent:?}")
    };
    assert_eq!(
        leave.reason,
        proto::DisconnectReason::ClientInitiated as i32
    );
    assert_eq!(
        leave.action,
        proto::leave_request::Action::Disconnect as i32
    );
    assert!(!leave.can_reconnect);
    assert_eq!(session.state(), SessionState::Closed);
    assert_eq!(
        session.close_reason(),
        Some(&CloseReason::ClientLeave(
            proto::DisconnectReason::ClientInitiated
        ))
    );
    assert!(!session.close_reason().unwrap().may_rejoin());
    assert_eq!(session.poll_timeout(), None);
}

#[test]
fn leave_before_the_join_still_goes_out() {
    let start = Instant::now();
    let mut session = SignalSession::new(SessionOptions::default(), start);
    session.send(add_track("cam"));
    session.leave(proto::DisconnectReason::ClientInitiated);
    assert!(matches!(
        drain_transmit(&mut session).as_slice(),
        [Req::Leave(_)]
    ));
    assert_eq!(session.state(), SessionState::Closed);
}

#[test]
fn duplicate_identity_leave_closes_without_rejoin() {
    let start = Instant::now();
    let mut session = joined_session(start);
    session.handle_response(
        resp(leave_response(
            proto::DisconnectReason::DuplicateIdentity,
            proto::leave_request::Action::Disconnect,
        )),
        at(start, 1000),
    );
    assert_eq!(session.state(), SessionState::Closed);
    let events = drain_events(&mut session);
    assert!(
        matches!(
            events.as_slice(),
            [SessionEvent::Leave {
                reason: proto::DisconnectReason::DuplicateIdentity,
                action: proto::leave_request::Action::Disconnect
            }]
        ),
        "got {events:?}"
    );
    let reason = session.close_reason().expect("closed with a reason");
    assert!(!reason.may_rejoin(), "DISCONNECT never rejoins");
    // The session is inert now: no pings, no timeouts, nothing sent.
    assert_eq!(session.poll_timeout(), None);
    session.handle_timeout(at(start, 60_000));
    session.send(add_track("cam"));
    assert!(drain_transmit(&mut session).is_empty());
    assert!(drain_events(&mut session).is_empty());
}

#[test]
fn server_leave_with_resume_action_allows_rejoin() {
    let start = Instant::now();
    let mut session = joined_session(start);
    session.handle_response(
        resp(leave_response(
            proto::DisconnectReason::ServerShutdown,
            proto::leave_request::Action::Resume,
        )),
        start,
    );
    assert!(session.close_reason().unwrap().may_rejoin());
}

#[test]
fn leave_as_first_message_ends_the_session_with_its_reason() {
    let start = Instant::now();
    let mut session = SignalSession::new(
        SessionOptions {
            resuming: true,
            ..Default::default()
        },
        start,
    );
    session.handle_response(
        resp(leave_response(
            proto::DisconnectReason::StateMismatch,
            proto::leave_request::Action::Reconnect,
        )),
        start,
    );
    assert_eq!(session.state(), SessionState::Closed);
    assert_eq!(
        session.close_reason(),
        Some(&CloseReason::ServerLeave {
            reason: proto::DisconnectReason::StateMismatch,
            action: proto::leave_request::Action::Reconnect
        })
    );
    assert!(matches!(
        drain_events(&mut session).as_slice(),
        [SessionEvent::Leave { .. }]
    ));
}

#[test]
fn resume_expects_reconnect_response_and_keeps_ping_settings() {
    let start = Instant::now();
    let mut session = SignalSession::new(
        SessionOptions {
            resuming: true,
            ..Default::default()
        },
        start,
    );
    session.set_ping_config(Duration::from_secs(2), Duration::from_secs(6));
    session.send(add_track("cam"));
    let reconnect = proto::ReconnectResponse {
        last_message_seq: 7,
        ..Default::default()
    };
    session.handle_response(resp(Resp::Reconnect(reconnect)), at(start, 50));
    assert_eq!(session.state(), SessionState::Active);
    assert!(
        matches!(drain_events(&mut session).as_slice(), [SessionEvent::Resumed(r)] if r.last_message_seq == 7)
    );
    assert!(
        matches!(drain_transmit(&mut session).as_slice(), [Req::AddTrack(_)]),
        "queue flushed on resume"
    );
    session.handle_timeout(at(start, 2050));
    assert!(matches!(
        drain_transmit(&mut session).as_slice(),
        [Req::PingReq(_)]
    ));
    session.handle_timeout(at(start, 6050));
    assert_eq!(session.close_reason(), Some(&CloseReason::PingTimeout));
}

#[test]
fn a_fresh_join_rejects_an_unexpected_first_message() {
    let start = Instant::now();
    let mut session = SignalSession::new(SessionOptions::default(), start);
    session.handle_response(resp(Resp::Reconnect(Default::default())), start);
    assert_eq!(session.state(), SessionState::Closed);
    assert_eq!(
        session.close_reason(),
        Some(&CloseReason::UnexpectedFirstMessage)
    );
    assert!(matches!(
        drain_events(&mut session).as_slice(),
        [SessionEvent::UnexpectedFirstMessage(_)]
    ));
}

#[test]
fn refresh_tokens_are_stored_and_surfaced() {
    let start = Instant::now();
    let mut session = joined_session(start);
    assert_eq!(session.latest_token(), None);
    session.handle_response(resp(Resp::RefreshToken("tok-1".into())), start);
    session.handle_response(resp(Resp::RefreshToken("tok-2".into())), at(start, 1));
    assert_eq!(session.latest_token(), Some("tok-2"));
    let events = drain_events(&mut session);
    let tokens: Vec<&str> = events
        .iter()
        .map(|e| match e {
            SessionEvent::TokenRefreshed(t) => t.as_str(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(tokens, ["tok-1", "tok-2"]);
}

#[test]
fn server_messages_map_to_events() {
    let start = Instant::now();
    let mut session = joined_session(start);
    let messages = vec![
        Resp::Answer(proto::SessionDescription {
            r#type: "answer".into(),
            sdp: "v=0".into(),
            ..Default::default()
        }),
        Resp::Offer(proto::SessionDescription {
            r#type: "offer".into(),
            ..Default::default()
        }),
        Resp::Trickle(proto::TrickleRequest {
            candidate_init: "{\"candidate\":\"c\"}".into(),
            target: proto::SignalTarget::Subscriber as i32,
            r#final: true,
        }),
        Resp::Update(proto::ParticipantUpdate {
            participants: vec![Default::default(), Default::default()],
        }),
        Resp::TrackPublished(proto::TrackPublishedResponse {
            cid: "cam".into(),
            track: None,
        }),
        Resp::TrackUnpublished(proto::TrackUnpublishedResponse {
            track_sid: "TR_1".into(),
        }),
        Resp::RoomUpdate(proto::RoomUpdate {
            room: Some(proto::Room {
                name: "lobby".into(),
                ..Default::default()
            }),
        }),
        Resp::MediaSectionsRequirement(proto::MediaSectionsRequirement {
            num_audios: 1,
            num_videos: 2,
        }),
        Resp::Mute(proto::MuteTrackRequest {
            sid: "TR_1".into(),
            muted: true,
        }),
        Resp::RequestResponse(proto::RequestResponse {
            request_id: 9,
            ..Default::default()
        }),
        Resp::SpeakersChanged(Default::default()),
    ];
    for m in messages {
        session.handle_response(resp(m), start);
    }
    let events = drain_events(&mut session);
    assert_eq!(events.len(), 11, "{events:?}");
    assert!(matches!(&events[0], SessionEvent::Answer(sd) if sd.sdp == "v=0"));
    assert!(matches!(&events[1], SessionEvent::Offer(_)));
    assert!(matches!(
        &events[2],
        SessionEvent::Trickle { target: proto::SignalTarget::Subscriber, is_final: true, candidate_init } if candidate_init.contains("\"c\"")
    ));
    assert!(matches!(&events[3], SessionEvent::ParticipantUpdate(p) if p.len() == 2));
    assert!(matches!(&events[4], SessionEvent::TrackPublished(t) if t.cid == "cam"));
    assert!(matches!(&events[5], SessionEvent::TrackUnpublished(t) if t.track_sid == "TR_1"));
    assert!(matches!(&events[6], SessionEvent::RoomUpdate(r) if r.name == "lobby"));
    assert!(matches!(&events[7], SessionEvent::MediaSectionsRequirement(m) if m.num_videos == 2));
    assert!(matches!(&events[8], SessionEvent::RemoteMute(m) if m.muted));
    assert!(matches!(&events[9], SessionEvent::RequestResponse(r) if r.request_id == 9));
    assert!(
        matches!(&events[10], SessionEvent::Other(m) if matches!(**m, Resp::SpeakersChanged(_)))
    );
}

#[test]
fn transport_close_after_leave_counts_as_client_leave() {
    let start = Instant::now();
    let mut session = joined_session(start);
    session.leave(proto::DisconnectReason::ClientInitiated);
    session.handle_transport_closed();
    assert_eq!(
        session.close_reason(),
        Some(&CloseReason::ClientLeave(
            proto::DisconnectReason::ClientInitiated
        ))
    );

    let mut other = joined_session(start);
    other.handle_transport_closed();
    assert_eq!(other.close_reason(), Some(&CloseReason::TransportClosed));
    assert!(other.close_reason().unwrap().may_rejoin());
}

#[test]
fn zero_ping_settings_disable_pings_and_the_dead_timer() {
    let start = Instant::now();
    let mut session = SignalSession::new(SessionOptions::default(), start);
    session.handle_response(resp(join_response(0, 0)), start);
    assert_eq!(session.state(), SessionState::Active);
    assert_eq!(session.poll_timeout(), None, "nothing to wake up for");
    session.handle_timeout(at(start, 3_600_000));
    assert_eq!(session.state(), SessionState::Active);
    assert!(drain_transmit(&mut session).is_empty());
}

#[test]
fn legacy_pong_also_measures_rtt() {
    let start = Instant::now();
    let mut session = joined_session(start);
    session.handle_timeout(at(start, 5000));
    let sent = drain_transmit(&mut session);
    let [Req::PingReq(ping)] = sent.as_slice() else {
        panic!("{sent:?}")
    };
    session.handle_response(resp(Resp::Pong(ping.timestamp)), at(start, 5007));
    assert_eq!(session.rtt(), Some(Duration::from_millis(7)));
    // A pong for a ping we never sent changes nothing.
    session.handle_response(resp(Resp::Pong(12345)), at(start, 6000));
    assert_eq!(session.rtt(), Some(Duration::from_millis(7)));
}

#[test]
fn a_leave_sent_through_send_is_a_leave() {
    let start = Instant::now();
    let mut session = joined_session(start);
    session.send(add_track("cam"));
    session.send(Req::Leave(proto::LeaveRequest {
        reason: proto::DisconnectReason::ClientInitiated as i32,
        ..Default::default()
    }));
    session.send(add_track("after"));
    let sent = drain_transmit(&mut session);
    // Frames not yet written are pointless once we leave: only the Leave goes out.
    assert!(matches!(sent.as_slice(), [Req::Leave(_)]), "{sent:?}");
    assert_eq!(session.state(), SessionState::Closed);
}
