//! Issue 3 acceptance: the device client against devroom. Run inside `tests/netns.sh`
//! (scripts/test.sh does); everything talks over 127.0.0.x only.
//!
//! Every wait here is a wait on a condition (a devroom event, a room event, a counter) with a
//! deadline; nothing sleeps to let time pass.

use devroom::{DevRoom, DevRoomConfig};
use roomcast::media::{AudioSettings, VideoSettings};
use roomcast::room::{PathChoice, Room, RoomEvent, RoomOptions, SignalPath};
use serde_json::Value;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

const WIDTH: u32 = 320;
const HEIGHT: u32 = 240;
const FPS: u32 = 30;

mod common;
use common::join_token_signed as token;

async fn devroom(frame_dir: &Path) -> DevRoom {
    let config = DevRoomConfig {
        frame_dir: frame_dir.to_path_buf(),
        ..DevRoomConfig::local("127.0.0.1:0".parse().unwrap())
    };
    DevRoom::start(config).await.expect("devroom starts")
}

fn options(url: &str, token: String, path: PathChoice) -> RoomOptions {
    let mut o = RoomOptions::new(url, token);
    o.signal_path = path;
    o.video = VideoSettings {
        device: "test-pattern".into(),
        width: WIDTH,
        height: HEIGHT,
        fps: FPS,
        bitrate: 500,
    };
    o.audio = AudioSettings {
        device: "tone".into(),
        ..Default::default()
    };
    o
}

fn as_json(e: &impl serde::Serialize) -> Value {
    serde_json::to_value(e).unwrap()
}

/// Wait for a room event matching `pred`, failing on Disconnected or after `timeout`.
async fn wait_room_event(
    events: &mut mpsc::UnboundedReceiver<RoomEvent>,
    timeout: Duration,
    mut pred: impl FnMut(&RoomEvent) -> bool,
) -> RoomEvent {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(e)) if pred(&e) => return e,
            Ok(Some(RoomEvent::Disconnected { reason, .. })) => {
                panic!("room disconnected while waiting: {reason}")
            }
            Ok(Some(_)) => {}
            Ok(None) => panic!("room event stream ended"),
            Err(_) => panic!("no matching room event within {timeout:?}"),
        }
    }
}

/// Wait until `check` returns Some, polling every 50 ms, up to `timeout`.
async fn wait_until<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn devroom_tracks(room: &DevRoom, identity: &str) -> Vec<Value> {
    devroom::demo::tracks_of(&room.snapshot(), identity)
}

/// Join, publish both tracks, and wait until devroom saw RTP on both. Returns (room, events, sids).
async fn join_and_publish(
    devroom: &DevRoom,
    identity: &str,
    path: PathChoice,
) -> (Room, mpsc::UnboundedReceiver<RoomEvent>, Vec<String>) {
    let (room, mut events) = Room::connect(options(
        &devroom.url(),
        token(identity, "lobby", "secret"),
        path,
    ))
    .await
    .expect("join");
    let mut sids = Vec::new();
    while sids.len() < 2 {
        if let RoomEvent::LocalTrackPublished { track_sid, .. } =
            wait_room_event(&mut events, Duration::from_secs(10), |e| {
                matches!(e, RoomEvent::LocalTrackPublished { .. })
            })
            .await
        {
            sids.push(track_sid);
        }
    }
    for sid in &sids {
        let wanted = sid.clone();
        let seen = devroom
            .wait_event(Duration::from_secs(10), move |e| {
                let v = as_json(e);
                v["type"] == "first_rtp" && v["track_sid"] == wanted.as_str()
            })
            .await;
        assert!(
            seen.is_some(),
            "devroom saw no RTP on track {sid}: {:#}",
            devroom.snapshot()
        );
    }
    (room, events, sids)
}

