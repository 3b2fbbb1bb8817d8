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
        format: None,
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
    devroom
        .wait_until(Duration::from_secs(12), || (sent() >= target).then_some(()))
        .await
        .expect("device kept sending");
    let sent_window = sent() - sent_start;
    // Frames in flight need a moment to land; wait for the count, with a deadline.
    let needed = received_start + sent_window * 9 / 10;
    let got = devroom
        .wait_until(Duration::from_secs(3), || {
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
    let (stored, mut refreshed_tokens) = mpsc::unbounded_channel::<String>();
    let mut o = options(
        &devroom.url(),
        token("cam-refresh", "lobby", "secret"),
        PathChoice::Auto,
    );
    o.on_token_refreshed = Some(Arc::new(move |t: &str| {
        let _ = stored.send(t.to_string());
    }));
    o.video.device = "none".into();
    o.audio.device = "none".into();
    let (room, _events) = Room::connect(o).await.expect("join");
    let refreshed = tokio::time::timeout(Duration::from_secs(5), refreshed_tokens.recv())
        .await
        .ok()
        .flatten()
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
    /// Fired on every output line and when an output stream closes.
    changed: Arc<tokio::sync::Notify>,
    /// stdout and stderr still open; both close when the process exits.
    open_streams: Arc<std::sync::atomic::AtomicUsize>,
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
        let changed = Arc::new(tokio::sync::Notify::new());
        let open_streams = Arc::new(std::sync::atomic::AtomicUsize::new(2));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let (lines, changed, open_streams) =
                (lines.clone(), changed.clone(), open_streams.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                    changed.notify_waiters();
                }
                open_streams.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                changed.notify_waiters();
            });
        }
        Device {
            child,
            lines,
            changed,
            open_streams,
        }
    }

    /// Re-checks `check` on every new output line until it returns Some; None after `timeout`.
    async fn wait_output<T>(
        &self,
        timeout: Duration,
        check: impl FnMut() -> Option<T>,
    ) -> Option<T> {
        devroom::sfu::wait_until_notified(&self.changed, timeout, check).await
    }

    /// The exit status once the process has ended (both output streams closed, then reaped);
    /// None if it is still running after `timeout`.
    async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let open_streams = self.open_streams.clone();
        self.wait_output(timeout, || {
            (open_streams.load(std::sync::atomic::Ordering::SeqCst) == 0).then_some(())
        })
        .await?;
        // Its pipes are closed: the process has exited or is exiting, so this returns promptly.
        self.child.wait().ok()
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
    let exited = device.wait_exit(Duration::from_secs(3)).await;
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

    let reported = device
        .wait_output(Duration::from_secs(5), || {
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

/// The index of the first printed room event after `from` that matches `pred`, waiting for it
/// (woken by each new output line) up to `timeout`.
async fn wait_printed(
    device: &Device,
    from: usize,
    timeout: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Option<usize> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let added = device.changed.notified();
        tokio::pin!(added);
        added.as_mut().enable();
        if let Some(i) = printed_events(device)
            .iter()
            .enumerate()
            .skip(from)
            .find(|(_, v)| pred(v))
            .map(|(i, _)| i)
        {
            return Some(i);
        }
        tokio::time::timeout_at(deadline, added).await.ok()?;
    }
}

/// Wait until the device's output (stdout or stderr) contains `text`.
async fn wait_output(device: &Device, text: &str, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let added = device.changed.notified();
        tokio::pin!(added);
        added.as_mut().enable();
        if device.output().contains(text) {
            return;
        }
        if tokio::time::timeout_at(deadline, added).await.is_err() {
            panic!("no {text:?} within {timeout:?}:\n{}", device.output());
        }
    }
}

