//! `roomcast check-config` and `--log` through the real binary.
use std::process::Command;

fn roomcast() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_roomcast"));
    cmd.env_remove("RUST_LOG");
    cmd
}

#[test]
fn check_config_prints_the_effective_config_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("roomcast.toml");
    std::fs::write(
        &file,
        "url = \"https://lk.example.com\"\napi_key = \"devkey\"\napi_secret = \"very-secret-value\"\nroom = \"lobby\"\n[audio]\ndevice = \"tone\"\n",
    )
    .unwrap();
    let out = roomcast().arg("check-config").arg(&file).output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{stdout}");
    assert!(!stdout.contains("very-secret-value"), "{stdout}");
    assert!(
        stdout.contains("url = \"wss://lk.example.com\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("width = 1280") && stdout.contains("device = \"tone\""),
        "{stdout}"
    );
}

#[test]
fn check_config_fails_with_key_line_and_fix() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("roomcast.toml");
    std::fs::write(
        &file,
        "url = \"wss://x\"\ntoken = \"a\"\n\n[video]\nfsp = 30\n",
    )
    .unwrap();
    let out = roomcast().arg("check-config").arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains(":5:")
            && stderr.contains("video.fsp")
            && stderr.contains("did you mean `fps`?"),
        "{stderr}"
    );
}

#[test]
fn a_bad_log_filter_is_a_usage_error() {
    let out = roomcast()
        .args(["--log", "info,,=", "check-config", "/nonexistent"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr).unwrap().contains("--log"));
}