async fn publishes_both_tracks(path: PathChoice, expect: SignalPath, wire: &str) {
    let dir = tempfile::tempdir().unwrap();
    let devroom = devroom(dir.path()).await;
    let (room, _events, sids) = join_and_publish(&devroom, "cam-1", path).await;
    assert_eq!(room.signal_path(), Some(expect));
    let joined = devroom
        .wait_event(Duration::from_secs(1), |e| {
            as_json(e)["type"] == "participant_joined"
        })
        .await
        .expect("participant_joined");
    assert_eq!(as_json(&joined)["signal_path"], wire);
    let tracks = devroom_tracks(&devroom, "cam-1");
    let codecs: Vec<String> = tracks
        .iter()
        .map(|t| t["codec"].as_str().unwrap_or("").to_lowercase())
        .collect();
    assert!(
        codecs.contains(&"video/h264".to_string()),
        "codecs at devroom: {codecs:?}"
    );
    assert!(
        codecs.contains(&"audio/opus".to_string()),
        "codecs at devroom: {codecs:?}"
    );
    let local = room.local_participant();
    for sid in &sids {
        assert!(local.tracks.iter().any(|t| &t.sid == sid));
    }
    room.close().await;
    devroom.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn publishes_h264_and_opus_over_rtc_v1() {
    publishes_both_tracks(PathChoice::V1, SignalPath::V1, "v1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn publishes_h264_and_opus_over_rtc_v0() {
    publishes_both_tracks(PathChoice::V0, SignalPath::V0, "v0").await;
}

/// devroom counts at least 90 % of the video frames sent over 5 s, and the last frame it
/// decoded is our test pattern, pixel for pixel within codec tolerance.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn devroom_receives_90_percent_of_frames_and_decodes_the_test_pattern() {
    let dir = tempfile::tempdir().unwrap();
    let devroom = devroom(dir.path()).await;
    let (room, _events, _) = join_and_publish(&devroom, "cam-frames", PathChoice::Auto).await;
    let video = room
        .local_participant()
        .tracks
        .into_iter()
        .find(|t| t.kind == roomcast::room::TrackKind::Video)
        .unwrap();
    let received = |sid: &str| {
        devroom_tracks(&devroom, "cam-frames")
            .into_iter()
            .find(|t| t["sid"] == sid)
            .map(|t| t["frames"].as_u64().unwrap_or(0))
            .unwrap_or(0)
    };
    let sent = || {
        room.local_participant()
            .tracks
            .iter()
            .find(|t| t.sid == video.sid)
            .map(|t| t.frames_sent)
            .unwrap_or(0)
    };
    let (sent_start, received_start) = (sent(), received(&video.sid));
    // A 5 s window: 5 * FPS frames leave the device.
    let target = sent_start + 5 * FPS as u64;
    wait_until(Duration::from_secs(12), || (sent() >= target).then_some(()))
        .await
        .expect("device kept sending");
    let sent_window = sent() - sent_start;
    // Frames in flight need a moment to land; wait for the count, with a deadline.
    let needed = received_start + sent_window * 9 / 10;
    let got = wait_until(Duration::from_secs(3), || {
        let r = received(&video.sid);
        (r >= needed).then_some(r)
    })
    .await;
    assert!(
        got.is_some(),
        "devroom counted {} of {sent_window} frames sent in 5 s (need 90 %)",
        received(&video.sid) - received_start
    );

    eprintln!(
        "devroom counted {} of {sent_window} frames sent",
        received(&video.sid) - received_start
    );
    let png_path = devroom
        .write_png(&video.sid)
        .await
        .expect("devroom decodes a frame");
    let (rgb, w, h) = read_png(&png_path);
    assert_eq!((w, h), (WIDTH, HEIGHT));
    let checked = roomcast::media::synthetic::check_rgb(&rgb, w, h, 48)
        .unwrap_or_else(|e| panic!("{}: {e}", png_path.display()));
    assert!(checked > 100);
    room.close().await;
    devroom.shutdown().await;
}

fn read_png(path: &Path) -> (Vec<u8>, u32, u32) {
    let decoder = png::Decoder::new(BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let bytes = &buf[..info.buffer_size()];
    let rgb = match info.color_type {
        png::ColorType::Rgb => bytes.to_vec(),
        png::ColorType::Rgba => bytes.chunks(4).flat_map(|p| [p[0], p[1], p[2]]).collect(),
        other => panic!("unexpected PNG colour type {other:?}"),
    };
    (rgb, info.width, info.height)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bad_token_names_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let devroom = devroom(dir.path()).await;
    let result = Room::connect(options(
        &devroom.url(),
        token("cam-bad", "lobby", "not-the-secret"),
        PathChoice::Auto,
    ))
    .await;
    let err = match result {
        Ok(_) => panic!("a token signed with the wrong secret was accepted"),
        Err(e) => e,
    };
    assert!(err.is_auth_failure(), "expected a 401, got: {err}");
    // The reason devroom gave (validate endpoint) is in our error, verbatim.
    let rejected = devroom
        .wait_event(Duration::from_secs(2), |e| {
            as_json(e)["type"] == "join_rejected"
        })
        .await
        .expect("devroom logged the rejection");
    let reason = as_json(&rejected)["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        !reason.is_empty() && err.to_string().contains(&reason),
        "{err} lacks {reason:?}"
    );
    let text = err.to_string();
    assert!(text.contains("401"), "{text}");
    // The reason comes from the server (validate endpoint), not just the status line.
    assert!(
        text.len() > "the server refused the connection (HTTP 401): ".len() + 3,
        "no reason in: {text}"
    );
    devroom.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refresh_tokens_reach_the_cache_callback() {
    let dir = tempfile::tempdir().unwrap();
    let devroom = devroom(dir.path()).await;
    let stored = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut o = options(
        &devroom.url(),
        token("cam-refresh", "lobby", "secret"),
        PathChoice::Auto,
    );
    let sink = stored.clone();
    o.on_token_refreshed = Some(Arc::new(move |t: &str| {
        sink.lock().unwrap().push(t.to_string())
    }));
    o.video.device = "none".into();
    o.audio.device = "none".into();
    let (room, _events) = Room::connect(o).await.expect("join");
    let refreshed = wait_until(Duration::from_secs(5), || {
        stored.lock().unwrap().first().cloned()
    })
    .await
    .expect("a refresh_token");
    room.close().await;
    // The refreshed token is good for the next join.
    let mut again = options(&devroom.url(), refreshed, PathChoice::Auto);
    again.video.device = "none".into();
    again.audio.device = "none".into();
    let (room, _events) = Room::connect(again)
        .await
        .expect("join with the refreshed token");
    assert_eq!(room.local_participant().identity, "cam-refresh");
    room.close().await;
    devroom.shutdown().await;
}

// ---- the built binary: `roomcast run` ------------------------------------------------------

struct Device {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

/// The service manager's end of NOTIFY_SOCKET: the lines `roomcast run` sends.
struct Notices(mpsc::UnboundedReceiver<String>);

impl Notices {
    /// Bind a datagram socket at `path` and collect what arrives.
    fn bind(path: &Path) -> Notices {
        let socket = std::os::unix::net::UnixDatagram::bind(path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let (tx, rx) = mpsc::unbounded_channel::<String>();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = socket.recv(&mut buf) {
                for line in String::from_utf8_lossy(&buf[..n]).lines() {
                    if tx.send(line.to_string()).is_err() {
                        return;
                    }
                }
            }
        });
        Notices(rx)
    }

    /// Lines up to and including the first that matches; None after `timeout`.
    async fn until(
        &mut self,
        wanted: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Option<Vec<String>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let line = tokio::time::timeout_at(deadline, self.0.recv())
                .await
                .ok()??;
            let done = wanted(&line);
            seen.push(line);
            if done {
                return Some(seen);
            }
        }
    }
}

impl Device {
    fn spawn(config: &Path) -> Device {
        let mut command = Command::new(common::roomcast_bin());
        command
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info");
        Device::spawn_command(command)
    }

    /// As systemd starts it (Type=notify, WatchdogSec=2s), with NOTIFY_SOCKET bound in `dir`.
    fn spawn_under_systemd(config: &Path, dir: &Path) -> (Device, Notices) {
        let socket_path = dir.join("notify.sock");
        let notices = Notices::bind(&socket_path);
        let mut command = Command::new(common::roomcast_bin());
        command
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .env("NOTIFY_SOCKET", &socket_path)
            .env("WATCHDOG_USEC", "2000000");
        (Device::spawn_command(command), notices)
    }

    fn spawn_command(mut command: Command) -> Device {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the process");
        let lines = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            });
        }
        Device { child, lines }
    }

    fn output(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Send `signal` straight through kill(2): no fork/exec of /bin/kill eats into a budget the
    /// caller times.
    fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own child's.
        let result = unsafe { libc::kill(pid, signal) };
        assert_eq!(
            result,
            0,
            "kill({pid}, {signal}): {}",
            std::io::Error::last_os_error()
        );
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_config(dir: &Path, url: &str, token: &str) -> PathBuf {
    let path = dir.join("roomcast.toml");
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(
        &path,
        format!(
            "url = \"{url}\"\ntoken = \"{token}\"\nstate_dir = \"{}\"\n\n[video]\ndevice = \"test-pattern\"\nwidth = {WIDTH}\nheight = {HEIGHT}\nfps = {FPS}\nbitrate = 500\n\n[audio]\ndevice = \"tone\"\n",
            state.display()
        ),
    )
    .unwrap();
    path
}

async fn wait_first_rtp_of(devroom: &DevRoom, identity: &str) {
    let who = identity.to_string();
    let published = devroom
        .wait_event(Duration::from_secs(15), move |e| {
            let v = as_json(e);
            v["type"] == "track_published" && v["identity"] == who.as_str() && v["kind"] == "video"
        })
        .await
        .expect("the device published video");
    let sid = as_json(&published)["track_sid"]
        .as_str()
        .unwrap()
        .to_string();
    devroom
        .wait_event(Duration::from_secs(10), move |e| {
            let v = as_json(e);
            v["type"] == "first_rtp" && v["track_sid"] == sid.as_str()
        })
        .await
        .expect("RTP from the device");
}

/// SIGTERM: Leave{CLIENT_INITIATED} reaches devroom within 1 s, and the process exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_sends_leave_within_one_second() {
    let dir = tempfile::tempdir().unwrap();
    let devroom = devroom(dir.path()).await;
    let config = write_config(
        dir.path(),
        &devroom.url(),
        &token("cam-term", "lobby", "secret"),
    );
    let mut device = Device::spawn(&config);
    wait_first_rtp_of(&devroom, "cam-term").await;
    let sent = Instant::now();
    device.signal(libc::SIGTERM);
    let leave = devroom
        .wait_event(Duration::from_secs(3), |e| {
            let v = as_json(e);
            v["type"] == "leave_received" && v["identity"] == "cam-term"
        })
        .await;
    let elapsed = sent.elapsed();
    let leave = leave.unwrap_or_else(|| {
        panic!(
            "no Leave reached devroom; device said:\n{}",
            device.output()
        )
    });
    eprintln!("Leave reached devroom {elapsed:?} after SIGTERM");
    assert!(elapsed < Duration::from_secs(1), "Leave took {elapsed:?}");
    assert!(
        as_json(&leave)["reason"]
            .as_str()
            .unwrap_or("")
            .contains("CLIENT_INITIATED"),
        "{leave:?}"
    );
    // After the Leave devroom has forgotten the identity; the sid still names the socket.
    let sid = as_json(&leave)["sid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let closed = devroom
        .wait_event(Duration::from_secs(2), move |e| {
            let v = as_json(e);
            v["type"] == "ws_closed" && v["sid"] == sid.as_str()
        })
        .await
        .expect("the WebSocket closed");
    assert_eq!(as_json(&closed)["code"], 1000);
    let exited = wait_until(Duration::from_secs(3), || {
        device.child.try_wait().ok().flatten()
    })
    .await;
    assert!(
        exited.is_some_and(|s| s.success()),
        "roomcast did not exit cleanly: {:?}\n{}",
        exited,
        device.output()
    );
    devroom.shutdown().await;
}

/// The JSON room events a `roomcast run` printed so far.
fn printed_events(device: &Device) -> Vec<Value> {
    device
        .lines
        .lock()
        .unwrap()
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|v| v.get("event").is_some())
        .collect()
}