/// The participant sid devroom gave `identity`'s latest join.
fn joined_sid(devroom: &DevRoom, identity: &str) -> String {
    devroom
        .past_events()
        .iter()
        .map(as_json)
        .rfind(|v| v["type"] == "participant_joined" && v["identity"] == identity)
        .and_then(|v| v["sid"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("devroom has no join of {identity}"))
}

/// Frames devroom received on `identity`'s video track (0 without one).
fn video_frames(devroom: &DevRoom, identity: &str) -> u64 {
    devroom_tracks(devroom, identity)
        .iter()
        .find(|t| t["kind"] == "video")
        .and_then(|t| t["frames"].as_u64())
        .unwrap_or(0)
}

/// Media keeps arriving: devroom counts more than `beyond` video frames of `identity` within
/// `timeout` (re-checked on every packet devroom counts).
async fn wait_video_frames_beyond(
    devroom: &DevRoom,
    identity: &str,
    beyond: u64,
    timeout: Duration,
) -> u64 {
    devroom
        .wait_until(timeout, || {
            let frames = video_frames(devroom, identity);
            (frames > beyond).then_some(frames)
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "no new video frames from {identity} within {timeout:?} (stuck at {}): {:#}",
                video_frames(devroom, identity),
                devroom.snapshot()
            )
        })
}

/// After a fault, a resume: devroom logs `participant_resumed` with the sid of the device's join,
/// no second `participant_joined`, roomcast prints resuming then resumed, media keeps arriving,
/// and the process stays up. Returns the time from the fault to the resume.
async fn assert_resumed(
    devroom: &DevRoom,
    device: &mut Device,
    identity: &str,
    fault_at: Instant,
    fault_seq: u64,
) -> Duration {
    let sid = joined_sid(devroom, identity);
    let who = identity.to_string();
    let resumed = devroom
        .wait_event(Duration::from_secs(15), move |e| {
            let v = as_json(e);
            v["type"] == "participant_resumed" && v["identity"] == who.as_str()
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "no resume reached devroom; device said:\n{}",
                device.output()
            )
        });
    let took = fault_at.elapsed();
    assert_eq!(
        as_json(&resumed)["sid"],
        sid.as_str(),
        "a resume keeps the sid"
    );
    let resuming = wait_printed(device, 0, Duration::from_secs(5), |v| {
        v["event"] == "resuming"
    })
    .await
    .unwrap_or_else(|| panic!("roomcast printed no resuming:\n{}", device.output()));
    wait_printed(device, resuming, Duration::from_secs(15), |v| {
        v["event"] == "resumed"
    })
    .await
    .unwrap_or_else(|| panic!("roomcast printed no resumed:\n{}", device.output()));
    let frames = video_frames(devroom, identity);
    wait_video_frames_beyond(devroom, identity, frames, Duration::from_secs(5)).await;
    let rejoins: Vec<Value> = devroom
        .past_events()
        .iter()
        .filter(|e| seq_of(e) > fault_seq)
        .map(as_json)
        .filter(|v| v["type"] == "participant_joined" && v["identity"] == identity)
        .collect();
    assert!(rejoins.is_empty(), "a resume must not rejoin: {rejoins:?}");
    assert!(
        printed_events(device)
            .iter()
            .all(|v| v["event"] != "reconnecting" && v["event"] != "disconnected"),
        "a resume is not a full reconnect:\n{}",
        device.output()
    );
    assert!(
        device.child.try_wait().unwrap().is_none(),
        "roomcast exited:\n{}",
        device.output()
    );
    took
}

