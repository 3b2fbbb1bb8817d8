//! `devroom --listen ADDR --keys KEY:SECRET [--media-ip IP] [--frame-dir DIR]`.
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
    fn listen_and_ping_settings_are_checked() {
        let args = |listen: &str, ping_interval: u32, ping_timeout: u32| Args {
            listen: listen.into(),
            keys: vec!["a:b".into()],
            media_ip: None,
            frame_dir: None,
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