fn seq_of(event: &devroom::DevRoomEvent) -> u64 {
    as_json(event)["seq"].as_u64().unwrap_or(0)
}

/// A second join with the same identity: the earlier device is told DUPLICATE_IDENTITY, reports
/// Disconnected{DUPLICATE_IDENTITY, removed}, stays up, and does not rejoin: between its own join
/// and the newer device leaving, devroom logs exactly one further join for the identity, the
/// newer one's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn duplicate_identity_stops_the_earlier_device_without_rejoin() {
    let dir = tempfile::tempdir().unwrap();
    let devroom = devroom(dir.path()).await;
    let config = write_config(
        dir.path(),
        &devroom.url(),
        &token("cam-dup", "lobby", "secret"),
    );
    // Started as systemd would, so the test also sees what the service manager is told.
    let (mut device, mut notices) = Device::spawn_under_systemd(&config, dir.path());
    wait_first_rtp_of(&devroom, "cam-dup").await;
    let first_join = devroom
        .wait_event(Duration::from_secs(1), |e| {
            let v = as_json(e);
            v["type"] == "participant_joined" && v["identity"] == "cam-dup"
        })
        .await
        .expect("the earlier device's join is logged");

    let mut newcomer = options(
        &devroom.url(),
        token("cam-dup", "lobby", "secret"),
        PathChoice::Auto,
    );
    newcomer.video.device = "none".into();
    newcomer.audio.device = "none".into();
    let (room, _events) = Room::connect(newcomer)
        .await
        .expect("the second device joins");
    let newer_sid = room.local_participant().sid;

    let reported = wait_until(Duration::from_secs(5), || {
        printed_events(&device)
            .into_iter()
            .find(|v| v["event"] == "disconnected")
    })
    .await;
    let reported = reported.unwrap_or_else(|| {
        panic!(
            "the earlier device reported no Disconnected:\n{}",
            device.output()
        )
    });
    assert_eq!(reported["reason"], "DUPLICATE_IDENTITY", "{reported}");
    assert_eq!(reported["kind"], "removed", "{reported}");
    assert!(
        device.output().contains("not rejoining"),
        "the earlier device did not say it stays down:\n{}",
        device.output()
    );

    let status = notices
        .until(
            |l| l.starts_with("STATUS=") && l.contains("DUPLICATE_IDENTITY"),
            Duration::from_secs(5),
        )
        .await
        .unwrap_or_else(|| panic!("no STATUS= naming the cause:\n{}", device.output()));
    assert!(
        status.last().unwrap().contains("not rejoining"),
        "{status:?}"
    );
    // Idle by design: the watchdog stays fed, or systemd would restart us into a rejoin.
    for _ in 0..2 {
        let fed = notices
            .until(|l| l == "WATCHDOG=1", Duration::from_secs(4))
            .await;
        assert!(fed.is_some(), "the watchdog starved after the removal");
    }

    // Bound the window by an event we cause: the newer device leaving.
    room.close().await;
    let newer_left = devroom
        .wait_event(Duration::from_secs(3), |e| {
            let v = as_json(e);
            v["type"] == "leave_received" && v["sid"] == newer_sid.as_str()
        })
        .await
        .expect("devroom saw the newer device leave");
    let joins_in_window: Vec<Value> = devroom
        .past_events()
        .iter()
        .filter(|e| seq_of(e) > seq_of(&first_join) && seq_of(e) < seq_of(&newer_left))
        .map(as_json)
        .filter(|v| v["type"] == "participant_joined" && v["identity"] == "cam-dup")
        .collect();
    assert_eq!(
        joins_in_window.len(),
        1,
        "expected only the newer device's join: {joins_in_window:?}\n{}",
        device.output()
    );
    assert_eq!(joins_in_window[0]["sid"], newer_sid.as_str());
    assert!(
        device.child.try_wait().unwrap().is_none(),
        "the process must stay up:\n{}",
        device.output()
    );
    devroom.shutdown().await;
}