fn last_seq(devroom: &DevRoom) -> u64 {
    devroom.past_events().last().map(seq_of).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dropped_websocket_is_resumed_with_the_same_sid() {
    let dir = tempfile::tempdir().unwrap();
    let devroom = devroom(dir.path()).await;
    let mut device = publishing_device(&devroom, dir.path(), "cam-dropped").await;
    let seq = last_seq(&devroom);
    let at = Instant::now();
    assert!(devroom.faults().drop_ws("cam-dropped"));
    let took = assert_resumed(&devroom, &mut device, "cam-dropped", at, seq).await;
    eprintln!("resumed {took:?} after the WebSocket drop");
    devroom.shutdown().await;
}

/// The library Room on `/rtc` (two PeerConnections): a dropped WebSocket is resumed with
/// `reconnect=1&sid=…`, the Room reports Resuming then Resumed, keeps its sid, and media keeps
/// arriving.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dropped_websocket_is_resumed_on_rtc_v0() {
    let dir = tempfile::tempdir().unwrap();
    let devroom = devroom(dir.path()).await;
    let (room, mut events, _sids) =
        join_and_publish(&devroom, "cam-v0-resume", PathChoice::V0).await;
    assert_eq!(room.signal_path(), Some(SignalPath::V0));
    let sid = room.local_participant().sid;
    let seq = last_seq(&devroom);
    assert!(devroom.faults().drop_ws("cam-v0-resume"));
    wait_room_event(&mut events, Duration::from_secs(10), |e| {
        matches!(e, RoomEvent::Resuming)
    })
    .await;
    wait_room_event(&mut events, Duration::from_secs(10), |e| {
        matches!(e, RoomEvent::Resumed)
    })
    .await;
    let resumed = devroom
        .wait_event(Duration::from_secs(5), |e| {
            let v = as_json(e);
            v["type"] == "participant_resumed" && v["identity"] == "cam-v0-resume"
        })
        .await
        .expect("devroom saw the resume");
    assert_eq!(as_json(&resumed)["sid"], sid.as_str());
    assert_eq!(room.local_participant().sid, sid);
    let rejoins = devroom
        .past_events()
        .iter()
        .filter(|e| seq_of(e) > seq)
        .map(as_json)
        .filter(|v| v["type"] == "participant_joined")
        .count();
    assert_eq!(rejoins, 0);
    let frames = video_frames(&devroom, "cam-v0-resume");
    wait_video_frames_beyond(&devroom, "cam-v0-resume", frames, Duration::from_secs(5)).await;
    room.close().await;
    devroom.shutdown().await;
}

/// A camera that cannot be opened: `roomcast run` reports the video track failed (an event and
/// STATUS=), keeps restarting it, and the microphone goes on: devroom receives the audio and
/// READY=1 follows the first audio frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_camera_is_reported_and_audio_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let devroom = devroom(dir.path()).await;
    let config = write_config(
        dir.path(),
        &devroom.url(),
        &token("cam-broken", "lobby", "secret"),
    );
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "device = \"test-pattern\"",
        "device = \"/dev/video-missing\"",
    );
    std::fs::write(&config, text).unwrap();
    let (mut device, mut notices) = Device::spawn_under_systemd(&config, dir.path());
    let failed = wait_printed(&device, 0, Duration::from_secs(15), |v| {
        v["event"] == "local_track_failed"
    })
    .await
    .unwrap_or_else(|| panic!("no local_track_failed:\n{}", device.output()));
    assert_eq!(printed_events(&device)[failed]["kind"], "video");
    let status = notices
        .until(
            |l| l.starts_with("STATUS=video track failed"),
            Duration::from_secs(5),
        )
        .await
        .unwrap_or_else(|| panic!("no STATUS= naming the failed track:\n{}", device.output()));
    assert!(
        status.last().unwrap().contains("audio goes on"),
        "{status:?}"
    );
    let audio = devroom
        .wait_event(Duration::from_secs(15), |e| {
            let v = as_json(e);
            v["type"] == "track_published" && v["identity"] == "cam-broken" && v["kind"] == "audio"
        })
        .await
        .expect("the audio track is published");
    let sid = as_json(&audio)["track_sid"].as_str().unwrap().to_string();
    devroom
        .wait_event(Duration::from_secs(10), move |e| {
            let v = as_json(e);
            v["type"] == "first_rtp" && v["track_sid"] == sid.as_str()
        })
        .await
        .expect("audio RTP while the camera is failed");
    notices
        .until(|l| l == "READY=1", Duration::from_secs(5))
        .await
        .unwrap_or_else(|| panic!("no READY=1 with audio flowing:\n{}", device.output()));
    // It keeps trying the camera (with backoff): a second failure report follows the first.
    wait_printed(&device, failed + 1, Duration::from_secs(10), |v| {
        v["event"] == "local_track_failed"
    })
    .await
    .unwrap_or_else(|| panic!("the video track was not restarted:\n{}", device.output()));
    assert!(
        device.child.try_wait().unwrap().is_none(),
        "{}",
        device.output()
    );
    devroom.shutdown().await;
}

