//! `devroom --listen ADDR --keys KEY:SECRET [--media-ip IP] [--frame-dir DIR] [--ice-tcp]
//! [--ice-server URL|USERNAME|CREDENTIAL ...]`.
use super::{DevRoom, DevRoomConfig};
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// HTTP + WebSocket listen address.
    #[arg(long, default_value = "127.0.0.1:7880")]
    pub listen: String,
    /// API key and secret as KEY:SECRET; repeat for more keys.
    #[arg(long, default_value = "devkey:secret")]
    pub keys: Vec<String>,
    /// Address the media plane binds and advertises (default: the listen IP).
    #[arg(long)]
    pub media_ip: Option<IpAddr>,
    /// Where PNG snapshots are written.
    #[arg(long)]
    pub frame_dir: Option<PathBuf>,
    /// Passive ICE over TCP on the media IP (a free port per PeerConnection).
    #[arg(long)]
    pub ice_tcp: bool,
    /// An ICE server handed out in JoinResponse/ReconnectResponse, as URL or
    /// URL|USERNAME|CREDENTIAL (e.g. "turn:198.51.100.1:3479?transport=udp|user|pass"); repeatable.
    #[arg(long)]
    pub ice_server: Vec<String>,
    /// JoinResponse.ping_interval in seconds.
    #[arg(long, default_value_t = 5)]
    pub ping_interval: u32,
    /// JoinResponse.ping_timeout in seconds.
    #[arg(long, default_value_t = 15)]
    pub ping_timeout: u32,
}

/// Parse `KEY:SECRET` pairs, naming the bad one.
pub fn parse_keys(keys: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    keys.iter()
        .flat_map(|k| k.split(','))
        .map(|pair| match pair.split_once(':') {
            Some((key, secret)) if !key.is_empty() && !secret.is_empty() => {
                Ok((key.to_string(), secret.to_string()))
            }
            _ => anyhow::bail!("--keys {pair:?} is not KEY:SECRET (example: --keys devkey:secret)"),
        })
        .collect()
}

/// `URL` or `URL|USERNAME|CREDENTIAL` as a JoinResponse ICE server.
pub fn parse_ice_server(text: &str) -> anyhow::Result<livekit_protocol::IceServer> {
    let mut parts = text.split('|');
    let url = parts.next().unwrap_or_default();
    let (username, credential) = (parts.next(), parts.next());
    let scheme_ok = ["stun:", "turn:", "turns:"]
        .iter()
        .any(|p| url.starts_with(p));
    if !scheme_ok || parts.next().is_some() || username.is_some() != credential.is_some() {
        anyhow::bail!(
            "--ice-server {text:?} is not URL or URL|USERNAME|CREDENTIAL with a stun:, turn: or \
             turns: URL (example: \"turn:198.51.100.1:3479?transport=udp|user|pass\")"
        );
    }
    Ok(livekit_protocol::IceServer {
        urls: vec![url.to_string()],
        username: username.unwrap_or_default().to_string(),
        credential: credential.unwrap_or_default().to_string(),
    })
}

pub fn config_from(args: &Args) -> anyhow::Result<DevRoomConfig> {
    let listen: SocketAddr = args.listen.parse().map_err(|e| {
        anyhow::anyhow!(
            "--listen {:?} is not IP:PORT ({e}); example: 127.0.0.1:7880",
            args.listen
        )
    })?;
    let mut cfg = DevRoomConfig::local(listen);
    cfg.keys = parse_keys(&args.keys)?;
    if let Some(ip) = args.media_ip {
        cfg.media_ip = ip;
    }
    if let Some(dir) = &args.frame_dir {
        cfg.frame_dir = dir.clone();
    }
    cfg.ice_tcp = args.ice_tcp;
    cfg.ice_servers = args
        .ice_server
        .iter()
        .map(|s| parse_ice_server(s))
        .collect::<anyhow::Result<_>>()?;
    if args.ping_interval == 0 || args.ping_timeout <= args.ping_interval {
        anyhow::bail!(
            "--ping-interval {} / --ping-timeout {}: need 0 < interval < timeout (LiveKit: 5 and 15)",
            args.ping_interval,
            args.ping_timeout
        );
    }
    cfg.ping_interval = args.ping_interval;
    cfg.ping_timeout = args.ping_timeout;
    Ok(cfg)
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let cfg = config_from(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let room = DevRoom::start(cfg).await?;
        println!("devroom listening on {}", room.url());
        std::io::stdout().flush()?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        room.shutdown().await;
        Ok(ExitCode::SUCCESS)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_and_bad_ones_are_named() {
        assert_eq!(
            parse_keys(&["a:b".into(), "c:d,e:f".into()]).unwrap().len(),
            3
        );
        let err = parse_keys(&["nocolon".into()]).unwrap_err().to_string();
        assert!(
            err.contains("nocolon") && err.contains("KEY:SECRET"),
            "{err}"
        );
    }

    #[test]
    fn ice_servers_are_parsed_and_bad_ones_named() {
        let s = parse_ice_server("turn:198.51.100.1:3479?transport=udp|u|p").unwrap();
        assert_eq!(s.urls, vec!["turn:198.51.100.1:3479?transport=udp"]);
        assert_eq!((s.username.as_str(), s.credential.as_str()), ("u", "p"));
        assert!(parse_ice_server("stun:198.51.100.1:3478")
            .unwrap()
            .username
            .is_empty());
        for bad in ["198.51.100.1:3478", "turn:x|user", "turn:x|u|p|q"] {
            let err = parse_ice_server(bad).unwrap_err().to_string();
            assert!(err.contains("--ice-server"), "{err}");
        }
    }

    #[test]
    fn listen_and_ping_settings_are_checked() {
        let args = |listen: &str, ping_interval: u32, ping_timeout: u32| Args {
            listen: listen.into(),
            keys: vec!["a:b".into()],
            media_ip: None,
            frame_dir: None,
            ice_tcp: false,
            ice_server: Vec::new(),
            ping_interval,
            ping_timeout,
        };
        let err = config_from(&args("localhost", 5, 15))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--listen"), "{err}");
        let err = config_from(&args("127.0.0.1:0", 5, 5))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--ping-timeout"), "{err}");
        let cfg = config_from(&args("127.0.0.1:0", 2, 6)).unwrap();
        assert_eq!(cfg.media_ip.to_string(), "127.0.0.1");
        assert_eq!((cfg.ping_interval, cfg.ping_timeout), (2, 6));
    }
}
