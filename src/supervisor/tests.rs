//! The supervisor on simulated time: every input is fed at a chosen instant, timers fire exactly
//! when `poll_timeout` says, and the assertions name the exact actions and their times.
use super::*;

const VIDEO_AND_AUDIO: TrackSet = TrackSet {
    video: true,
    audio: true,
};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn config() -> SupervisorConfig {
    SupervisorConfig::new(VIDEO_AND_AUDIO)
}

/// A supervisor, a simulated clock, and everything it asked for, with the time it asked.
struct Sim {
    sup: Supervisor,
    t0: Instant,
    now: Instant,
}

impl Sim {
    fn new(config: SupervisorConfig) -> Self {
        Self::with_seed(config, 7)
    }

    fn with_seed(config: SupervisorConfig, seed: u64) -> Self {
        // Only a base for offsets: nothing below reads the clock again.
        let t0 = Instant::now();
        Self {
            sup: Supervisor::new(config, t0, seed),
            t0,
            now: t0,
        }
    }

    /// Simulated time since the start.
    fn at(&self) -> Duration {
        self.now - self.t0
    }

    fn drain(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.sup.poll_action()).collect()
    }

    fn input(&mut self, input: Input) -> Vec<Action> {
        self.sup.handle_input(input, self.now);
        self.drain()
    }

    /// Fire the next timer, if it is due by `limit` (since the start); the clock moves to it.
    fn step(&mut self, limit: Duration) -> Option<Vec<Action>> {
        let at = self.sup.poll_timeout()?;
        if at > self.t0 + limit {
            return None;
        }
        assert!(at >= self.now, "a timer in the past: {:?}", self.now - at);
        self.now = at;
        self.sup.handle_timeout(self.now);
        Some(self.drain())
    }

    /// Let time pass by `span`, firing timers; returns (time since start, action).
    fn advance(&mut self, span: Duration) -> Vec<(Duration, Action)> {
        let end = self.at() + span;
        let mut out = Vec::new();
        let mut fired = 0u32;
        while let Some(actions) = self.step(end) {
            fired += 1;
            assert!(fired < 10_000_000, "timers spin");
            let at = self.at();
            out.extend(actions.into_iter().map(|a| (at, a)));
        }
        self.now = self.t0 + end;
        out
    }

    /// Fire timers until an action matches; returns its time and everything up to it.
    fn until(
        &mut self,
        limit: Duration,
        wanted: impl Fn(&Action) -> bool,
    ) -> (Duration, Vec<Action>) {
        let mut seen = Vec::new();
        while let Some(actions) = self.step(limit) {
            let hit = actions.iter().any(&wanted);
            seen.extend(actions);
            if hit {
                return (self.at(), seen);
            }
        }
        panic!("nothing wanted within {limit:?}; saw {seen:?}");
    }

    /// Start, join, publish both tracks, connect, media flowing: Publishing.
    fn publishing(config: SupervisorConfig) -> Self {
        let mut sim = Sim::new(config);
        sim.input(Input::Start);
        sim.join_and_publish("PA_first");
        assert_eq!(sim.sup.status(), &Status::Publishing);
        sim
    }

    fn join_and_publish(&mut self, sid: &str) -> Vec<Action> {
        let mut all = self.input(Input::JoinSucceeded {
            participant_sid: sid.into(),
        });
        all.extend(self.publish_and_connect());
        all
    }

    fn publish_and_connect(&mut self) -> Vec<Action> {
        let mut all = self.input(Input::TrackPublished {
            track: Track::Video,
            track_sid: "TR_video".into(),
        });
        all.extend(self.input(Input::TrackPublished {
            track: Track::Audio,
            track_sid: "TR_audio".into(),
        }));
        all.extend(self.input(publisher(PeerConnectionState::Connected)));
        all.extend(self.input(Input::MediaFlowing {
            track: Track::Video,
        }));
        all
    }
}

fn publisher(state: PeerConnectionState) -> Input {
    Input::PeerState {
        pc: PeerConnectionKind::Publisher,
        state,
    }
}

fn unreachable() -> Input {
    Input::JoinFailed {
        http_status: None,
        refused: false,
        detail: "no answer".into(),
    }
}

fn http(status: u16) -> Input {
    Input::JoinFailed {
        http_status: Some(status),
        refused: false,
        detail: "rejected".into(),
    }
}

fn network(kind: NetworkChangeKind, has_default_route: bool) -> Input {
    Input::NetworkChanged {
        kind,
        has_default_route,
    }
}

const JOIN: Action = Action::OpenSignal { resume: false };
const RESUME: Action = Action::OpenSignal { resume: true };

fn is_open(action: &Action) -> bool {
    matches!(action, Action::OpenSignal { .. })
}

/// The actions that do something: no STATUS= lines, no LED updates, no watchdog.
fn deeds(actions: &[Action]) -> Vec<Action> {
    actions
        .iter()
        .filter(|a| {
            !matches!(
                a,
                Action::SetStatus(_)
                    | Action::Notify(Notice::Status(_))
                    | Action::Notify(Notice::Watchdog)
            )
        })
        .cloned()
        .collect()
}

fn events(actions: &[Action]) -> Vec<RoomEventKind> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Emit(event) => Some(event.clone()),
            _ => None,
        })
        .collect()
}

fn status_lines(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Notify(Notice::Status(text)) => Some(text.clone()),
            _ => None,
        })
        .collect()
}

fn timed_deeds(actions: &[(Duration, Action)]) -> Vec<(Duration, Action)> {
    actions
        .iter()
        .filter(|(_, a)| !deeds(std::slice::from_ref(a)).is_empty())
        .cloned()
        .collect()
}

// ---- backoff -------------------------------------------------------------------------------

#[test]
fn backoff_bounds_hold_over_many_seeds_and_the_jitter_spans_them() {
    let policy = BackoffPolicy::CONNECTION;
    let t0 = Instant::now();
    // attempt number → (smallest, largest) delay seen
    let mut seen: Vec<(Duration, Duration)> = vec![(Duration::MAX, Duration::ZERO); 12];
    for seed in 0..2000 {
        let mut backoff = Backoff::new(policy, seed);
        for attempt in 1..=11u32 {
            let delay = backoff.next_delay(t0);
            let (low, high) = policy.bounds(attempt, false);
            assert!(
                (low..=high).contains(&delay),
                "seed {seed} attempt {attempt}: {delay:?} not in {low:?}..={high:?}"
            );
            let s = &mut seen[attempt as usize];
            *s = (s.0.min(delay), s.1.max(delay));
        }
    }
    assert_eq!(
        seen[1],
        (Duration::ZERO, Duration::ZERO),
        "first retry immediate"
    );
    assert_eq!(policy.bounds(2, false), (ms(125), ms(250)));
    assert_eq!(policy.bounds(3, false), (ms(250), ms(500)));
    assert_eq!(policy.bounds(5, false), (ms(1000), ms(2000)));
    assert_eq!(policy.bounds(11, false), (ms(1000), ms(2000)), "capped");
    for attempt in 2..=11 {
        let (low, high) = policy.bounds(attempt, false);
        let (min, max) = seen[attempt as usize];
        let slack = (high - low) / 20;
        assert!(
            min <= low + slack && max >= high - slack,
            "attempt {attempt}: jitter spans only {min:?}..{max:?}"
        );
    }
}

#[test]
fn backoff_settles_to_the_steady_rate_after_the_fast_phase() {
    let policy = BackoffPolicy::CONNECTION;
    let t0 = Instant::now();
    for seed in 0..500 {
        let mut backoff = Backoff::new(policy, seed);
        backoff.next_delay(t0);
        let late = t0 + policy.fast_phase;
        for _ in 0..20 {
            let delay = backoff.next_delay(late);
            assert!(
                (secs(4)..=secs(6)).contains(&delay),
                "seed {seed}: {delay:?}"
            );
        }
        backoff.reset();
        assert_eq!(
            backoff.next_delay(late),
            Duration::ZERO,
            "a reset streak starts at once"
        );
    }
}