/// Leave RESUME closes only the WebSocket on devroom's side: the device resumes the same session.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leave_with_resume_is_resumed_with_the_same_sid() {
    let dir = tempfile::tempdir().unwrap();
    let devroom = devroom(dir.path()).await;
    let mut device = publishing_device(&devroom, dir.path(), "cam-resume").await;
    let seq = last_seq(&devroom);
    let at = Instant::now();
    assert!(
        devroom
            .faults()
            .send_leave(
                "cam-resume",
                devroom::DisconnectReason::Migration,
                devroom::LeaveAction::Resume
            )
            .await
    );
    let took = assert_resumed(&devroom, &mut device, "cam-resume", at, seq).await;
    eprintln!("resumed {took:?} after Leave RESUME");
    devroom.shutdown().await;
}

/// No answer to pings within ping_timeout: the device gives the WebSocket up and resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unanswered_pings_lead_to_a_resume() {
    let dir = tempfile::tempdir().unwrap();
    let config = DevRoomConfig {
        frame_dir: dir.path().to_path_buf(),
        ping_interval: 1,
        ping_timeout: 3,
        ..DevRoomConfig::local("127.0.0.1:0".parse().unwrap())
    };
    let devroom = DevRoom::start(config).await.expect("devroom starts");
    let mut device = publishing_device(&devroom, dir.path(), "cam-pings").await;
    let seq = last_seq(&devroom);
    let at = Instant::now();
    assert!(devroom.faults().answer_pings("cam-pings", false));
    let resumed = devroom
        .wait_event(Duration::from_secs(15), |e| {
            let v = as_json(e);
            v["type"] == "participant_resumed" && v["identity"] == "cam-pings"
        })
        .await;
    assert!(
        resumed.is_some(),
        "no resume after the ping timeout:\n{}",
        device.output()
    );
    // The fault sticks to the participant: answer again so the resumed session can stay.
    assert!(devroom.faults().answer_pings("cam-pings", true));
    let took = assert_resumed(&devroom, &mut device, "cam-pings", at, seq).await;
    eprintln!("resumed {took:?} after the pings stopped being answered (ping_timeout 3 s)");
    devroom.shutdown().await;
}

/// The seven steps of a full reconnect as roomcast printed them from `from` on, for a room with
/// one other participant `other`: ParticipantDisconnected for the others (after their
/// TrackUnpublished), LocalTrackUnpublished, Reconnecting, Reconnected, ParticipantConnected for
/// everyone present, LocalTrackPublished for both tracks.
fn assert_full_reconnect_order(device: &Device, from: usize, other: &str) {
    let steps: Vec<Value> = printed_events(device)
        .into_iter()
        .skip(from)
        .filter(|v| {
            [
                "track_unpublished",
                "participant_disconnected",
                "local_track_unpublished",
                "reconnecting",
                "reconnected",
                "participant_connected",
                "local_track_published",
            ]
            .contains(&v["event"].as_str().unwrap_or(""))
        })
        .collect();
    let names: Vec<&str> = steps.iter().map(|v| v["event"].as_str().unwrap()).collect();
    let expected = [
        "participant_disconnected",
        "local_track_unpublished",
        "local_track_unpublished",
        "reconnecting",
        "reconnected",
        "participant_connected",
        "local_track_published",
        "local_track_published",
    ];
    let without_remote_tracks: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| *n != "track_unpublished")
        .collect();
    assert_eq!(
        without_remote_tracks,
        expected,
        "full-reconnect order: {names:?}\n{}",
        device.output()
    );
    // Step 1 also unpublishes the other's tracks, before it disconnects them.
    let first_disconnect = names
        .iter()
        .position(|n| *n == "participant_disconnected")
        .unwrap();
    assert!(
        names[..first_disconnect]
            .iter()
            .all(|n| *n == "track_unpublished"),
        "{names:?}"
    );
    assert!(
        first_disconnect >= 1,
        "the other participant's track was not unpublished: {names:?}"
    );
    for step in &steps {
        if step["event"] == "participant_disconnected" || step["event"] == "participant_connected" {
            assert_eq!(step["identity"], other, "{step}");
        }
    }
}