/// Spawn `roomcast run` for `identity` and wait until devroom receives its video.
async fn publishing_device(devroom: &DevRoom, dir: &Path, identity: &str) -> Device {
    let config = write_config(dir, &devroom.url(), &token(identity, "lobby", "secret"));
    let device = Device::spawn(&config);
    wait_first_rtp_of(devroom, identity).await;
    device
}

/// A lost link ends `roomcast run` with status 75 and a message naming the cause, so that
/// systemd's Restart=always starts a fresh join.
async fn assert_exits_for_restart(mut device: Device, cause: &str) {
    let exited = wait_until(Duration::from_secs(20), || {
        device.child.try_wait().ok().flatten()
    })
    .await;
    let output = device.output();
    let status = exited.unwrap_or_else(|| panic!("roomcast did not exit:\n{output}"));
    eprintln!("roomcast exited with {status}; it said:\n{output}");
    assert_eq!(status.code(), Some(75), "{output}");
    assert!(
        output.contains("exiting with status 75 so systemd restarts roomcast"),
        "{output}"
    );
    assert!(
        output.contains(cause),
        "the exit message does not name {cause:?}:\n{output}"
    );
    let disconnected = printed_events(&device)
        .into_iter()
        .find(|v| v["event"] == "disconnected")
        .unwrap_or_else(|| panic!("no disconnected event printed:\n{output}"));
    assert_eq!(disconnected["kind"], "lost", "{disconnected}");
}