#[test]
fn the_same_seed_gives_the_same_delays() {
    let t0 = Instant::now();
    let run = |seed| {
        let mut b = Backoff::new(BackoffPolicy::CONNECTION, seed);
        (0..10).map(|_| b.next_delay(t0)).collect::<Vec<_>>()
    };
    assert_eq!(run(42), run(42));
    assert_ne!(run(42), run(43));
}

// ---- first join ----------------------------------------------------------------------------

#[test]
fn start_opens_a_fresh_join_at_once_and_says_connecting() {
    let mut sim = Sim::new(config());
    assert_eq!(sim.sup.status(), &Status::Stopped);
    assert_eq!(sim.sup.poll_timeout(), None, "nothing timed before Start");
    let actions = sim.input(Input::Start);
    assert_eq!(deeds(&actions), vec![JOIN]);
    assert!(actions.contains(&Action::SetStatus(Status::Connecting)));
    assert_eq!(
        status_lines(&actions),
        vec!["connecting: first join (attempt 1, now)".to_string()]
    );
    assert_eq!(
        sim.sup.poll_timeout(),
        Some(sim.t0 + secs(20)),
        "open_timeout"
    );
}

#[test]
fn a_join_publishes_and_announces_the_room_then_ready_only_once_media_flows() {
    let mut sim = Sim::new(config());
    sim.input(Input::Start);
    let joined = sim.input(Input::JoinSucceeded {
        participant_sid: "PA_1".into(),
    });
    assert_eq!(
        deeds(&joined),
        vec![
            Action::Emit(RoomEventKind::ParticipantConnectedForPresent),
            Action::PublishTracks
        ]
    );
    assert_eq!(sim.sup.participant_sid(), Some("PA_1"));
    let published = sim.input(Input::TrackPublished {
        track: Track::Video,
        track_sid: "TR_v".into(),
    });
    assert_eq!(
        deeds(&published),
        vec![Action::Emit(RoomEventKind::LocalTrackPublished {
            track: Track::Video,
            track_sid: "TR_v".into()
        })]
    );
    let connected = sim.input(publisher(PeerConnectionState::Connected));
    assert_eq!(
        deeds(&connected),
        vec![],
        "no READY=1 before media: {connected:?}"
    );
    assert_eq!(sim.sup.status(), &Status::Connecting);
    let flowing = sim.input(Input::MediaFlowing {
        track: Track::Video,
    });
    assert_eq!(deeds(&flowing), vec![Action::Notify(Notice::Ready)]);
    assert!(flowing.contains(&Action::SetStatus(Status::Publishing)));
    assert_eq!(sim.sup.status_text(), "publishing");
    let again = sim.input(Input::MediaFlowing {
        track: Track::Audio,
    });
    assert_eq!(deeds(&again), vec![], "READY=1 once");
}

#[test]
fn no_tracks_configured_is_ready_when_joined() {
    let mut sim = Sim::new(SupervisorConfig::new(TrackSet::default()));
    sim.input(Input::Start);
    let joined = sim.input(Input::JoinSucceeded {
        participant_sid: "PA_1".into(),
    });
    assert!(joined.contains(&Action::Notify(Notice::Ready)));
    assert_eq!(sim.sup.status(), &Status::Publishing);
}

#[test]
fn server_down_at_start_keeps_retrying_with_backoff_and_joins_when_it_appears() {
    let mut sim = Sim::new(config());
    sim.input(Input::Start);
    let policy = BackoffPolicy::CONNECTION;
    let mut last = Duration::ZERO;
    for attempt in 2..=8u32 {
        let failed = sim.input(unreachable());
        assert!(deeds(&failed).is_empty(), "{failed:?}");
        let (at, actions) = sim.until(secs(3600), is_open);
        assert_eq!(deeds(&actions), vec![JOIN]);
        let (low, high) = policy.bounds(attempt, false);
        assert!(
            (low..=high).contains(&(at - last)),
            "attempt {attempt} after {:?}",
            at - last
        );
        assert_eq!(sim.sup.attempt(), attempt);
        last = at;
    }
    assert_eq!(sim.sup.status(), &Status::Connecting);
    let joined = sim.join_and_publish("PA_1");
    assert!(joined.contains(&Action::Notify(Notice::Ready)));
    assert!(!joined
        .iter()
        .any(|a| matches!(a, Action::Emit(RoomEventKind::Reconnected))));
}

#[test]
fn an_attempt_that_never_answers_counts_as_failed_at_open_timeout() {
    let mut sim = Sim::new(config());
    sim.input(Input::Start);
    let (at, actions) = sim.until(secs(60), is_open);
    assert_eq!(deeds(&actions), vec![JOIN]);
    // 20 s open_timeout, then attempt 2 after 125–250 ms.
    assert!(
        (secs(20) + ms(125)..=secs(20) + ms(250)).contains(&at),
        "{at:?}"
    );
    assert!(status_lines(&actions)[0].contains("no answer within 20.0 s"));
}