/// A second participant that publishes one (audio) track, so the device has someone to
/// disconnect and reconnect in steps 1 and 6.
async fn other_participant(
    devroom: &DevRoom,
    identity: &str,
) -> (Room, mpsc::UnboundedReceiver<RoomEvent>) {
    let mut o = options(
        &devroom.url(),
        token(identity, "lobby", "secret"),
        PathChoice::Auto,
    );
    o.video.device = "none".into();
    let (room, mut events) = Room::connect(o).await.expect("the other participant joins");
    wait_room_event(&mut events, Duration::from_secs(10), |e| {
        matches!(e, RoomEvent::LocalTrackPublished { .. })
    })
    .await;
    (room, events)
}

/// Wait until the device (printing from `from` on) knows `other` and its track.
async fn wait_device_sees(device: &Device, other: &str) {
    let who = other.to_string();
    wait_printed(device, 0, Duration::from_secs(10), move |v| {
        v["event"] == "track_published" && v["participant"] == who.as_str()
    })
    .await
    .unwrap_or_else(|| panic!("the device never saw {other}'s track:\n{}", device.output()));
}

/// After a fault that ends the session: a new join with a new sid, both tracks republished
/// (devroom receives RTP on them), the seven steps in order, the process up. Returns the time
/// from `since` to the first RTP of the republished video.
async fn assert_full_reconnect(
    devroom: &DevRoom,
    device: &Device,
    identity: &str,
    old_sid: &str,
    printed_before: usize,
    other: &str,
    since: Instant,
) -> Duration {
    let who = identity.to_string();
    let old = old_sid.to_string();
    let rejoined = devroom
        .wait_event(Duration::from_secs(20), move |e| {
            let v = as_json(e);
            v["type"] == "participant_joined"
                && v["identity"] == who.as_str()
                && v["sid"] != old.as_str()
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "no rejoin reached devroom; device said:\n{}",
                device.output()
            )
        });
    let new_sid = as_json(&rejoined)["sid"].as_str().unwrap().to_string();
    assert_ne!(new_sid, old_sid);
    let seq = seq_of(&rejoined);
    let who = identity.to_string();
    let video = devroom
        .wait_event(Duration::from_secs(15), move |e| {
            let v = as_json(e);
            seq_of(e) > seq
                && v["type"] == "track_published"
                && v["identity"] == who.as_str()
                && v["kind"] == "video"
        })
        .await
        .expect("the video track is republished");
    let track_sid = as_json(&video)["track_sid"].as_str().unwrap().to_string();
    devroom
        .wait_event(Duration::from_secs(10), move |e| {
            let v = as_json(e);
            v["type"] == "first_rtp" && v["track_sid"] == track_sid.as_str()
        })
        .await
        .expect("RTP on the republished video track");
    let took = since.elapsed();
    // Both LocalTrackPublished lines are printed before the answer's media can flow.
    let first = wait_printed(device, printed_before, Duration::from_secs(5), |v| {
        v["event"] == "local_track_published"
    })
    .await
    .expect("a republished track");
    wait_printed(device, first + 1, Duration::from_secs(5), |v| {
        v["event"] == "local_track_published"
    })
    .await
    .expect("both tracks republished");
    assert_full_reconnect_order(device, printed_before, other);
    took
}

/// Leave RECONNECT: devroom removes the participant; the device rejoins as a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leave_with_reconnect_leads_to_a_full_reconnect_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let devroom = devroom(dir.path()).await;
    let (other, _other_events) = other_participant(&devroom, "watcher-reconnect").await;
    let mut device = publishing_device(&devroom, dir.path(), "cam-reconnect").await;
    wait_device_sees(&device, "watcher-reconnect").await;
    let old_sid = joined_sid(&devroom, "cam-reconnect");
    let printed = printed_events(&device).len();
    let at = Instant::now();
    assert!(
        devroom
            .faults()
            .send_leave(
                "cam-reconnect",
                devroom::DisconnectReason::Migration,
                devroom::LeaveAction::Reconnect
            )
            .await
    );
    let took = assert_full_reconnect(
        &devroom,
        &device,
        "cam-reconnect",
        &old_sid,
        printed,
        "watcher-reconnect",
        at,
    )
    .await;
    eprintln!(
        "full reconnect after Leave RECONNECT: media on the new track {took:?} after the Leave"
    );
    assert!(
        device.child.try_wait().unwrap().is_none(),
        "{}",
        device.output()
    );
    other.close().await;
    devroom.shutdown().await;
}

