//! Issue 10 on the host: a board whose camera is missing still sends its microphone, and
//! `roomcast run` says which device is missing and how to fix it. Run inside `tests/netns.sh`
//! (scripts/test.sh does); everything talks over 127.0.0.x only. Every wait is on a devroom
//! event or on the process's output, with a deadline.

use serde_json::Value;
use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

mod common;

fn as_json(e: &impl serde::Serialize) -> Value {
    serde_json::to_value(e).unwrap()
}

/// The lines a child prints, and a condvar raised on each new one.
#[derive(Default)]
struct Output(Mutex<Vec<String>>, Condvar);

impl Output {
    fn text(&self) -> String {
        self.0.lock().unwrap().join("\n")
    }

    /// Wait until a line contains `needle`; false after `timeout`.
    fn wait_for(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut lines = self.0.lock().unwrap();
        loop {
            if lines.iter().any(|l| l.contains(needle)) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            lines = self.1.wait_timeout(lines, deadline - now).unwrap().0;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_missing_camera_leaves_the_microphone_publishing_and_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let devroom = common::start_devroom().await;
    let camera = "/dev/video-roomcast-not-here";
    let config = dir.path().join("roomcast.toml");
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(
        &config,
        format!(
            "url = \"{}\"\ntoken = \"{}\"\nstate_dir = \"{}\"\n\n[video]\ndevice = \"{camera}\"\nwidth = 320\nheight = 240\nfps = 15\n\n[audio]\ndevice = \"tone\"\n",
            devroom.url(),
            common::join_token_signed("cam-missing", "lobby", "secret"),
            state.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(common::roomcast_bin())
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn roomcast");
    let output = Arc::new(Output::default());
    let reader = {
        let output = output.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                output.0.lock().unwrap().push(line);
                output.1.notify_all();
            }
        })
    };

    // The audio track carries RTP although the camera could not be opened.
    let published = devroom
        .wait_event(Duration::from_secs(20), |e| {
            let v = as_json(e);
            v["type"] == "track_published" && v["identity"] == "cam-missing" && v["kind"] == "audio"
        })
        .await;
    let sid = published.map(|e| as_json(&e)["track_sid"].as_str().unwrap().to_string());
    let first_audio = match &sid {
        Some(sid) => {
            let sid = sid.clone();
            devroom
                .wait_event(Duration::from_secs(20), move |e| {
                    let v = as_json(e);
                    v["type"] == "first_rtp" && v["track_sid"] == sid.as_str()
                })
                .await
        }
        None => None,
    };
    // The log names the missing camera and what to do about it.
    let named = output.wait_for(camera, Duration::from_secs(10));
    let still_running = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    let _ = reader.join();
    let text = output.text();
    assert!(sid.is_some(), "no audio track published:\n{text}");
    assert!(
        first_audio.is_some(),
        "no audio RTP reached the room:\n{text}"
    );
    assert!(
        still_running,
        "roomcast exited although only the camera was missing:\n{text}"
    );
    assert!(named, "the log does not name {camera}:\n{text}");
    let line = text.lines().find(|l| l.contains(camera)).unwrap();
    assert!(
        line.contains("roomcast devices") && line.contains("not capturing"),
        "the message should say the track is not capturing and how to find the cameras: {line}"
    );
    devroom.shutdown().await;
}