/// devroom sends a Leave with `action` to a publishing device; `roomcast run` must exit for a
/// restart, naming `cause`.
async fn server_leave_makes_run_exit_for_a_restart(
    identity: &str,
    action: devroom::LeaveAction,
    cause: &str,
) {
    let dir = tempfile::tempdir().unwrap();
    let devroom = devroom(dir.path()).await;
    let device = publishing_device(&devroom, dir.path(), identity).await;
    assert!(
        devroom
            .faults()
            .send_leave(identity, devroom::DisconnectReason::Migration, action)
            .await
    );
    assert_exits_for_restart(device, cause).await;
    devroom.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leave_with_reconnect_makes_run_exit_for_a_restart() {
    server_leave_makes_run_exit_for_a_restart(
        "cam-reconnect",
        devroom::LeaveAction::Reconnect,
        "Leave MIGRATION with action RECONNECT",
    )
    .await;
}

/// RESUME closes only the WebSocket on devroom's side; without a resume path we start afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leave_with_resume_makes_run_exit_for_a_restart() {
    server_leave_makes_run_exit_for_a_restart(
        "cam-resume",
        devroom::LeaveAction::Resume,
        "with action RESUME",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unanswered_pings_make_run_exit_for_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = DevRoomConfig {
        frame_dir: dir.path().to_path_buf(),
        ping_interval: 1,
        ping_timeout: 3,
        ..DevRoomConfig::local("127.0.0.1:0".parse().unwrap())
    };
    let devroom = DevRoom::start(config).await.expect("devroom starts");
    let device = publishing_device(&devroom, dir.path(), "cam-pings").await;
    assert!(devroom.faults().answer_pings("cam-pings", false));
    assert_exits_for_restart(device, "no answer to ping_req").await;
    devroom.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dropped_websocket_makes_run_exit_for_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let devroom = devroom(dir.path()).await;
    let device = publishing_device(&devroom, dir.path(), "cam-dropped").await;
    assert!(devroom.faults().drop_ws("cam-dropped"));
    assert_exits_for_restart(device, "the signalling WebSocket closed").await;
    devroom.shutdown().await;
}

/// Under systemd (Type=notify, WatchdogSec): READY=1 once joined and publishing, STATUS= on
/// state changes, WATCHDOG=1 at WatchdogSec/2, STOPPING=1 on SIGTERM. The test is the service
/// manager: it binds NOTIFY_SOCKET and reads the datagrams.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_notifies_systemd_ready_status_watchdog_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let devroom = devroom(dir.path()).await;
    let config = write_config(
        dir.path(),
        &devroom.url(),
        &token("cam-notify", "lobby", "secret"),
    );
    let (mut device, mut notices) = Device::spawn_under_systemd(&config, dir.path());

    let before_ready = notices
        .until(|l| l == "READY=1", Duration::from_secs(20))
        .await
        .unwrap_or_else(|| panic!("no READY=1:\n{}", device.output()));
    // STATUS names the media path ICE chose (devroom on loopback: a direct UDP pair).
    assert!(
        before_ready
            .iter()
            .any(|l| l.starts_with("STATUS=connected via udp (host udp ")),
        "{before_ready:?}"
    );
    // READY=1 means joined and publishing: devroom has the join, and the device had both
    // tracks accepted (it prints each LocalTrackPublished before it sends READY=1).
    assert!(
        devroom
            .past_events()
            .iter()
            .map(as_json)
            .any(|v| { v["type"] == "participant_joined" && v["identity"] == "cam-notify" }),
        "READY=1 before devroom saw the join"
    );
    let published = wait_until(Duration::from_secs(2), || {
        let n = printed_events(&device)
            .iter()
            .filter(|v| v["event"] == "local_track_published")
            .count();
        (n == 2).then_some(n)
    })
    .await;
    assert!(
        published.is_some(),
        "READY=1 but not both tracks published:\n{}",
        device.output()
    );
    // WatchdogSec=2 s: pings every second, and they keep coming.
    for _ in 0..2 {
        let got = notices
            .until(|l| l == "WATCHDOG=1", Duration::from_secs(4))
            .await;
        assert!(got.is_some(), "no WATCHDOG=1:\n{}", device.output());
    }
    device.signal(libc::SIGTERM);
    let got = notices
        .until(|l| l == "STOPPING=1", Duration::from_secs(3))
        .await;
    assert!(got.is_some(), "no STOPPING=1:\n{}", device.output());
    let exited = wait_until(Duration::from_secs(3), || {
        device.child.try_wait().ok().flatten()
    })
    .await;
    assert!(exited.is_some_and(|s| s.success()), "{}", device.output());
    devroom.shutdown().await;
}

// ---- an official SDK in the same room --------------------------------------------------------

fn python() -> PathBuf {
    let venv = std::env::var_os("ROOMCAST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.peers/venv"));
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "no official-SDK venv at {}: run scripts/install-deps.sh (or set ROOMCAST_VENV)",
        venv.display()
    );
    python
}

/// The official Python SDK receives roomcast's video and audio as decoded frames, and roomcast
/// reports the Python participant, its tracks, and (auto_subscribe) its subscriptions.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_official_python_participant_and_roomcast_see_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let devroom = devroom(dir.path()).await;
    let (room, mut events, _) = join_and_publish(&devroom, "cam-py", PathChoice::Auto).await;

    let mut command = Command::new(python());
    command
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../peers/py_peer.py"))
        .args([
            "--url",
            &devroom.url(),
            "--token",
            &token("py-peer", "lobby", "secret"),
        ])
        .args([
            "--publish",
            std::env::var("PY_PUBLISH")
                .as_deref()
                .unwrap_or("audio,video"),
            "--expect-from",
            "cam-py",
            "--expect-video",
            "20",
            "--expect-audio",
            "20",
        ])
        .args(["--stay", "40", "--hold"]);
    let mut peer = Device::spawn_command(command);

    let connected = wait_room_event(
        &mut events,
        Duration::from_secs(20),
        |e| matches!(e, RoomEvent::ParticipantConnected { identity, .. } if identity == "py-peer"),
    )
    .await;
    assert!(matches!(connected, RoomEvent::ParticipantConnected { .. }));
    let (mut published, mut subscribed, mut seen) = (Vec::new(), Vec::new(), Vec::new());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while published.len() < 2 || subscribed.len() < 2 {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(RoomEvent::TrackPublished {
                participant, kind, ..
            })) if participant == "py-peer" => published.push(kind),
            Ok(Some(RoomEvent::TrackSubscribed {
                participant, kind, ..
            })) if participant == "py-peer" => subscribed.push(kind),
            Ok(Some(other)) => seen.push(other),
            Ok(None) | Err(_) => break,
        }
    }
    let context = format!("other room events: {seen:?}\npy_peer:\n{}", peer.output());
    assert_eq!(
        published.len(),
        2,
        "TrackPublished from py-peer: {published:?}\n{context}"
    );
    assert_eq!(
        subscribed.len(),
        2,
        "TrackSubscribed from py-peer: {subscribed:?}\n{context}"
    );
    assert!(room.remote_participants()["py-peer"]
        .tracks
        .values()
        .all(|t| t.subscribed));

    // The peer holds on until its expectations on cam-py are met; the summary says so.
    let met = wait_until(Duration::from_secs(30), || {
        peer.output().contains("\"expectations_met\"").then_some(())
    })
    .await;
    peer.signal(libc::SIGTERM);
    let status = wait_until(Duration::from_secs(10), || {
        peer.child.try_wait().ok().flatten()
    })
    .await;
    let output = peer.output();
    assert!(
        met.is_some(),
        "py_peer never reported its expectations:\n{output}"
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "py_peer failed ({status:?}):\n{output}"
    );
    let summary: Value = output
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|v| v.get("summary").cloned())
        .unwrap_or_else(|| panic!("no summary from py_peer:\n{output}"));
    let received = summary["received"].as_object().cloned().unwrap_or_default();
    let ours: Vec<&Value> = received
        .iter()
        .filter(|(k, _)| k.starts_with("cam-py/"))
        .map(|(_, v)| v)
        .collect();
    let video = ours
        .iter()
        .find(|v| v["kind"] == "video")
        .expect("py_peer decoded our video");
    let audio = ours
        .iter()
        .find(|v| v["kind"] == "audio")
        .expect("py_peer decoded our audio");
    assert!(video["frames"].as_u64().unwrap_or(0) >= 20, "{summary}");
    assert_eq!(
        (video["width"].as_u64(), video["height"].as_u64()),
        (Some(WIDTH as u64), Some(HEIGHT as u64))
    );
    assert!(audio["frames"].as_u64().unwrap_or(0) >= 20, "{summary}");
    // The subscriber's PLI went through devroom to us and our interceptor handed it to the encoder.
    let video = room
        .local_participant()
        .tracks
        .into_iter()
        .find(|t| t.kind == roomcast::room::TrackKind::Video)
        .unwrap();
    assert!(
        video.keyframe_requests >= 1,
        "no PLI/FIR reached the encoder: {video:?}"
    );
    room.close().await;
    devroom.shutdown().await;
}