/// devroom forgets every room and session (a server restart): the device's resume is refused
/// (STATE_MISMATCH) and it rejoins as a new participant. The other participant, a library
/// Room, comes back by itself too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_restart_leads_to_a_full_reconnect_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let devroom = devroom(dir.path()).await;
    let mut device = publishing_device(&devroom, dir.path(), "cam-restart").await;
    let (other, mut other_events) = other_participant(&devroom, "watcher-restart").await;
    wait_device_sees(&device, "watcher-restart").await;
    let old_sid = joined_sid(&devroom, "cam-restart");
    let printed = printed_events(&device).len();
    let at = Instant::now();
    devroom.faults().restart().await;
    let took = assert_full_reconnect(
        &devroom,
        &device,
        "cam-restart",
        &old_sid,
        printed,
        "watcher-restart",
        at,
    )
    .await;
    eprintln!("full reconnect after the server restart: media on the new track {took:?} after it");
    // The library Room recovers the same way.
    wait_room_event(&mut other_events, Duration::from_secs(20), |e| {
        matches!(e, RoomEvent::Reconnected)
    })
    .await;
    assert!(
        device.child.try_wait().unwrap().is_none(),
        "{}",
        device.output()
    );
    other.close().await;
    devroom.shutdown().await;
}

/// The server refuses joins at first (as one still starting would): `roomcast run` keeps
/// trying, joins once it is let in, and never exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_waits_for_a_server_that_refuses_joins_and_then_joins() {
    let dir = tempfile::tempdir().unwrap();
    let devroom = devroom(dir.path()).await;
    devroom.faults().reject_joins(3, 503);
    let config = write_config(
        dir.path(),
        &devroom.url(),
        &token("cam-late", "lobby", "secret"),
    );
    let mut device = Device::spawn(&config);
    wait_first_rtp_of(&devroom, "cam-late").await;
    let rejected = devroom
        .past_events()
        .iter()
        .map(as_json)
        .filter(|v| v["type"] == "join_rejected")
        .count();
    assert_eq!(rejected, 3, "{}", device.output());
    assert!(
        device.child.try_wait().unwrap().is_none(),
        "{}",
        device.output()
    );
    devroom.shutdown().await;
}

/// No server at all at first: `roomcast run` keeps trying (connection refused) and joins when
/// devroom starts on that address.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_waits_for_a_server_that_is_not_there_yet() {
    let dir = tempfile::tempdir().unwrap();
    // A free port: bind, note it, release it.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("ws://{addr}");
    let config = write_config(dir.path(), &url, &token("cam-early", "lobby", "secret"));
    let mut device = Device::spawn(&config);
    // The device tried and failed at least once before the server exists.
    wait_output(&device, "join failed", Duration::from_secs(10)).await;
    let config = DevRoomConfig {
        frame_dir: dir.path().to_path_buf(),
        ..DevRoomConfig::local(addr)
    };
    let devroom = DevRoom::start(config)
        .await
        .expect("devroom starts on the noted port");
    wait_first_rtp_of(&devroom, "cam-early").await;
    assert!(
        device.child.try_wait().unwrap().is_none(),
        "{}",
        device.output()
    );
    devroom.shutdown().await;
}

