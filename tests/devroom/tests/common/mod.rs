//! Helpers shared by the integration tests that run against devroom.
// Each test binary compiles this module and uses its own subset of it.
#![allow(dead_code)]

#[allow(unused_imports)] // each test binary uses its own subset
pub use devroom::token::{join_token, join_token_signed, API_KEY, API_SECRET};
use devroom::{DevRoom, DevRoomConfig};

/// devroom on an ephemeral loopback port, with its PNGs in a directory that outlives the test
/// (so a failing test leaves the picture behind to look at).
pub async fn start_devroom() -> DevRoom {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = DevRoomConfig::local("127.0.0.1:0".parse().unwrap());
    cfg.frame_dir = dir.keep();
    DevRoom::start(cfg).await.unwrap()
}

/// The `roomcast` binary the device tests run: `ROOMCAST_BIN`, else the one cargo built next to
/// this test (`target/<profile>/roomcast`; `cargo build --workspace` builds it). Cargo's
/// `CARGO_BIN_EXE_*` covers only a package's own binaries, and roomcast is another package.
pub fn roomcast_bin() -> std::path::PathBuf {
    if let Some(path) = std::env::var_os("ROOMCAST_BIN") {
        return path.into();
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/client_devroom-HASH -> target/<profile>/roomcast
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("roomcast"))
        .expect("a test binary lives in target/<profile>/deps");
    assert!(
        bin.exists(),
        "no roomcast binary at {}: run `cargo build --workspace` (or set ROOMCAST_BIN)",
        bin.display()
    );
    bin
}