/// A keyframe request (the PLI devroom's SFU sends when a subscriber joins) makes the encoder
/// answer with an IDR at once, not at its next periodic one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_keyframe_request_is_answered_with_an_idr_before_the_periodic_one() {
    use roomcast::media::h264::PERIODIC_IDR_SECONDS;
    let dir = tempfile::tempdir().unwrap();
    let devroom = devroom(dir.path()).await;
    let (publisher, _publisher_events, _) =
        join_and_publish(&devroom, "cam-pli", PathChoice::Auto).await;
    let video = |room: &Room| {
        room.local_participant()
            .tracks
            .into_iter()
            .find(|t| t.kind == roomcast::room::TrackKind::Video)
            .expect("a local video track")
    };
    let video_sid = video(&publisher).sid;
    let devroom_keyframes = || {
        devroom_tracks(&devroom, "cam-pli")
            .iter()
            .find(|t| t["sid"] == video_sid.as_str())
            .and_then(|t| t["keyframes"].as_u64())
            .unwrap_or(0)
    };
    let keyframes_before = devroom_keyframes();

    let mut watcher = options(
        &devroom.url(),
        token("watcher-pli", "lobby", "secret"),
        PathChoice::Auto,
    );
    watcher.video.device = "none".into();
    watcher.audio.device = "none".into();
    let (watcher, _watcher_events) = Room::connect(watcher).await.expect("watcher joins");
    let sid = video_sid.clone();
    devroom
        .wait_event(Duration::from_secs(15), move |e| {
            let v = as_json(e);
            v["type"] == "keyframe_requested" && v["track_sid"] == sid.as_str()
        })
        .await
        .expect("devroom asked the publisher for a keyframe when the watcher subscribed");

    // Without the request, keyframes come only at frame 0 and every `periodic` frames after it.
    let periodic = u64::from(FPS * PERIODIC_IDR_SECONDS);
    let answered = wait_until(
        Duration::from_secs(u64::from(PERIODIC_IDR_SECONDS)) / 2,
        || {
            let track = video(&publisher);
            let periodic_only = 1 + track.frames_sent.saturating_sub(1) / periodic;
            (track.keyframes_sent > periodic_only && devroom_keyframes() > keyframes_before)
                .then_some(track)
        },
    )
    .await;
    let track = video(&publisher);
    assert!(
        answered.is_some(),
        "no extra IDR within {}s of the keyframe request: {track:?}, devroom counted {} keyframes (was {keyframes_before})",
        PERIODIC_IDR_SECONDS / 2,
        devroom_keyframes()
    );
    assert!(track.keyframe_requests >= 1, "{track:?}");
    watcher.close().await;
    publisher.close().await;
    devroom.shutdown().await;
}

/// RoomService.MutePublishedTrack through devroom's Twirp endpoint, as a room admin.
async fn twirp_mute(devroom: &DevRoom, identity: &str, track_sid: &str, muted: bool) {
    use livekit_api::access_token::{AccessToken, VideoGrants};
    let admin = AccessToken::with_api_key("devkey", "secret")
        .with_identity("admin")
        .with_grants(VideoGrants {
            room_admin: true,
            room: "lobby".into(),
            ..Default::default()
        })
        .to_jwt()
        .unwrap();
    let url = format!(
        "{}/twirp/livekit.RoomService/MutePublishedTrack",
        devroom.http_url()
    );
    let body = serde_json::json!({
        "room": "lobby",
        "identity": identity,
        "track_sid": track_sid,
        "muted": muted,
    })
    .to_string();
    let (status, reply) = tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut resp = agent
            .post(&url)
            .header("Authorization", &format!("Bearer {admin}"))
            .header("Content-Type", "application/json")
            .send(&body)
            .unwrap();
        (
            resp.status().as_u16(),
            resp.body_mut().read_to_string().unwrap(),
        )
    })
    .await
    .unwrap();
    assert_eq!(status, 200, "MutePublishedTrack: {reply}");
}

