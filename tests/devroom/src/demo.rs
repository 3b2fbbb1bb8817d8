//! `roomcast-demo` (scripts/demo.sh): devroom in-process on loopback plus the device pipeline on synthetic sources.
//!
//! Everything a board does (join, AddTrack, negotiate, encode, send) runs for real; only the
//! camera, the microphone and the LiveKit server are stand-ins.
use crate::{DevRoom, DevRoomConfig};
use roomcast::media::{AudioSettings, VideoSettings};
use roomcast::room::{Room, RoomEvent, RoomOptions};
use roomcast::status::led::TextLed;
use roomcast::status::{LedDriver, LedState, Lights, Patterns};
use serde::Serialize;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// How long to publish.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What one track looked like at devroom.
#[derive(Debug, Serialize)]
pub struct TrackSummary {
    pub sid: String,
    pub kind: String,
    pub codec: String,
    pub frames_sent: u64,
    pub frames_received: u64,
    pub packets_received: u64,
    pub bytes_received: u64,
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub signal_path: String,
    /// From the start of the demo to the first RTP packet devroom saw.
    pub time_to_first_media_ms: Option<u64>,
    pub seconds: u64,
    pub tracks: Vec<TrackSummary>,
    /// PNG of the last frame devroom decoded.
    pub png: Option<String>,
    pub media_arrived: bool,
}

/// The devroom-side tracks of `identity`, from a snapshot.
pub fn tracks_of(snapshot: &serde_json::Value, identity: &str) -> Vec<serde_json::Value> {
    snapshot["rooms"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|room| room["participants"].as_array().cloned().unwrap_or_default())
        .filter(|p| p["identity"] == identity)
        .flat_map(|p| p["tracks"].as_array().cloned().unwrap_or_default())
        .collect()
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    // Quiet unless asked: the demo's output is its summary.
    if std::env::var_os("RUST_LOG").is_some() {
        roomcast::logging::init(None).map_err(anyhow::Error::msg)?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // The terminal's text LED shows what a board's status LED would (not with --json: stdout is JSON).
    let leds = if args.json {
        LedDriver::disabled()
    } else {
        let (status, media) =
            TextLed::pair(Box::new(std::io::stdout()), std::io::stdout().is_terminal());
        let lights = Lights {
            status: vec![Box::new(status)],
            media: vec![Box::new(media)],
        };
        LedDriver::start(lights, Patterns::default())?
    };
    let summary = runtime.block_on(demo(args.seconds, &leds));
    if let Err(err) = leds.stop() {
        tracing::warn!("{err}");
    }
    let summary = summary?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_summary(&summary);
    }
    Ok(if summary.media_arrived {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_summary(s: &Summary) {
    println!(
        "roomcast demo: {} s over signalling {}",
        s.seconds, s.signal_path
    );
    match s.time_to_first_media_ms {
        Some(ms) => println!("  time to first media at the room: {ms} ms"),
        None => println!("  no media reached the room"),
    }
    for t in &s.tracks {
        println!(
            "  {} track {} ({}): sent {} frames; room received {} frames, {} packets, {} bytes",
            t.kind,
            t.sid,
            t.codec,
            t.frames_sent,
            t.frames_received,
            t.packets_received,
            t.bytes_received
        );
    }
    match &s.png {
        Some(path) => println!("  last frame the room decoded: {path}"),
        None => println!("  the room decoded no video frame"),
    }
}

async fn demo(seconds: u64, leds: &LedDriver) -> anyhow::Result<Summary> {
    let started = Instant::now();
    leds.set_state(LedState::Connecting);
    let frame_dir = std::env::temp_dir().join(format!("roomcast-demo-{}", std::process::id()));
    let config = DevRoomConfig {
        frame_dir,
        ..DevRoomConfig::local("127.0.0.1:0".parse()?)
    };
    let devroom = DevRoom::start(config).await?;
    let identity = "demo-device";
    let mut options = RoomOptions::new(devroom.url(), crate::token::join_token(identity, "demo"));
    options.video = VideoSettings {
        device: "test-pattern".into(),
        width: 640,
        height: 480,
        fps: 30,
        bitrate: 1000,
        format: None,
    };
    options.audio = AudioSettings {
        device: "tone".into(),
        ..Default::default()
    };
    let (room, mut events) = Room::connect(options).await?;
    let signal_path = format!(
        "{:?}",
        room.signal_path().unwrap_or(roomcast::room::SignalPath::V0)
    )
    .to_lowercase();

    // Both tracks published (or the room gave up).
    let mut published = 0;
    let publish_deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while published < 2 {
        match tokio::time::timeout_at(publish_deadline, events.recv()).await {
            Ok(Some(RoomEvent::LocalTrackPublished { .. })) => published += 1,
            Ok(Some(RoomEvent::Disconnected { reason, .. })) => {
                anyhow::bail!("the room disconnected during the demo: {reason}")
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    let first_rtp = devroom
        .wait_event(Duration::from_secs(10), |e| {
            serde_json::to_value(e)
                .map(|v| v["type"] == "first_rtp")
                .unwrap_or(false)
        })
        .await;
    let time_to_first_media_ms = first_rtp.map(|_| started.elapsed().as_millis() as u64);
    if time_to_first_media_ms.is_some() {
        leds.set_state(LedState::Publishing);
        leds.set_media_live(true);
        // The demo's own run time, not a wait for a condition.
        tokio::time::sleep(Duration::from_secs(seconds)).await;
    }
    let local = room.local_participant();
    let snapshot = devroom.snapshot();
    let mut tracks = Vec::new();
    let mut png = None;
    for t in tracks_of(&snapshot, identity) {
        let sid = t["sid"].as_str().unwrap_or_default().to_string();
        let kind = t["kind"].as_str().unwrap_or_default().to_string();
        if kind == "video" && t["frames"].as_u64().unwrap_or(0) > 0 {
            png = devroom
                .write_png(&sid)
                .await
                .ok()
                .map(|p| p.display().to_string());
        }
        let frames_sent = local
            .tracks
            .iter()
            .find(|l| l.sid == sid)
            .map(|l| l.frames_sent)
            .unwrap_or(0);
        tracks.push(TrackSummary {
            codec: t["codec"].as_str().unwrap_or_default().to_string(),
            frames_sent,
            frames_received: t["frames"].as_u64().unwrap_or(0),
            packets_received: t["packets"].as_u64().unwrap_or(0),
            bytes_received: t["bytes"].as_u64().unwrap_or(0),
            sid,
            kind,
        });
    }
    leds.set_media_live(false);
    leds.set_state(LedState::Off);
    room.close().await;
    devroom.shutdown().await;
    let media_arrived = tracks.len() >= 2 && tracks.iter().all(|t| t.packets_received > 0);
    Ok(Summary {
        signal_path,
        time_to_first_media_ms,
        seconds,
        tracks,
        png,
        media_arrived,
    })
}