#[test]
fn never_gives_up_over_three_simulated_days_and_keeps_the_watchdog_fed() {
    let mut cfg = config();
    cfg.watchdog_interval = Some(secs(15));
    let mut sim = Sim::new(cfg);
    sim.input(Input::Start);
    let days = secs(3 * 24 * 3600);
    let mut attempts = 1u64;
    let mut watchdogs = 0u64;
    let mut last_attempt = Duration::ZERO;
    let mut last_watchdog = Duration::ZERO;
    while sim.at() < days {
        // Every attempt fails the moment it starts.
        if let Phase::Opening { .. } = sim.sup.phase {
            let failed = sim.input(unreachable());
            assert!(!failed.iter().any(|a| matches!(a, Action::Exit(_))));
        }
        let Some(actions) = sim.step(days) else { break };
        for action in &actions {
            match action {
                Action::OpenSignal { resume: false } => {
                    let gap = sim.at() - last_attempt;
                    if sim.at() > secs(130) {
                        assert!(
                            (secs(4)..=secs(6)).contains(&gap),
                            "at {:?}: gap {gap:?}",
                            sim.at()
                        );
                    } else {
                        assert!(gap <= secs(6), "at {:?}: gap {gap:?}", sim.at());
                    }
                    last_attempt = sim.at();
                    attempts += 1;
                }
                Action::Notify(Notice::Watchdog) => {
                    assert_eq!(sim.at() - last_watchdog, secs(15));
                    last_watchdog = sim.at();
                    watchdogs += 1;
                }
                Action::Exit(_) => panic!("exited at {:?}", sim.at()),
                Action::Notify(Notice::Status(_)) | Action::SetStatus(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert!(days - last_attempt <= secs(6), "still trying at the end");
    // About one attempt per 5 s after the first two minutes.
    assert!((43_000..=65_000).contains(&attempts), "{attempts} attempts");
    assert_eq!(watchdogs, days.as_secs() / 15);
    assert_eq!(sim.sup.status(), &Status::Connecting);
    assert!(sim.sup.status_text().contains("server unreachable"));
}

#[test]
fn status_text_says_why_which_attempt_and_when_the_next_comes() {
    let mut sim = Sim::with_seed(config(), 1);
    sim.input(Input::Start);
    sim.input(unreachable());
    sim.until(secs(10), is_open);
    let failed = sim.input(unreachable());
    let lines = status_lines(&failed);
    assert_eq!(lines.len(), 1);
    let line = &lines[0];
    assert!(
        line.starts_with("connecting: server unreachable: no answer (attempt 3, next in 0."),
        "{line}"
    );
    assert!(line.ends_with(" s)"), "{line}");
}

// ---- auth ----------------------------------------------------------------------------------

#[test]
fn a_401_retries_slowly_in_minutes_and_the_network_does_not_hurry_it() {
    let mut sim = Sim::new(config());
    sim.input(Input::Start);
    let rejected = sim.input(http(401));
    assert!(deeds(&rejected).is_empty());
    assert_eq!(
        sim.sup.status(),
        &Status::NeedsAttention(Attention::AuthRejected { http_status: 401 })
    );
    assert!(sim.sup.status_text().contains("token rejected (HTTP 401)"));
    assert!(sim.sup.status_text().contains("min"));
    sim.advance(secs(10));
    let up = sim.input(network(NetworkChangeKind::LinkUp, true));
    assert!(deeds(&up).is_empty());
    let (at, actions) = sim.until(secs(3600), is_open);
    assert_eq!(deeds(&actions), vec![JOIN]);
    assert!((secs(270)..=secs(330)).contains(&at), "{at:?}");
    // 403 too, and a later success clears the attention.
    sim.input(http(403));
    assert_eq!(
        sim.sup.status(),
        &Status::NeedsAttention(Attention::AuthRejected { http_status: 403 })
    );
    let (at2, _) = sim.until(secs(3600), is_open);
    assert!((at + secs(270)..=at + secs(330)).contains(&at2));
    sim.join_and_publish("PA_1");
    assert_eq!(sim.sup.status(), &Status::Publishing);
}

#[test]
fn a_401_before_time_sync_retries_as_soon_as_the_clock_jumps() {
    let mut cfg = config();
    cfg.clock_synced = false;
    let mut sim = Sim::new(cfg);
    sim.input(Input::Start);
    sim.input(http(401));
    assert!(sim.sup.status_text().contains("clock is not synced"));
    sim.advance(secs(42));
    let jumped = sim.input(Input::ClockJumped);
    assert_eq!(deeds(&jumped), vec![JOIN]);
    assert_eq!(sim.at(), secs(42));
}

#[test]
fn a_clock_jump_without_a_401_does_nothing() {
    let mut sim = Sim::new(config());
    sim.input(Input::Start);
    sim.input(unreachable());
    assert!(deeds(&sim.input(Input::ClockJumped)).is_empty());
    let mut live = Sim::publishing(config());
    assert!(deeds(&live.input(Input::ClockJumped)).is_empty());
}

// ---- network -------------------------------------------------------------------------------

#[test]
fn a_network_up_event_retries_at_once_and_restarts_the_streak() {
    let mut sim = Sim::new(config());
    sim.input(Input::Start);
    // Fail for three minutes: the steady 4–6 s rate.
    while sim.at() < secs(180) {
        sim.input(unreachable());
        sim.until(secs(3600), is_open);
    }
    sim.input(unreachable());
    let waiting_until = sim.sup.poll_timeout().unwrap() - sim.t0;
    assert!(waiting_until - sim.at() >= secs(4));
    sim.advance(secs(1));
    let t = sim.at();
    let up = sim.input(network(NetworkChangeKind::DefaultRouteChanged, true));
    assert!(deeds(&up).is_empty(), "acts after the settle window");
    let (at, actions) = sim.until(secs(3600), is_open);
    assert_eq!(at, t + ms(20));
    assert_eq!(deeds(&actions), vec![JOIN]);
    assert_eq!(sim.sup.attempt(), 1);
    // The next failure is fast again.
    sim.input(unreachable());
    let (next, _) = sim.until(secs(3600), is_open);
    assert!((at + ms(125)..=at + ms(250)).contains(&next));
}

#[test]
fn without_a_default_route_the_status_says_waiting_for_network() {
    let mut sim = Sim::new(config());
    sim.input(Input::Start);
    let down = sim.input(network(NetworkChangeKind::LinkDown, false));
    assert!(down.contains(&Action::SetStatus(Status::WaitingForNetwork)));
    sim.advance(ms(20));
    sim.input(unreachable());
    assert_eq!(sim.sup.status(), &Status::WaitingForNetwork);
    assert!(sim
        .sup
        .status_text()
        .starts_with("waiting for network (no default route); connecting"));
    // Retries still go on their schedule (the route table may not tell the whole story).
    let (_, actions) = sim.until(secs(10), is_open);
    assert_eq!(deeds(&actions), vec![JOIN]);
}

#[test]
fn a_default_route_change_rebinds_and_resumes_before_any_timeout() {
    let mut sim = Sim::publishing(config());
    sim.advance(secs(60));
    let t = sim.at();
    // wifi loses its address, cell brings the default route: one burst.
    assert!(deeds(&sim.input(network(NetworkChangeKind::AddressRemoved, true))).is_empty());
    sim.advance(ms(5));
    assert!(deeds(&sim.input(network(NetworkChangeKind::DefaultRouteChanged, true))).is_empty());
    let fired = sim.advance(ms(15));
    assert_eq!(
        timed_deeds(&fired),
        vec![
            (t + ms(20), Action::Emit(RoomEventKind::Resuming)),
            (t + ms(20), Action::RebindSockets),
            (t + ms(20), RESUME),
        ]
    );
    assert_eq!(sim.sup.status(), &Status::Reconnecting);
    let resumed = sim.input(Input::ResumeSucceeded);
    assert_eq!(deeds(&resumed), vec![Action::SyncState, Action::IceRestart]);
    let connected = sim.input(publisher(PeerConnectionState::Connected));
    assert_eq!(
        deeds(&connected),
        vec![
            Action::Emit(RoomEventKind::Resumed),
            Action::RequestKeyframe
        ]
    );
    assert_eq!(
        sim.sup.participant_sid(),
        Some("PA_first"),
        "same participant"
    );
    assert_eq!(sim.sup.status(), &Status::Publishing);
}

#[test]
fn with_zero_settle_a_network_change_acts_within_the_same_call() {
    let mut cfg = config();
    cfg.network_settle = Duration::ZERO;
    let mut sim = Sim::publishing(cfg);
    let actions = sim.input(network(NetworkChangeKind::DefaultRouteChanged, true));
    assert_eq!(
        deeds(&actions),
        vec![
            Action::Emit(RoomEventKind::Resuming),
            Action::RebindSockets,
            RESUME
        ]
    );
}

#[test]
fn losing_the_only_route_waits_and_the_new_uplink_resumes_at_once() {
    let mut sim = Sim::publishing(config());
    sim.input(network(NetworkChangeKind::AddressRemoved, false));
    sim.input(network(NetworkChangeKind::LinkDown, false));
    let quiet = sim.advance(ms(500));
    assert!(
        timed_deeds(&quiet).is_empty(),
        "nowhere to resume to: {quiet:?}"
    );
    let t = sim.at();
    sim.input(network(NetworkChangeKind::LinkUp, false));
    sim.input(network(NetworkChangeKind::DefaultRouteChanged, true));
    let (at, actions) = sim.until(secs(1), is_open);
    assert_eq!(at, t + ms(20));
    assert_eq!(
        deeds(&actions),
        vec![
            Action::Emit(RoomEventKind::Resuming),
            Action::RebindSockets,
            RESUME
        ]
    );
}

#[test]
fn an_address_added_elsewhere_does_not_disturb_a_healthy_connection() {
    let mut sim = Sim::publishing(config());
    sim.input(network(NetworkChangeKind::AddressAdded, true));
    sim.input(network(NetworkChangeKind::LinkUp, true));
    assert!(timed_deeds(&sim.advance(secs(5))).is_empty());
    assert_eq!(sim.sup.status(), &Status::Publishing);
}

#[test]
fn a_network_change_during_the_ice_restart_restarts_ice_on_the_new_path() {
    let mut sim = Sim::publishing(config());
    sim.input(publisher(PeerConnectionState::Failed));
    sim.input(Input::ResumeSucceeded);
    sim.advance(secs(3));
    sim.input(network(NetworkChangeKind::DefaultRouteChanged, true));
    let fired = sim.advance(ms(20));
    assert_eq!(
        deeds(&fired.into_iter().map(|(_, a)| a).collect::<Vec<_>>()),
        vec![Action::RebindSockets, Action::IceRestart]
    );
    // The resume deadline starts again from the new restart.
    assert_eq!(sim.sup.poll_timeout(), Some(sim.now + secs(10)));
}

// ---- resume --------------------------------------------------------------------------------

#[test]
fn a_websocket_drop_resumes_at_once_without_an_ice_restart() {
    let mut sim = Sim::publishing(config());
    sim.advance(secs(60));
    let dropped = sim.input(Input::SignalClosed {
        detail: "code 1006".into(),
    });
    assert_eq!(
        deeds(&dropped),
        vec![Action::Emit(RoomEventKind::Resuming), RESUME]
    );
    assert!(sim
        .sup
        .status_text()
        .starts_with("resuming: signalling closed: code 1006 (attempt 1, now)"));
    let resumed = sim.input(Input::ResumeSucceeded);
    assert_eq!(
        deeds(&resumed),
        vec![Action::SyncState, Action::Emit(RoomEventKind::Resumed)],
        "the media path is intact: no ICE restart, no gap"
    );
    assert_eq!(sim.sup.status(), &Status::Publishing);
    assert_eq!(sim.sup.participant_sid(), Some("PA_first"));
}

#[test]
fn a_ping_timeout_resumes() {
    let mut sim = Sim::publishing(config());
    sim.input(publisher(PeerConnectionState::Disconnected));
    let lost = sim.input(Input::PingTimeout);
    assert_eq!(
        deeds(&lost),
        vec![
            Action::Emit(RoomEventKind::Resuming),
            Action::RebindSockets,
            RESUME
        ],
        "a PeerConnection is down too: the path is suspect"
    );
    let resumed = sim.input(Input::ResumeSucceeded);
    assert_eq!(
        deeds(&resumed),
        vec![Action::SyncState, Action::IceRestart],
        "the publisher is down: ICE restart"
    );
}

#[test]
fn a_failed_peer_connection_rebinds_resumes_and_restarts_ice() {
    let mut sim = Sim::publishing(config());
    let failed = sim.input(publisher(PeerConnectionState::Failed));
    assert_eq!(
        deeds(&failed),
        vec![
            Action::Emit(RoomEventKind::Resuming),
            Action::RebindSockets,
            RESUME
        ]
    );
    assert_eq!(
        deeds(&sim.input(Input::ResumeSucceeded)),
        vec![Action::SyncState, Action::IceRestart]
    );
    assert_eq!(
        deeds(&sim.input(publisher(PeerConnectionState::Connected))),
        vec![
            Action::Emit(RoomEventKind::Resumed),
            Action::RequestKeyframe
        ]
    );
}

#[test]
fn a_disconnected_peer_connection_gets_a_grace_period() {
    let mut sim = Sim::publishing(config());
    let t = sim.at();
    sim.input(publisher(PeerConnectionState::Disconnected));
    sim.advance(ms(1500));
    sim.input(publisher(PeerConnectionState::Connected));
    assert!(
        timed_deeds(&sim.advance(secs(10))).is_empty(),
        "a blip heals"
    );
    let t2 = sim.at();
    sim.input(Input::PeerState {
        pc: PeerConnectionKind::Subscriber,
        state: PeerConnectionState::Disconnected,
    });
    let fired = sim.advance(secs(5));
    assert_eq!(
        timed_deeds(&fired)[..3],
        [
            (t2 + secs(2), Action::Emit(RoomEventKind::Resuming)),
            (t2 + secs(2), Action::RebindSockets),
            (t2 + secs(2), RESUME),
        ]
    );
    assert!(t < t2);
}

#[test]
fn leave_resume_resumes_immediately_with_a_rebind() {
    let mut sim = Sim::publishing(config());
    let leave = sim.input(Input::Leave {
        action: LeaveAction::Resume,
        reason: "CONNECTION_TIMEOUT".into(),
    });
    assert_eq!(
        deeds(&leave),
        vec![
            Action::Emit(RoomEventKind::Resuming),
            Action::RebindSockets,
            RESUME
        ]
    );
}

#[test]
fn an_unreachable_server_keeps_resuming_within_the_window_then_escalates() {
    let mut sim = Sim::publishing(config());
    let t = sim.at();
    let mut all = sim.input(Input::SignalClosed {
        detail: "reset".into(),
    });
    let mut last_resume = t;
    loop {
        // Every attempt finds the server unreachable.
        all.extend(sim.input(unreachable()));
        if all.contains(&JOIN) {
            break;
        }
        let (at, actions) = sim.until(secs(600), is_open);
        if actions.contains(&RESUME) {
            last_resume = at;
        }
        all.extend(actions);
        if all.contains(&JOIN) {
            break;
        }
    }
    let resumes = all.iter().filter(|a| **a == RESUME).count();
    assert!(resumes > 10, "{resumes} resume attempts");
    assert_eq!(
        events(&all),
        vec![
            RoomEventKind::Resuming,
            RoomEventKind::ParticipantDisconnectedForAll,
            RoomEventKind::LocalTrackUnpublishedForAll,
            RoomEventKind::Reconnecting
        ]
    );
    // Resumes until the next one would fall past the 20 s window, then the join after its own
    // backoff (1–2 s at this point of the streak).
    assert!(
        last_resume - t >= secs(18),
        "resumed for the whole window: {last_resume:?}"
    );
    assert!(last_resume - t < secs(20));
    assert!(sim.at() - t <= secs(22), "{:?}", sim.at() - t);
    assert!(sim.sup.status_text().contains("no resume within 20.0 s"));
}

#[test]
fn an_ice_restart_that_does_not_connect_escalates_at_the_resume_timeout() {
    let mut sim = Sim::publishing(config());
    sim.input(publisher(PeerConnectionState::Failed));
    sim.advance(ms(300));
    sim.input(Input::ResumeSucceeded);
    let t = sim.at();
    let (at, actions) = sim.until(secs(60), is_open);
    assert_eq!(at, t + secs(10));
    assert_eq!(
        deeds(&actions),
        vec![
            Action::Emit(RoomEventKind::ParticipantDisconnectedForAll),
            Action::Emit(RoomEventKind::LocalTrackUnpublishedForAll),
            Action::Emit(RoomEventKind::Reconnecting),
            Action::RebuildPeerConnections,
            JOIN
        ]
    );
}

#[test]
fn a_connection_that_never_established_is_joined_afresh_not_resumed() {
    let mut sim = Sim::new(config());
    sim.input(Input::Start);
    sim.input(Input::JoinSucceeded {
        participant_sid: "PA_1".into(),
    });
    let closed = sim.input(Input::SignalClosed {
        detail: "reset".into(),
    });
    assert!(!closed.contains(&RESUME));
    assert!(closed.contains(&Action::RebuildPeerConnections));
    // The streak of the first join goes on: attempt 2.
    let (at, actions) = sim.until(secs(1), is_open);
    assert!((ms(125)..=ms(250)).contains(&at), "{at:?}");
    assert_eq!(deeds(&actions), vec![JOIN]);
}

#[test]
fn a_publisher_that_does_not_connect_after_a_join_is_rebuilt() {
    let mut sim = Sim::new(config());
    sim.input(Input::Start);
    sim.input(Input::JoinSucceeded {
        participant_sid: "PA_1".into(),
    });
    let (at, actions) = sim.until(secs(60), |a| *a == Action::RebuildPeerConnections);
    assert_eq!(at, secs(15));
    assert_eq!(
        events(&actions),
        vec![
            RoomEventKind::ParticipantDisconnectedForAll,
            RoomEventKind::LocalTrackUnpublishedForAll,
            RoomEventKind::Reconnecting
        ]
    );
    let (at, actions) = sim.until(secs(60), is_open);
    assert!(
        (secs(15) + ms(125)..=secs(15) + ms(250)).contains(&at),
        "{at:?}"
    );
    assert_eq!(deeds(&actions), vec![JOIN]);
}

// ---- full reconnect ------------------------------------------------------------------------

/// The seven steps of LiveKit's full reconnection, in order, each an event or an action.
fn assert_seven_steps(actions: &[Action]) {
    let wanted = [
        Action::Emit(RoomEventKind::ParticipantDisconnectedForAll),
        Action::Emit(RoomEventKind::LocalTrackUnpublishedForAll),
        Action::Emit(RoomEventKind::Reconnecting),
        Action::RebuildPeerConnections,
        JOIN,
        Action::Emit(RoomEventKind::Reconnected),
        Action::Emit(RoomEventKind::ParticipantConnectedForPresent),
        Action::PublishTracks,
        Action::Emit(RoomEventKind::LocalTrackPublished {
            track: Track::Video,
            track_sid: "TR_video".into(),
        }),
        Action::Emit(RoomEventKind::LocalTrackPublished {
            track: Track::Audio,
            track_sid: "TR_audio".into(),
        }),
        Action::RequestKeyframe,
    ];
    let got: Vec<Action> = deeds(actions)
        .into_iter()
        .filter(|a| wanted.contains(a))
        .collect();
    assert_eq!(got, wanted);
}

#[test]
fn a_failed_resume_escalates_to_a_full_reconnect_in_the_seven_step_order() {
    let mut sim = Sim::publishing(config());
    let mut all = sim.input(Input::SignalClosed {
        detail: "server restart".into(),
    });
    // The restarted server does not know us.
    all.extend(sim.input(http(500)));
    all.extend(sim.join_and_publish("PA_second"));
    assert_eq!(
        events(&all),
        vec![
            RoomEventKind::Resuming,
            RoomEventKind::ParticipantDisconnectedForAll,
            RoomEventKind::LocalTrackUnpublishedForAll,
            RoomEventKind::Reconnecting,
            RoomEventKind::Reconnected,
            RoomEventKind::ParticipantConnectedForPresent,
            RoomEventKind::LocalTrackPublished {
                track: Track::Video,
                track_sid: "TR_video".into()
            },
            RoomEventKind::LocalTrackPublished {
                track: Track::Audio,
                track_sid: "TR_audio".into()
            },
        ]
    );
    assert_seven_steps(&all);
    assert!(
        !all.contains(&Action::Notify(Notice::Ready)),
        "READY=1 was sent at the first join"
    );
    assert_eq!(sim.sup.participant_sid(), Some("PA_second"));
    assert_eq!(sim.sup.status(), &Status::Publishing);
}

#[test]
fn resume_rejected_with_state_mismatch_escalates_at_once() {
    let mut sim = Sim::publishing(config());
    sim.input(Input::SignalClosed {
        detail: "eof".into(),
    });
    let rejected = sim.input(Input::ResumeRejected {
        reason: "STATE_MISMATCH".into(),
    });
    let mut all = rejected.clone();
    assert!(rejected.contains(&JOIN), "no delay: {rejected:?}");
    all.extend(sim.join_and_publish("PA_2"));
    assert_seven_steps(&all);
}

#[test]
fn leave_reconnect_escalates_at_once_and_a_join_failure_then_backs_off() {
    let mut sim = Sim::publishing(config());
    let mut all = sim.input(Input::Leave {
        action: LeaveAction::Reconnect,
        reason: "STATE_MISMATCH".into(),
    });
    assert!(all.contains(&JOIN));
    assert!(
        !events(&all).contains(&RoomEventKind::Resuming),
        "no resume tried"
    );
    assert_eq!(sim.sup.status(), &Status::Reconnecting);
    // The server is still coming up: the rejoin fails, then succeeds; steps 1–3 are not repeated.
    let failed = sim.input(unreachable());
    assert!(events(&failed).is_empty());
    assert!(sim
        .sup
        .status_text()
        .starts_with("reconnecting: server unreachable"));
    let (_, retried) = sim.until(secs(5), is_open);
    assert_eq!(deeds(&retried), vec![JOIN]);
    all.extend(sim.join_and_publish("PA_2"));
    assert_seven_steps(&all);
}

#[test]
fn the_keyframe_waits_for_the_new_publisher_to_connect() {
    let mut sim = Sim::publishing(config());
    sim.input(Input::Leave {
        action: LeaveAction::Reconnect,
        reason: "MIGRATION".into(),
    });
    sim.input(Input::JoinSucceeded {
        participant_sid: "PA_2".into(),
    });
    let published = sim.input(Input::TrackPublished {
        track: Track::Video,
        track_sid: "TR_v2".into(),
    });
    assert!(!published.contains(&Action::RequestKeyframe));
    let connected = sim.input(publisher(PeerConnectionState::Connected));
    assert!(connected.contains(&Action::RequestKeyframe));
    assert_eq!(
        sim.sup.status(),
        &Status::Reconnecting,
        "until media flows again"
    );
    sim.input(Input::MediaFlowing {
        track: Track::Video,
    });
    assert_eq!(sim.sup.status(), &Status::Publishing);
}

#[test]
fn repeated_server_reconnects_stop_being_immediate() {
    let mut sim = Sim::publishing(config());
    let mut immediate = Vec::new();
    for round in 0..8 {
        let leave = sim.input(Input::Leave {
            action: LeaveAction::Reconnect,
            reason: "STATE_MISMATCH".into(),
        });
        if leave.contains(&JOIN) {
            immediate.push((round, sim.at()));
        } else {
            sim.until(secs(10), is_open);
        }
        // Joined, but the server sends RECONNECT again before the publisher connects.
        sim.input(Input::JoinSucceeded {
            participant_sid: format!("PA_{round}"),
        });
    }
    // The loss's own first retry is immediate (a new backoff streak), then URGENT_RETRIES more;
    // after that the backoff, and never more than that many within URGENT_WINDOW.
    let burst = URGENT_RETRIES + 1;
    let rounds: Vec<usize> = immediate.iter().map(|(round, _)| *round).collect();
    assert_eq!(&rounds[..burst], &[0, 1, 2, 3], "{immediate:?}");
    assert!(!rounds.contains(&burst), "then the backoff: {immediate:?}");
    for (i, (_, at)) in immediate.iter().enumerate().skip(burst) {
        assert!(
            *at - immediate[i - URGENT_RETRIES].1 >= URGENT_WINDOW,
            "more than URGENT_RETRIES within URGENT_WINDOW: {immediate:?}"
        );
    }
}

// ---- removal -------------------------------------------------------------------------------

#[test]
fn leave_disconnect_never_rejoins_and_keeps_the_watchdog_fed() {
    let mut cfg = config();
    cfg.watchdog_interval = Some(secs(15));
    let mut sim = Sim::publishing(cfg);
    let removed = sim.input(Input::Leave {
        action: LeaveAction::Disconnect,
        reason: "DUPLICATE_IDENTITY".into(),
    });
    assert_eq!(
        deeds(&removed),
        vec![
            Action::Emit(RoomEventKind::ParticipantDisconnectedForAll),
            Action::Emit(RoomEventKind::LocalTrackUnpublishedForAll),
            Action::CloseConnection,
            Action::Emit(RoomEventKind::Disconnected {
                reason: "DUPLICATE_IDENTITY".into(),
                by_server: true
            }),
        ]
    );
    assert_eq!(
        sim.sup.status(),
        &Status::NeedsAttention(Attention::RemovedByServer {
            reason: "DUPLICATE_IDENTITY".into()
        })
    );
    assert!(sim.sup.status_text().contains("not rejoining"));
    // Whatever else happens, no rejoin: a day later only watchdog pings.
    sim.input(network(NetworkChangeKind::DefaultRouteChanged, true));
    sim.input(Input::SignalClosed {
        detail: "closed".into(),
    });
    sim.input(Input::ClockJumped);
    let day = sim.advance(secs(24 * 3600));
    assert!(
        timed_deeds(&day).is_empty(),
        "{:?}",
        timed_deeds(&day).first()
    );
    let pings = day
        .iter()
        .filter(|(_, a)| *a == Action::Notify(Notice::Watchdog))
        .count();
    assert_eq!(pings, 24 * 3600 / 15);
}

#[test]
fn a_removal_hold_off_rejoins_after_the_long_wait() {
    let mut cfg = config();
    cfg.rejoin_after_removal = Some(secs(600));
    let mut sim = Sim::publishing(cfg);
    sim.advance(secs(100));
    sim.input(Input::Leave {
        action: LeaveAction::Disconnect,
        reason: "PARTICIPANT_REMOVED".into(),
    });
    assert!(sim.sup.status_text().contains("rejoining in 10.0 min"));
    let (at, actions) = sim.until(secs(3600), is_open);
    assert_eq!(at, secs(700));
    assert_eq!(deeds(&actions), vec![JOIN]);
    let joined = sim.join_and_publish("PA_back");
    assert!(!events(&joined).contains(&RoomEventKind::Reconnected));
    assert_eq!(sim.sup.status(), &Status::Publishing);
}

#[test]
fn a_disconnect_as_the_first_message_of_a_join_is_a_removal() {
    let mut sim = Sim::new(config());
    sim.input(Input::Start);
    let removed = sim.input(Input::Leave {
        action: LeaveAction::Disconnect,
        reason: "ROOM_DELETED".into(),
    });
    assert_eq!(
        deeds(&removed),
        vec![
            Action::CloseConnection,
            Action::Emit(RoomEventKind::Disconnected {
                reason: "ROOM_DELETED".into(),
                by_server: true
            })
        ]
    );
    assert_eq!(sim.sup.poll_timeout(), None);
}

// ---- media ---------------------------------------------------------------------------------

#[test]
fn a_track_failure_restarts_that_track_with_its_own_backoff_and_the_other_goes_on() {
    let mut sim = Sim::publishing(config());
    let failed = sim.input(Input::MediaFailed {
        track: Track::Video,
        error: "VIDIOC_DQBUF: ENODEV".into(),
    });
    assert_eq!(
        deeds(&failed),
        vec![
            Action::Emit(RoomEventKind::LocalTrackFailed {
                track: Track::Video,
                error: "VIDIOC_DQBUF: ENODEV".into()
            }),
            Action::RestartTrack {
                track: Track::Video
            },
        ]
    );
    assert_eq!(
        sim.sup.status(),
        &Status::NeedsAttention(Attention::TrackFailed {
            track: Track::Video
        })
    );
    assert_eq!(
        sim.sup.status_text(),
        "video track failed: VIDIOC_DQBUF: ENODEV (restart 1 now); audio goes on"
    );
    // The restart fails too: the next one waits 250–500 ms, then 0.5–1 s.
    let t = sim.at();
    sim.input(Input::MediaFailed {
        track: Track::Video,
        error: "open: ENOENT".into(),
    });
    let (at, actions) = sim.until(secs(60), |a| matches!(a, Action::RestartTrack { .. }));
    assert!((t + ms(250)..=t + ms(500)).contains(&at), "{at:?}");
    assert_eq!(
        deeds(&actions),
        vec![Action::RestartTrack {
            track: Track::Video
        }]
    );
    let t = sim.at();
    sim.input(Input::MediaFailed {
        track: Track::Video,
        error: "open: ENOENT".into(),
    });
    let (at, _) = sim.until(secs(60), |a| matches!(a, Action::RestartTrack { .. }));
    assert!((t + ms(500)..=t + ms(1000)).contains(&at), "{at:?}");
    // No connection action at any point: the audio and the session go on.
    let recovered = sim.input(Input::MediaRecovered {
        track: Track::Video,
    });
    assert_eq!(
        deeds(&recovered),
        vec![Action::Emit(RoomEventKind::LocalTrackRecovered {
            track: Track::Video
        })]
    );
    assert_eq!(sim.sup.status(), &Status::Publishing);
    // Healthy for a minute: the next failure restarts at once again.
    sim.advance(secs(60));
    let again = sim.input(Input::MediaFailed {
        track: Track::Video,
        error: "EIO".into(),
    });
    assert!(again.contains(&Action::RestartTrack {
        track: Track::Video
    }));
}

#[test]
fn tracks_back_off_independently() {
    let mut sim = Sim::publishing(config());
    for _ in 0..3 {
        let failed = sim.input(Input::MediaFailed {
            track: Track::Video,
            error: "EIO".into(),
        });
        if !failed.contains(&Action::RestartTrack {
            track: Track::Video,
        }) {
            sim.until(secs(60), |a| matches!(a, Action::RestartTrack { .. }));
        }
    }
    let audio = sim.input(Input::MediaFailed {
        track: Track::Audio,
        error: "snd_pcm_readi: EPIPE".into(),
    });
    assert!(
        audio.contains(&Action::RestartTrack {
            track: Track::Audio
        }),
        "audio's first restart is immediate whatever video did"
    );
}

#[test]
fn connected_without_media_needs_attention_and_gets_no_ready() {
    let mut sim = Sim::new(config());
    sim.input(Input::Start);
    sim.input(Input::JoinSucceeded {
        participant_sid: "PA_1".into(),
    });
    sim.advance(secs(1));
    sim.input(publisher(PeerConnectionState::Connected));
    let t = sim.at();
    let fired = sim.advance(secs(20));
    assert!(fired.contains(&(
        t + secs(15),
        Action::SetStatus(Status::NeedsAttention(Attention::NoMedia))
    )));
    assert!(!fired
        .iter()
        .any(|(_, a)| *a == Action::Notify(Notice::Ready)));
    assert!(sim
        .sup
        .status_text()
        .contains("no media has flowed for 15.0 s"));
    let flowing = sim.input(Input::MediaFlowing {
        track: Track::Audio,
    });
    assert!(flowing.contains(&Action::Notify(Notice::Ready)));
    assert_eq!(sim.sup.status(), &Status::Publishing);
}

// ---- backoff across losses ------------------------------------------------------------------

#[test]
fn a_flapping_connection_continues_its_streak_and_a_stable_one_starts_afresh() {
    let mut sim = Sim::publishing(config());
    sim.advance(secs(60));
    // Stable for a minute: the loss resumes at once.
    assert!(sim.input(Input::PingTimeout).contains(&RESUME));
    sim.input(Input::ResumeSucceeded);
    // Lost two seconds later: one quick loss still goes at once.
    sim.advance(secs(2));
    let quick = sim.input(Input::SignalClosed {
        detail: "eof".into(),
    });
    assert!(quick.contains(&RESUME), "{quick:?}");
    sim.input(Input::ResumeSucceeded);
    // And again: now it waits its turn (attempt 2: 125–250 ms).
    sim.advance(secs(2));
    let t = sim.at();
    let again = sim.input(Input::SignalClosed {
        detail: "eof".into(),
    });
    assert!(!again.contains(&RESUME), "{again:?}");
    let (at, _) = sim.until(secs(600), is_open);
    assert!((t + ms(125)..=t + ms(250)).contains(&at), "{at:?}");
    // A minute of calm: the next loss is immediate again.
    sim.input(Input::ResumeSucceeded);
    sim.advance(secs(60));
    assert!(sim.input(Input::PingTimeout).contains(&RESUME));
}

// ---- shutdown ------------------------------------------------------------------------------

#[test]
fn shutdown_sends_leave_then_stopping_and_exits_zero() {
    let mut cfg = config();
    cfg.watchdog_interval = Some(secs(15));
    let mut sim = Sim::publishing(cfg);
    let stop = sim.input(Input::Shutdown);
    assert_eq!(
        stop,
        vec![
            Action::SendLeave,
            Action::Notify(Notice::Stopping),
            Action::Emit(RoomEventKind::Disconnected {
                reason: "CLIENT_INITIATED".into(),
                by_server: false
            }),
            Action::SetStatus(Status::Stopped),
            Action::Exit(0),
        ]
    );
    assert_eq!(
        sim.sup.poll_timeout(),
        None,
        "no timers, not even the watchdog"
    );
    assert!(sim
        .input(Input::SignalClosed { detail: "x".into() })
        .is_empty());
    assert!(sim.input(Input::Start).is_empty());
    sim.sup.handle_timeout(sim.now + secs(3600));
    assert!(sim.drain().is_empty(), "no further reconnects");
}

#[test]
fn shutdown_while_retrying_sends_no_leave() {
    let mut sim = Sim::new(config());
    sim.input(Input::Start);
    sim.input(unreachable());
    let stop = sim.input(Input::Shutdown);
    assert!(!stop.contains(&Action::SendLeave));
    assert_eq!(stop.last(), Some(&Action::Exit(0)));
    assert_eq!(sim.sup.poll_timeout(), None);
}

#[test]
fn shutdown_while_resuming_has_no_socket_to_leave_on() {
    let mut sim = Sim::publishing(config());
    sim.input(Input::PingTimeout);
    let stop = sim.input(Input::Shutdown);
    assert!(!stop.contains(&Action::SendLeave));
    assert!(stop.contains(&Action::Notify(Notice::Stopping)));
}

// ---- plumbing ------------------------------------------------------------------------------

#[test]
fn stale_inputs_are_ignored() {
    let mut sim = Sim::publishing(config());
    assert!(sim.input(Input::ResumeSucceeded).is_empty());
    assert!(sim
        .input(Input::JoinSucceeded {
            participant_sid: "PA_x".into()
        })
        .is_empty());
    assert!(sim.input(unreachable()).is_empty());
    assert!(sim.input(Input::Start).is_empty());
    assert_eq!(sim.sup.participant_sid(), Some("PA_first"));
}

#[test]
fn the_action_queue_is_bounded_and_drops_superseded_lines_first() {
    let mut cfg = config();
    cfg.watchdog_interval = Some(ms(10));
    let mut sim = Sim::new(cfg);
    sim.sup.handle_input(Input::Start, sim.t0);
    // A shell that never drains: the watchdog keeps adding.
    for i in 1..=200u64 {
        sim.sup.handle_timeout(sim.t0 + ms(10 * i));
    }
    assert_eq!(sim.sup.actions.len(), ACTION_QUEUE_CAP);
    assert!(sim.sup.dropped_actions() > 0);
    let kept = sim.drain();
    assert_eq!(kept.len(), ACTION_QUEUE_CAP);
    assert_eq!(kept[0], JOIN, "what must be done is never dropped");
    assert!(
        kept[1..]
            .iter()
            .all(|a| *a == Action::Notify(Notice::Watchdog)),
        "the status lines and the oldest watchdog pings went first: {kept:?}"
    );
}

// ---- more transitions ------------------------------------------------------------------------

fn statuses(actions: &[Action]) -> Vec<Status> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::SetStatus(status) => Some(status.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn the_led_status_walks_through_every_state_in_order() {
    let mut sim = Sim::new(config());
    let mut all = sim.input(Input::Start);
    all.extend(sim.join_and_publish("PA_1"));
    all.extend(sim.input(Input::MediaFailed {
        track: Track::Audio,
        error: "EPIPE".into(),
    }));
    all.extend(sim.input(Input::MediaRecovered {
        track: Track::Audio,
    }));
    all.extend(sim.input(Input::SignalClosed {
        detail: "eof".into(),
    }));
    all.extend(sim.input(Input::ResumeSucceeded));
    sim.advance(secs(60));
    all.extend(sim.input(network(NetworkChangeKind::LinkDown, false)));
    sim.advance(ms(20));
    all.extend(sim.input(publisher(PeerConnectionState::Failed)));
    all.extend(sim.input(network(NetworkChangeKind::DefaultRouteChanged, true)));
    let superseded = sim.advance(ms(20));
    assert_eq!(
        timed_deeds(&superseded),
        vec![(sim.at(), Action::RebindSockets), (sim.at(), RESUME)]
    );
    all.extend(sim.input(Input::ResumeSucceeded));
    all.extend(sim.input(publisher(PeerConnectionState::Connected)));
    all.extend(sim.input(Input::Leave {
        action: LeaveAction::Disconnect,
        reason: "PARTICIPANT_REMOVED".into(),
    }));
    all.extend(sim.input(Input::Shutdown));
    assert_eq!(
        statuses(&all),
        vec![
            Status::Connecting,
            Status::Publishing,
            Status::NeedsAttention(Attention::TrackFailed {
                track: Track::Audio
            }),
            Status::Publishing,
            Status::Reconnecting,
            Status::Publishing,
            Status::WaitingForNetwork,
            Status::Reconnecting,
            Status::Publishing,
            Status::NeedsAttention(Attention::RemovedByServer {
                reason: "PARTICIPANT_REMOVED".into()
            }),
            Status::Stopped,
        ]
    );
}

#[test]
fn a_401_during_a_resume_escalates_to_a_fresh_token_and_join() {
    let mut sim = Sim::publishing(config());
    sim.input(Input::SignalClosed {
        detail: "eof".into(),
    });
    let rejected = sim.input(http(401));
    assert!(rejected.contains(&Action::RebuildPeerConnections));
    assert!(
        rejected.contains(&JOIN),
        "a fresh token may cure it: at once"
    );
    // If the fresh join is refused too, then it is the slow auth retry.
    sim.input(http(401));
    assert_eq!(
        sim.sup.status(),
        &Status::NeedsAttention(Attention::AuthRejected { http_status: 401 })
    );
}

#[test]
fn signalling_lost_again_during_the_ice_restart_resumes_again() {
    let mut sim = Sim::publishing(config());
    sim.input(publisher(PeerConnectionState::Failed));
    sim.input(Input::ResumeSucceeded);
    let lost = sim.input(Input::SignalClosed {
        detail: "eof".into(),
    });
    let (_, actions) = if lost.contains(&RESUME) {
        (sim.at(), lost)
    } else {
        sim.until(secs(5), is_open)
    };
    assert_eq!(deeds(&actions), vec![Action::RebindSockets, RESUME]);
    assert_eq!(sim.sup.participant_sid(), Some("PA_first"));
}

#[test]
fn a_route_change_supersedes_an_attempt_in_flight_but_a_new_address_does_not() {
    let mut sim = Sim::new(config());
    sim.input(Input::Start);
    sim.advance(secs(1));
    sim.input(network(NetworkChangeKind::AddressAdded, true));
    assert!(timed_deeds(&sim.advance(secs(1))).is_empty());
    sim.input(network(NetworkChangeKind::DefaultRouteChanged, true));
    let fired = sim.advance(ms(20));
    assert_eq!(timed_deeds(&fired), vec![(secs(2) + ms(20), JOIN)]);
}

#[test]
fn an_attempt_started_without_a_route_is_superseded_when_one_comes_up() {
    let mut sim = Sim::new(config());
    sim.input(network(NetworkChangeKind::LinkDown, false));
    sim.advance(ms(20));
    sim.input(Input::Start);
    assert_eq!(sim.sup.status(), &Status::WaitingForNetwork);
    sim.advance(secs(3));
    sim.input(network(NetworkChangeKind::AddressAdded, true));
    let fired = sim.advance(ms(20));
    assert_eq!(timed_deeds(&fired), vec![(secs(3) + ms(40), JOIN)]);
    assert_eq!(sim.sup.status(), &Status::Connecting);
}

#[test]
fn the_clock_jump_retry_says_why() {
    let mut cfg = config();
    cfg.clock_synced = false;
    let mut sim = Sim::new(cfg);
    sim.input(Input::Start);
    sim.input(http(401));
    let jumped = sim.input(Input::ClockJumped);
    assert_eq!(
        status_lines(&jumped),
        vec![
            "connecting: the clock was set: retrying with a freshly minted token (attempt 1, now)"
                .to_string()
        ]
    );
    assert!(jumped.contains(&Action::SetStatus(Status::Connecting)));
}

#[test]
fn leave_disconnect_during_a_resume_stops_there() {
    let mut sim = Sim::publishing(config());
    sim.input(Input::SignalClosed {
        detail: "eof".into(),
    });
    let removed = sim.input(Input::Leave {
        action: LeaveAction::Disconnect,
        reason: "DUPLICATE_IDENTITY".into(),
    });
    assert_eq!(
        events(&removed),
        vec![
            RoomEventKind::ParticipantDisconnectedForAll,
            RoomEventKind::LocalTrackUnpublishedForAll,
            RoomEventKind::Disconnected {
                reason: "DUPLICATE_IDENTITY".into(),
                by_server: true
            }
        ]
    );
    assert!(timed_deeds(&sim.advance(secs(3600))).is_empty());
}

#[test]
fn leave_disconnect_during_a_full_reconnect_does_not_repeat_the_teardown_events() {
    let mut sim = Sim::publishing(config());
    sim.input(Input::Leave {
        action: LeaveAction::Reconnect,
        reason: "STATE_MISMATCH".into(),
    });
    // The rejoin (session not there yet) is refused for good.
    let removed = sim.input(Input::Leave {
        action: LeaveAction::Disconnect,
        reason: "ROOM_DELETED".into(),
    });
    assert_eq!(
        deeds(&removed),
        vec![
            Action::CloseConnection,
            Action::Emit(RoomEventKind::Disconnected {
                reason: "ROOM_DELETED".into(),
                by_server: true
            })
        ]
    );
}

#[test]
fn resume_rejected_during_the_ice_restart_escalates() {
    let mut sim = Sim::publishing(config());
    sim.input(publisher(PeerConnectionState::Failed));
    sim.input(Input::ResumeSucceeded);
    let rejected = sim.input(Input::ResumeRejected {
        reason: "STATE_MISMATCH".into(),
    });
    assert_eq!(
        deeds(&rejected),
        vec![
            Action::Emit(RoomEventKind::ParticipantDisconnectedForAll),
            Action::Emit(RoomEventKind::LocalTrackUnpublishedForAll),
            Action::Emit(RoomEventKind::Reconnecting),
            Action::RebuildPeerConnections,
            JOIN
        ]
    );
}

#[test]
fn a_link_down_with_another_route_left_resumes_on_it() {
    let mut sim = Sim::publishing(config());
    let t = sim.at();
    sim.input(network(NetworkChangeKind::LinkDown, true));
    let fired = sim.advance(ms(20));
    assert_eq!(
        timed_deeds(&fired),
        vec![
            (t + ms(20), Action::Emit(RoomEventKind::Resuming)),
            (t + ms(20), Action::RebindSockets),
            (t + ms(20), RESUME)
        ]
    );
}

#[test]
fn a_watchdog_tick_goes_on_in_every_state_but_stopped() {
    let mut cfg = config();
    cfg.watchdog_interval = Some(secs(10));
    let mut sim = Sim::new(cfg);
    let pings = |fired: &[(Duration, Action)]| {
        fired
            .iter()
            .filter(|(_, a)| *a == Action::Notify(Notice::Watchdog))
            .count()
    };
    assert_eq!(pings(&sim.advance(secs(30))), 3, "before Start");
    sim.input(Input::Start);
    sim.input(unreachable());
    assert_eq!(pings(&sim.advance(secs(30))), 3, "while retrying");
    sim.until(secs(600), is_open);
    sim.join_and_publish("PA_1");
    assert_eq!(pings(&sim.advance(secs(30))), 3, "while publishing");
    sim.input(Input::Shutdown);
    assert_eq!(sim.sup.poll_timeout(), None);
}

// ---- a server restart ------------------------------------------------------------------------

fn refused() -> Input {
    Input::JoinFailed {
        http_status: None,
        refused: true,
        detail: "connection refused".into(),
    }
}

/// Times of the next `OpenSignal` after each failure, until `end`.
fn attempts_while(sim: &mut Sim, failure: fn() -> Input, end: Duration) -> Vec<Duration> {
    let mut times = Vec::new();
    while sim.at() < end {
        sim.input(failure());
        let (at, _) = sim.until(end + secs(10), is_open);
        times.push(at);
    }
    times
}

fn gaps(times: &[Duration]) -> Vec<Duration> {
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

#[test]
fn a_restarting_server_is_polled_every_200_ms_and_rejoined_at_once() {
    // The signalling drops and the server's port refuses connections while it restarts: the
    // resume is retried every 150-250 ms (not on the backoff, which would be at 2 s by now).
    // The restarted server knows nothing of us (STATE_MISMATCH): the full reconnect's join goes
    // out at once, however many resumes the outage took.
    let mut sim = Sim::publishing(config());
    sim.input(Input::SignalClosed {
        detail: "eof".into(),
    });
    let times = attempts_while(&mut sim, refused, secs(5));
    assert!(times.len() >= 20, "{times:?}");
    for gap in gaps(&times) {
        assert!(gap >= ms(150) && gap <= ms(250), "{gap:?} in {times:?}");
    }
    let rejected = sim.input(Input::ResumeRejected {
        reason: "STATE_MISMATCH".into(),
    });
    assert!(rejected.contains(&JOIN), "no delay: {rejected:?}");
    let mut all = rejected;
    all.extend(sim.join_and_publish("PA_2"));
    assert_seven_steps(&all);
}

#[test]
fn refused_connections_fall_back_to_the_backoff_after_a_minute() {
    let mut sim = Sim::new(config());
    sim.input(Input::Start);
    let times = attempts_while(&mut sim, refused, secs(120));
    let (fast, slow): (Vec<Duration>, Vec<Duration>) =
        times.iter().partition(|t| **t < SERVER_RESTART_WINDOW);
    assert!(
        gaps(&fast).iter().all(|g| *g <= ms(250)),
        "{:?}",
        gaps(&fast)
    );
    assert!(
        gaps(&slow).iter().all(|g| *g >= ms(500)),
        "a minute of refusals is not a restart: {:?}",
        gaps(&slow)
    );
    // An unreachable server (no answer at all) is never polled fast.
    let mut sim = Sim::new(config());
    sim.input(Input::Start);
    let times = attempts_while(&mut sim, unreachable, secs(30));
    assert!(
        gaps(&times).iter().skip(3).all(|g| *g >= ms(500)),
        "{times:?}"
    );
}

#[test]
fn a_proxys_502_counts_as_a_restarting_server() {
    let mut sim = Sim::new(config());
    sim.input(Input::Start);
    let times = attempts_while(&mut sim, || http(502), secs(10));
    assert!(gaps(&times).iter().all(|g| *g <= ms(250)), "{times:?}");
}

#[test]
fn each_of_several_server_restarts_is_rejoined_at_once() {
    // Restarts a few seconds apart (each connection shorter than stable_after, so the backoff
    // streak carries on): every one is still rejoined at once when the server answers.
    let mut sim = Sim::publishing(config());
    for round in 0..5 {
        sim.advance(secs(6));
        sim.input(Input::SignalClosed {
            detail: "eof".into(),
        });
        sim.input(refused());
        let limit = sim.at() + secs(5);
        sim.until(limit, is_open);
        let rejected = sim.input(Input::ResumeRejected {
            reason: "STATE_MISMATCH".into(),
        });
        assert!(rejected.contains(&JOIN), "round {round}: {rejected:?}");
        sim.join_and_publish(&format!("PA_{round}"));
    }
}