/// Under systemd (Type=notify, WatchdogSec): READY=1 once media flows, STATUS= on every change,
/// WATCHDOG=1 at WatchdogSec/2, STOPPING=1 on SIGTERM. The test is the service
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
    // Joined and connected is not enough: READY=1 waits for the first frame to go out.
    assert!(
        before_ready
            .iter()
            .any(|l| l == "STATUS=connected; waiting for media"),
        "{before_ready:?}"
    );
    let publishing = notices
        .until(|l| l.starts_with("STATUS="), Duration::from_secs(2))
        .await;
    assert_eq!(
        publishing
            .as_ref()
            .and_then(|lines| lines.last())
            .map(String::as_str),
        Some("STATUS=publishing"),
        "{publishing:?}"
    );
    // READY=1 means media flows: devroom has the join, and the device had both tracks
    // accepted (it prints each LocalTrackPublished before its first frame goes out).
    assert!(
        devroom
            .past_events()
            .iter()
            .map(as_json)
            .any(|v| { v["type"] == "participant_joined" && v["identity"] == "cam-notify" }),
        "READY=1 before devroom saw the join"
    );
    let published = device
        .wait_output(Duration::from_secs(2), || {
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
    let exited = device.wait_exit(Duration::from_secs(3)).await;
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
    // The event names the participant as the server knows it, and the Room API agrees.
    let RoomEvent::ParticipantConnected { sid, .. } = connected else {
        unreachable!("wait_room_event returned a non-matching event")
    };
    let server_sid = devroom.snapshot()["rooms"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["participants"].as_array().cloned().unwrap_or_default())
        .find(|p| p["identity"] == "py-peer")
        .and_then(|p| p["sid"].as_str().map(str::to_string));
    assert_eq!(Some(sid.clone()), server_sid, "ParticipantConnected's sid");
    assert_eq!(
        room.remote_participants()
            .get("py-peer")
            .map(|p| p.sid.clone()),
        Some(sid),
        "Room::remote_participants after ParticipantConnected"
    );
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
    let met = peer
        .wait_output(Duration::from_secs(30), || {
            peer.output().contains("\"expectations_met\"").then_some(())
        })
        .await;
    peer.signal(libc::SIGTERM);
    let status = peer.wait_exit(Duration::from_secs(10)).await;
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
    let answered = devroom
        .wait_until(
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
        devroom.wait_until(Duration::from_secs(5), move || {
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
    let resumed = devroom
        .wait_until(
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
    // roomcast says when it kept a refreshed token; then, whatever the cache's file layout, the
    // JWT is under state_dir.
    device
        .wait_output(Duration::from_secs(10), || {
            device
                .output()
                .contains("kept the server's refreshed token")
                .then_some(())
        })
        .await
        .unwrap_or_else(|| panic!("no refreshed token kept:\n{}", device.output()));
    let stored = std::fs::read_dir(&state).ok().and_then(|dir| {
        dir.flatten().find_map(|f| {
            let text = std::fs::read_to_string(f.path()).ok()?;
            text.contains("eyJ").then_some(text)
        })
    });
    assert!(
        stored.is_some(),
        "no token cached under {}:\n{}",
        state.display(),
        device.output()
    );
    device.signal(libc::SIGTERM);
    device
        .wait_exit(Duration::from_secs(3))
        .await
        .expect("first run exits");
    let joins_after_first_run = devroom
        .past_events()
        .iter()
        .map(as_json)
        .filter(|v| v["type"] == "participant_joined")
        .count();
    assert_eq!(joins_after_first_run, 1);
    // Only what happens from here on can prove the second run used the cached token.
    let first_run_last_seq = devroom.past_events().last().map(seq_of).unwrap_or(0);

    write_config(
        dir.path(),
        &devroom.url(),
        &token("cam-cache", "lobby", "not-the-secret"),
    );
    let device = Device::spawn(&config);
    let rejoined = devroom
        .wait_event(Duration::from_secs(15), |e| {
            let v = as_json(e);
            v["seq"].as_u64() > Some(first_run_last_seq)
                && ((v["type"] == "participant_joined" && v["identity"] == "cam-cache")
                    || v["type"] == "join_rejected")
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
    let received = devroom
        .wait_until(Duration::from_secs(10), || {
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
    devroom
        .wait_until(Duration::from_secs(10), || {
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