/// A server mute (RoomService.MutePublishedTrack) stops the track's media until the server
/// unmutes it; roomcast confirms with MuteTrackRequest and reports TrackMuted/TrackUnmuted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_mute_stops_the_tracks_media_until_unmuted() {
    let dir = tempfile::tempdir().unwrap();
    let devroom = devroom(dir.path()).await;
    let (room, mut events, _) = join_and_publish(&devroom, "cam-mute", PathChoice::Auto).await;
    let sid_of = |kind| {
        room.local_participant()
            .tracks
            .into_iter()
            .find(|t| t.kind == kind)
            .expect("a local track of each kind")
            .sid
    };
    let video_sid = sid_of(roomcast::room::TrackKind::Video);
    let audio_sid = sid_of(roomcast::room::TrackKind::Audio);
    let counter = |sid: &str, field: &str| {
        devroom_tracks(&devroom, "cam-mute")
            .iter()
            .find(|t| t["sid"] == sid)
            .and_then(|t| t[field].as_u64())
            .unwrap_or(0)
    };
    // Audio keeps flowing while video is muted: its packets are the clock here (20 ms each).
    let audio_packets_after = |n: u64| {
        let target = counter(&audio_sid, "packets") + n;
        let (counter, audio_sid) = (&counter, &audio_sid);
        wait_until(Duration::from_secs(5), move || {
            (counter(audio_sid, "packets") >= target).then_some(())
        })
    };
    let video_packets_before = counter(&video_sid, "packets");
    assert!(video_packets_before > 0);

    twirp_mute(&devroom, "cam-mute", &video_sid, true).await;
    let muted = wait_room_event(
        &mut events,
        Duration::from_secs(5),
        |e| matches!(e, RoomEvent::TrackMuted { track_sid, .. } if *track_sid == video_sid),
    )
    .await;
    assert!(
        matches!(&muted, RoomEvent::TrackMuted { participant, .. } if participant == "cam-mute"),
        "{muted:?}"
    );
    let sid = video_sid.clone();
    devroom
        .wait_event(Duration::from_secs(5), move |e| {
            let v = as_json(e);
            v["type"] == "track_muted"
                && v["track_sid"] == sid.as_str()
                && v["by"] == "publisher"
                && v["muted"] == true
        })
        .await
        .expect("roomcast confirmed the mute with MuteTrackRequest");
    assert!(
        room.local_participant()
            .tracks
            .iter()
            .any(|t| t.sid == video_sid && t.muted),
        "the local publication shows the mute"
    );
    // Let frames already on the wire land, then hold a reading across 1 s of audio.
    audio_packets_after(5)
        .await
        .expect("audio flows while video is muted");
    let video_packets_muted = counter(&video_sid, "packets");
    audio_packets_after(50)
        .await
        .expect("audio flows while video is muted");
    assert_eq!(
        counter(&video_sid, "packets"),
        video_packets_muted,
        "video packets reached devroom while the track was muted"
    );
    let video_keyframes_muted = counter(&video_sid, "keyframes");

    twirp_mute(&devroom, "cam-mute", &video_sid, false).await;
    wait_room_event(
        &mut events,
        Duration::from_secs(5),
        |e| matches!(e, RoomEvent::TrackUnmuted { track_sid, .. } if *track_sid == video_sid),
    )
    .await;
    assert!(room
        .local_participant()
        .tracks
        .iter()
        .any(|t| t.sid == video_sid && !t.muted));
    // Video resumes with a keyframe, requested on unmute: well before the periodic one.
    let resumed = wait_until(
        Duration::from_secs(u64::from(roomcast::media::h264::PERIODIC_IDR_SECONDS)) / 2,
        || {
            (counter(&video_sid, "packets") > video_packets_muted
                && counter(&video_sid, "keyframes") > video_keyframes_muted)
                .then_some(())
        },
    )
    .await;
    assert!(
        resumed.is_some(),
        "video did not resume with a keyframe after the unmute: {:#}",
        devroom.snapshot()
    );
    room.close().await;
    devroom.shutdown().await;
}

/// `roomcast run` keeps every refresh_token in state_dir and joins with it next time: the second
/// run's configured token is signed with a wrong secret, so only the cached one can get in.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_stores_the_refreshed_token_and_joins_with_it_next_time() {
    let dir = tempfile::tempdir().unwrap();
    let devroom = devroom(dir.path()).await;
    let config = write_config(
        dir.path(),
        &devroom.url(),
        &token("cam-cache", "lobby", "secret"),
    );
    let state = dir.path().join("state");
    let mut device = Device::spawn(&config);
    wait_first_rtp_of(&devroom, "cam-cache").await;
    // Whatever the cache's file layout, a refreshed JWT lands under state_dir.
    let stored = wait_until(Duration::from_secs(10), || {
        std::fs::read_dir(&state).ok()?.flatten().find_map(|f| {
            let text = std::fs::read_to_string(f.path()).ok()?;
            text.contains("eyJ").then_some(text)
        })
    })
    .await;
    assert!(
        stored.is_some(),
        "no token cached under {}:\n{}",
        state.display(),
        device.output()
    );
    device.signal(libc::SIGTERM);
    wait_until(Duration::from_secs(3), || {
        device.child.try_wait().ok().flatten()
    })
    .await
    .expect("first run exits");
    let joins_after_first_run = devroom
        .past_events()
        .iter()
        .map(as_json)
        .filter(|v| v["type"] == "participant_joined")
        .count();
    assert_eq!(joins_after_first_run, 1);

    write_config(
        dir.path(),
        &devroom.url(),
        &token("cam-cache", "lobby", "not-the-secret"),
    );
    let device = Device::spawn(&config);
    let rejoined = devroom
        .wait_event(Duration::from_secs(15), |e| {
            let v = as_json(e);
            (v["type"] == "participant_joined"
                && v["identity"] == "cam-cache"
                && v["seq"].as_u64() > Some(1))
                || v["type"] == "join_rejected"
        })
        .await
        .expect("the second run reached devroom");
    assert_eq!(
        as_json(&rejoined)["type"],
        "participant_joined",
        "the cached token was not used:\n{}",
        device.output()
    );
    devroom.shutdown().await;
}

