//! Benchmark, not a test: time from process start to the first RTP packet at devroom, for
//! `roomcast run` and for the official Python SDK (tests/peers/py_peer.py) publishing a comparable
//! stream (320x240 video at 30 fps plus an Opus tone). Prints one line per run and a summary.
//!
//! Run inside the test namespace (the Python SDK needs the veth): `tests/bench/first-rtp.sh`.
use devroom::{DevRoom, DevRoomConfig};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const RUNS: usize = 5;

fn token(identity: &str) -> anyhow::Result<String> {
    Ok(devroom::token::join_token(identity, "bench"))
}

fn json(e: &impl serde::Serialize) -> serde_json::Value {
    serde_json::to_value(e).unwrap_or_default()
}

/// From `started` to the first RTP devroom saw on any track of `identity`.
async fn first_rtp(devroom: &DevRoom, identity: &str, started: Instant) -> Option<Duration> {
    let who = identity.to_string();
    devroom
        .wait_event(Duration::from_secs(30), move |e| {
            let v = json(e);
            v["type"] == "track_published" && v["identity"] == who.as_str()
        })
        .await?;
    let who = identity.to_string();
    let sids: Vec<String> = devroom
        .past_events()
        .iter()
        .map(json)
        .filter(|v| v["type"] == "track_published" && v["identity"] == who.as_str())
        .filter_map(|v| v["track_sid"].as_str().map(str::to_string))
        .collect();
    devroom
        .wait_event(Duration::from_secs(30), move |e| {
            let v = json(e);
            v["type"] == "first_rtp"
                && v["track_sid"]
                    .as_str()
                    .is_some_and(|s| sids.iter().any(|x| x == s))
        })
        .await?;
    Some(started.elapsed())
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn roomcast_config(dir: &Path, url: &str, identity: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("{identity}.toml"));
    std::fs::write(
        &path,
        format!(
            "url = \"{url}\"\ntoken = \"{}\"\n\n[video]\ndevice = \"test-pattern\"\nwidth = 320\nheight = 240\nfps = 30\nbitrate = 500\n\n[audio]\ndevice = \"tone\"\n",
            token(identity)?
        ),
    )?;
    Ok(path)
}

fn median(mut v: Vec<Duration>) -> Option<Duration> {
    v.sort();
    v.get(v.len() / 2).copied()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let exe_dir = std::env::current_exe()?
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let roomcast = std::env::var_os("ROOMCAST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| exe_dir.join("roomcast"));
    let python = std::env::var_os("ROOMCAST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".peers/venv"))
        .join("bin/python");
    let dir = std::env::temp_dir().join(format!("roomcast-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let devroom = DevRoom::start(DevRoomConfig {
        frame_dir: dir.join("frames"),
        ..DevRoomConfig::local("127.0.0.1:0".parse()?)
    })
    .await?;
    println!("devroom at {}; {} runs each", devroom.url(), RUNS);

    let mut ours = Vec::new();
    for i in 0..RUNS {
        let identity = format!("bench-roomcast-{i}");
        let config = roomcast_config(&dir, &devroom.url(), &identity)?;
        let started = Instant::now();
        let child = Command::new(&roomcast)
            .args(["run", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let t = first_rtp(&devroom, &identity, started).await;
        stop(child);
        println!(
            "roomcast run        #{i}: {}",
            t.map(|d| format!("{} ms", d.as_millis()))
                .unwrap_or("no RTP".into())
        );
        ours.extend(t);
    }

    let mut theirs = Vec::new();
    if python.exists() {
        for i in 0..RUNS {
            let identity = format!("bench-python-{i}");
            let started = Instant::now();
            let child = Command::new(&python)
                .arg(root.join("tests/peers/py_peer.py"))
                .args([
                    "--url",
                    &devroom.url(),
                    "--token",
                    &token(&identity)?,
                    "--publish",
                    "audio,video",
                ])
                .args(["--width", "320", "--fps", "30", "--stay", "30", "--hold"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            let t = first_rtp(&devroom, &identity, started).await;
            stop(child);
            println!(
                "python SDK (py_peer) #{i}: {}",
                t.map(|d| format!("{} ms", d.as_millis()))
                    .unwrap_or("no RTP".into())
            );
            theirs.extend(t);
        }
    } else {
        println!(
            "python SDK: no venv at {} (run scripts/install-deps.sh)",
            python.display()
        );
    }
    let show = |v: Vec<Duration>| {
        median(v)
            .map(|d| format!("{} ms", d.as_millis()))
            .unwrap_or("n/a".into())
    };
    println!(
        "median process start -> first RTP at devroom: roomcast {}, python SDK {}",
        show(ours),
        show(theirs)
    );
    devroom.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