/// Subscribing (auto_subscribe) works in both signalling modes: a second roomcast sees the
/// first one connect, publish, and its tracks arrive.
async fn subscribes_to_another_participant(path: PathChoice) {
    let dir = tempfile::tempdir().unwrap();
    let devroom = devroom(dir.path()).await;
    let mut watcher = options(&devroom.url(), token("watcher", "lobby", "secret"), path);
    watcher.video.device = "none".into();
    watcher.audio.device = "none".into();
    let (watcher, mut events) = Room::connect(watcher).await.expect("watcher joins");
    let (publisher, _publisher_events, sids) =
        join_and_publish(&devroom, "cam-sub", PathChoice::Auto).await;
    wait_room_event(
        &mut events,
        Duration::from_secs(10),
        |e| matches!(e, RoomEvent::ParticipantConnected { identity, .. } if identity == "cam-sub"),
    )
    .await;
    let mut subscribed = Vec::new();
    while subscribed.len() < 2 {
        if let RoomEvent::TrackSubscribed {
            participant,
            track_sid,
            ..
        } = wait_room_event(&mut events, Duration::from_secs(15), |e| {
            matches!(e, RoomEvent::TrackSubscribed { .. })
        })
        .await
        {
            assert_eq!(participant, "cam-sub");
            subscribed.push(track_sid);
        }
    }
    subscribed.sort();
    let mut expected = sids.clone();
    expected.sort();
    assert_eq!(subscribed, expected);
    assert!(watcher.remote_participants()["cam-sub"]
        .tracks
        .values()
        .all(|t| t.subscribed));
    publisher.close().await;
    wait_room_event(&mut events, Duration::from_secs(5), |e| {
        matches!(e, RoomEvent::ParticipantDisconnected { identity, .. } if identity == "cam-sub")
    })
    .await;
    watcher.close().await;
    devroom.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscribes_over_rtc_v1() {
    subscribes_to_another_participant(PathChoice::V1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscribes_over_rtc_v0() {
    subscribes_to_another_participant(PathChoice::V0).await;
}

/// auto: `/rtc/v1` answered 404 falls back to `/rtc` with two PeerConnections, and publishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn auto_falls_back_to_rtc_v0_when_v1_is_404() {
    let dir = tempfile::tempdir().unwrap();
    let devroom = devroom(dir.path()).await;
    devroom.faults().reject_joins(1, 404);
    let (room, _events, _) = join_and_publish(&devroom, "cam-old-server", PathChoice::Auto).await;
    assert_eq!(room.signal_path(), Some(SignalPath::V0));
    room.close().await;
    devroom.shutdown().await;
}

/// The passthrough path end to end: a camera that encodes H.264 itself (the synthetic one, which
/// like many UVC cameras puts SPS/PPS on its first IDR only) publishes through roomcast without
/// a re-encode, and devroom decodes the test pattern from what arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn camera_h264_passes_through_and_devroom_decodes_it() {
    let dir = tempfile::tempdir().unwrap();
    let devroom = devroom(dir.path()).await;
    let mut o = options(
        &devroom.url(),
        token("cam-h264", "lobby", "secret"),
        PathChoice::Auto,
    );
    o.video.device = "test-pattern-h264".into();
    let (room, mut events) = Room::connect(o).await.expect("join");
    let mut published = 0;
    while published < 2 {
        wait_room_event(&mut events, Duration::from_secs(10), |e| {
            matches!(e, RoomEvent::LocalTrackPublished { .. })
        })
        .await;
        published += 1;
    }
    let video = room
        .local_participant()
        .tracks
        .into_iter()
        .find(|t| t.kind == roomcast::room::TrackKind::Video)
        .unwrap();
    // A second of frames at the room.
    let received = wait_until(Duration::from_secs(10), || {
        devroom_tracks(&devroom, "cam-h264")
            .into_iter()
            .find(|t| t["sid"] == video.sid.as_str())
            .and_then(|t| t["frames"].as_u64())
            .filter(|&frames| frames >= FPS as u64)
    })
    .await;
    assert!(
        received.is_some(),
        "devroom got too few passthrough frames: {:#}",
        devroom.snapshot()
    );
    let png_path = devroom
        .write_png(&video.sid)
        .await
        .expect("devroom decodes the camera's H.264");
    let (rgb, w, h) = read_png(&png_path);
    assert_eq!((w, h), (WIDTH, HEIGHT));
    let checked = roomcast::media::synthetic::check_rgb(&rgb, w, h, 48)
        .unwrap_or_else(|e| panic!("{}: {e}", png_path.display()));
    assert!(checked > 100);
    room.close().await;
    devroom.shutdown().await;
}

/// RTP time comes from capture time: over a few seconds at the room, the span between the first
/// and the newest video timestamp is a whole number of 3000-tick frames (30 fps at 90 kHz) and
/// audio a whole number of 960-tick (20 ms) frames, one per frame counted. A running sum of
/// truncated durations (2,999 ticks a frame) fails the video check after the first frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rtp_timestamps_at_the_room_follow_the_capture_clock() {
    let dir = tempfile::tempdir().unwrap();
    let devroom = devroom(dir.path()).await;
    let (room, _events, _) = join_and_publish(&devroom, "cam-clock", PathChoice::Auto).await;
    let track = |kind: roomcast::room::TrackKind| {
        room.local_participant()
            .tracks
            .into_iter()
            .find(|t| t.kind == kind)
            .unwrap()
            .sid
    };
    let (video, audio) = (
        track(roomcast::room::TrackKind::Video),
        track(roomcast::room::TrackKind::Audio),
    );
    let stats = |sid: &str| {
        devroom_tracks(&devroom, "cam-clock")
            .into_iter()
            .find(|t| t["sid"] == sid)
    };
    // Two seconds of video at the room.
    wait_until(Duration::from_secs(10), || {
        stats(&video)
            .and_then(|t| t["frames"].as_u64())
            .filter(|&f| f >= 2 * FPS as u64)
    })
    .await
    .expect("devroom counts video frames");
    for (sid, ticks_per_frame) in [(&video, 90_000 / FPS), (&audio, 960)] {
        let t = stats(sid).unwrap();
        let first = t["first_rtp_timestamp"].as_u64().unwrap() as u32;
        let last = t["last_rtp_timestamp"].as_u64().unwrap() as u32;
        let frames = t["frames"].as_u64().unwrap();
        let span = last.wrapping_sub(first);
        assert_eq!(
            span % ticks_per_frame,
            0,
            "{sid}: {span} ticks over {frames} frames is not a whole number of {ticks_per_frame}-tick frames"
        );
        // Every frame slot between the first and the newest arrived (loopback loses nothing).
        let slots = u64::from(span / ticks_per_frame) + 1;
        assert!(
            frames <= slots && slots <= frames + 2,
            "{sid}: {frames} frames counted over {slots} frame slots"
        );
    }
    room.close().await;
    devroom.shutdown().await;
}
