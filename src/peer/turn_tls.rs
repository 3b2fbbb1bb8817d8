//! TURN over TLS for webrtc-rs, which skips `turns:` URLs.
//!
//! # Design
//! webrtc-rs's TURN client speaks TURN over UDP only, and the crate has no pluggable transport
//! for it. So roomcast runs a small local relay:
//!
//! ```text
//!  webrtc-rs TURN client ──UDP──▶ 127.0.0.1:PORT (this relay) ──TLS/TCP──▶ turns:host:443
//!        (one 5-tuple per                one TLS connection per
//!         local ICE socket)              UDP source address
//! ```
//!
//! * [`localize`] rewrites every `turns:HOST:PORT?transport=tcp` entry of the server's ICE
//!   servers into `turn:127.0.0.1:LOCAL?transport=udp`, keeping its username and credential,
//!   and starts (once per process, per server and CA file) the relay listening on `LOCAL`.
//! * The relay forwards each datagram it receives as is, on a TLS connection it opens for
//!   that UDP source address (so each ICE socket gets its own allocation on the server, as over
//!   UDP), and sends back every message read from that connection to the source. TURN's
//!   long-term-credential MESSAGE-INTEGRITY covers the message, never the transport addresses,
//!   so nothing has to be re-signed; XOR-RELAYED-ADDRESS is the server's relay address and is
//!   right as it is.
//! * Framing (RFC 8656 §12.5, formerly RFC 5766 §11.5): over a stream, STUN messages delimit
//!   themselves (20-byte header + a length that is a multiple of 4) and ChannelData messages
//!   (4-byte header: channel 0x4000–0x4FFF, length) MUST be padded to a multiple of 4. Over
//!   UDP the padding is optional, so [`to_stream`] adds it and [`FrameDecoder`] strips it.
//! * The certificate is checked against the webpki roots plus `ca_file`, the same trust as the
//!   signalling WebSocket ([`crate::signal::ws::tls_config`]), for the host named in the URL.
//! * The relay's connections close when the server closes them, or after [`IDLE`] without a
//!   datagram from their source (ICE consent checks run every few seconds on a pair in use).
//! * [`relayed_addresses`] lists the XOR-RELAYED-ADDRESS of every allocation made through a
//!   relay, so the device can tell a TURN/TLS candidate from a TURN/UDP one when it reports the
//!   selected pair (to webrtc-rs both are relay candidates over UDP).
use livekit_protocol as proto;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;

/// A relay connection with no datagram from its source for this long is closed.
pub const IDLE: Duration = Duration::from_secs(300);
/// Bound on TCP connect + TLS handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const STUN_HEADER: usize = 20;
const CHANNEL_HEADER: usize = 4;
/// The largest frame accepted from the stream (a ChannelData or STUN message fits in 64 KiB).
const MAX_FRAME: usize = 4 + 0xFFFF + 3;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("not a STUN or ChannelData message (first byte {0:#04x})")]
    NotTurn(u8),
    #[error("a {kind} message of {len} bytes says it carries {claimed}")]
    Length {
        kind: &'static str,
        len: usize,
        claimed: usize,
    },
}

/// What the first bytes of a TURN message say about it: its kind, and its length on a stream.
fn stream_len(header: &[u8]) -> Result<Option<(&'static str, usize, usize)>, FrameError> {
    let Some(&first) = header.first() else {
        return Ok(None);
    };
    match first >> 6 {
        0b00 => {
            // RFC 8489 §5: every STUN message carries the magic cookie at bytes 4..8.
            if header.len() >= 8 && header[4..8] != [0x21, 0x12, 0xA4, 0x42] {
                return Err(FrameError::NotTurn(first));
            }
            if header.len() < STUN_HEADER {
                return Ok(None);
            }
            let len = u16::from_be_bytes([header[2], header[3]]) as usize;
            if len % 4 != 0 {
                return Err(FrameError::Length {
                    kind: "STUN",
                    len: STUN_HEADER + len,
                    claimed: len,
                });
            }
            Ok(Some(("STUN", STUN_HEADER + len, STUN_HEADER + len)))
        }
        0b01 => {
            if header.len() < CHANNEL_HEADER {
                return Ok(None);
            }
            // RFC 8656 §12: channel numbers 0x4000 through 0x4FFF; the rest is reserved.
            if u16::from_be_bytes([header[0], header[1]]) > 0x4FFF {
                return Err(FrameError::NotTurn(first));
            }
            let len = u16::from_be_bytes([header[2], header[3]]) as usize;
            let unpadded = CHANNEL_HEADER + len;
            Ok(Some((
                "ChannelData",
                unpadded,
                unpadded.next_multiple_of(4),
            )))
        }
        _ => Err(FrameError::NotTurn(first)),
    }
}

/// A datagram from the TURN client as it goes on the stream: a STUN message unchanged, a
/// ChannelData message padded to a multiple of 4.
pub fn to_stream(datagram: &[u8]) -> Result<Vec<u8>, FrameError> {
    let Some((kind, unpadded, padded)) = stream_len(datagram)? else {
        return Err(FrameError::Length {
            kind: "short",
            len: datagram.len(),
            claimed: 0,
        });
    };
    // Over UDP a ChannelData may carry its padding or not; anything else is malformed.
    let fits = datagram.len() == unpadded || (kind == "ChannelData" && datagram.len() == padded);
    if !fits {
        return Err(FrameError::Length {
            kind,
            len: datagram.len(),
            claimed: unpadded,
        });
    }
    let mut out = datagram[..unpadded].to_vec();
    out.resize(padded, 0);
    Ok(out)
}

/// Splits the byte stream from the server into datagrams for the TURN client (ChannelData
/// without its stream padding).
#[derive(Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
}

impl FrameDecoder {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole message, `Ok(None)` until one has arrived.
    pub fn next_datagram(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        let Some((_, unpadded, padded)) = stream_len(&self.buf)? else {
            return Ok(None);
        };
        if padded > MAX_FRAME {
            return Err(FrameError::Length {
                kind: "oversized",
                len: padded,
                claimed: MAX_FRAME,
            });
        }
        if self.buf.len() < padded {
            return Ok(None);
        }
        let datagram = self.buf[..unpadded].to_vec();
        self.buf.drain(..padded);
        Ok(Some(datagram))
    }
}

/// XOR-RELAYED-ADDRESS (0x0016) of a successful Allocate response (0x0103), if `msg` is one.
pub fn allocate_relayed_address(msg: &[u8]) -> Option<SocketAddr> {
    const ALLOCATE_SUCCESS: u16 = 0x0103;
    const XOR_RELAYED_ADDRESS: u16 = 0x0016;
    const MAGIC: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
    if msg.len() < STUN_HEADER || u16::from_be_bytes([msg[0], msg[1]]) != ALLOCATE_SUCCESS {
        return None;
    }
    let end = (STUN_HEADER + u16::from_be_bytes([msg[2], msg[3]]) as usize).min(msg.len());
    let mut at = STUN_HEADER;
    while at + 4 <= end {
        let typ = u16::from_be_bytes([msg[at], msg[at + 1]]);
        let len = u16::from_be_bytes([msg[at + 2], msg[at + 3]]) as usize;
        let value = msg.get(at + 4..at + 4 + len)?;
        if typ == XOR_RELAYED_ADDRESS && len >= 8 {
            let port = u16::from_be_bytes([value[2] ^ MAGIC[0], value[3] ^ MAGIC[1]]);
            return match value[1] {
                0x01 => {
                    let ip: [u8; 4] = std::array::from_fn(|i| value[4 + i] ^ MAGIC[i]);
                    Some(SocketAddr::new(IpAddr::from(ip), port))
                }
                0x02 if len >= 20 => {
                    let key: Vec<u8> = MAGIC.iter().chain(&msg[8..20]).copied().collect();
                    let ip: [u8; 16] = std::array::from_fn(|i| value[4 + i] ^ key[i]);
                    Some(SocketAddr::new(IpAddr::from(ip), port))
                }
                _ => None,
            };
        }
        at += 4 + len.next_multiple_of(4);
    }
    None
}

type RelayKey = (String, u16, Option<PathBuf>);

fn relays() -> &'static Mutex<HashMap<RelayKey, SocketAddr>> {
    static RELAYS: OnceLock<Mutex<HashMap<RelayKey, SocketAddr>>> = OnceLock::new();
    RELAYS.get_or_init(Default::default)
}

fn relayed() -> &'static Mutex<HashSet<SocketAddr>> {
    static RELAYED: OnceLock<Mutex<HashSet<SocketAddr>>> = OnceLock::new();
    RELAYED.get_or_init(Default::default)
}

/// The relayed addresses of every allocation made through a TURN/TLS relay so far.
pub fn relayed_addresses() -> HashSet<SocketAddr> {
    relayed().lock().unwrap().clone()
}

/// `turns:host[:port][?transport=tcp]` → (host, port). None for anything else.
pub fn parse_turns_url(url: &str) -> Option<(String, u16)> {
    let rest = url.strip_prefix("turns:")?;
    let (hostport, query) = match rest.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (rest, None),
    };
    if query.is_some_and(|q| q != "transport=tcp") {
        return None; // DTLS (transport=udp) is not TLS
    }
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (host, tail) = v6.split_once(']')?;
        let port = match tail.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None => 443,
        };
        (host.to_string(), port)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse().ok()?),
            None => (hostport.to_string(), 443),
        }
    };
    (!host.is_empty()).then_some((host, port))
}

/// The server's ICE servers with every `turns:` URL replaced by a local relay's
/// `turn:127.0.0.1:PORT?transport=udp` (see the module doc). A relay that cannot start is
/// logged and its URL dropped; the other paths stay.
pub async fn localize(
    servers: &[proto::IceServer],
    ca_file: Option<&Path>,
) -> Vec<proto::IceServer> {
    let mut out = Vec::with_capacity(servers.len());
    for server in servers {
        let mut server = server.clone();
        let mut urls = Vec::with_capacity(server.urls.len());
        for url in &server.urls {
            let Some((host, port)) = parse_turns_url(url) else {
                urls.push(url.clone());
                continue;
            };
            match relay_for(&host, port, ca_file).await {
                Ok(local) => {
                    tracing::info!("TURN/TLS {url} is reached through the local relay {local}");
                    urls.push(format!("turn:{local}?transport=udp"));
                }
                Err(e) => tracing::warn!("no TURN/TLS through {url}: {e:#}"),
            }
        }
        server.urls = urls;
        out.push(server);
    }
    out
}

async fn relay_for(host: &str, port: u16, ca_file: Option<&Path>) -> anyhow::Result<SocketAddr> {
    let key = (host.to_string(), port, ca_file.map(Path::to_path_buf));
    if let Some(addr) = relays().lock().unwrap().get(&key) {
        return Ok(*addr);
    }
    let tls = crate::signal::ws::tls_config(ca_file).map_err(|e| anyhow::anyhow!("{e}"))?;
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| anyhow::anyhow!("{host:?} is not a TLS server name: {e}"))?;
    let addr = start_relay(host.to_string(), port, name, tls, super::path::TLS_DEFER).await?;
    relays().lock().unwrap().insert(key, addr);
    Ok(addr)
}

/// Start a relay on 127.0.0.1 for the TURN/TLS server `host:port`; returns its UDP address.
/// Datagrams from a new source are dropped for `defer` (the TURN client retransmits), which puts
/// TURN/TLS last in the fallback order ([`super::path`]).
pub async fn start_relay(
    host: String,
    port: u16,
    name: rustls::pki_types::ServerName<'static>,
    tls: Arc<rustls::ClientConfig>,
    defer: Duration,
) -> anyhow::Result<SocketAddr> {
    let socket = Arc::new(UdpSocket::bind((IpAddr::from([127, 0, 0, 1]), 0)).await?);
    let local = socket.local_addr()?;
    tokio::spawn(async move {
        let mut conns: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>> = HashMap::new();
        let mut first_seen: HashMap<SocketAddr, tokio::time::Instant> = HashMap::new();
        let mut buf = vec![0u8; 65536];
        loop {
            let (n, from) = match socket.recv_from(&mut buf).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!("TURN/TLS relay {local}: {e}");
                    continue;
                }
            };
            let seen = *first_seen
                .entry(from)
                .or_insert_with(tokio::time::Instant::now);
            if seen.elapsed() < defer {
                continue;
            }
            let frame = match to_stream(&buf[..n]) {
                Ok(f) => f,
                Err(e) => {
                    tracing::debug!("TURN/TLS relay {local}: dropping a datagram from {from}: {e}");
                    continue;
                }
            };
            let tx = conns
                .get(&from)
                .filter(|tx| !tx.is_closed())
                .cloned()
                .unwrap_or_else(|| {
                    let (tx, rx) = mpsc::channel(256);
                    let conn = Conn {
                        host: host.clone(),
                        port,
                        name: name.clone(),
                        tls: tls.clone(),
                        socket: socket.clone(),
                        client: from,
                    };
                    tokio::spawn(conn.run(rx));
                    conns.insert(from, tx.clone());
                    tx
                });
            if tx.try_send(frame).is_err() {
                tracing::debug!("TURN/TLS relay {local}: connection for {from} is behind; dropped");
            }
        }
    });
    Ok(local)
}

/// One TLS connection, for one UDP source.
struct Conn {
    host: String,
    port: u16,
    name: rustls::pki_types::ServerName<'static>,
    tls: Arc<rustls::ClientConfig>,
    socket: Arc<UdpSocket>,
    client: SocketAddr,
}

impl Conn {
    async fn connect(&self) -> anyhow::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port)).await?;
        tcp.set_nodelay(true)?;
        let connector = tokio_rustls::TlsConnector::from(self.tls.clone());
        Ok(connector.connect(self.name.clone(), tcp).await?)
    }

    async fn run(self, mut rx: mpsc::Receiver<Vec<u8>>) {
        let target = format!("{}:{}", self.host, self.port);
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, self.connect()).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::warn!("TURN/TLS {target}: {e:#}");
                return;
            }
            Err(_) => {
                tracing::warn!("TURN/TLS {target}: no TLS connection within {CONNECT_TIMEOUT:?}");
                return;
            }
        };
        tracing::debug!("TURN/TLS {target}: connected for {}", self.client);
        let (mut reader, mut writer) = tokio::io::split(stream);
        let socket = self.socket.clone();
        let client = self.client;
        let mut read_task = tokio::spawn(async move {
            let mut decoder = FrameDecoder::default();
            let mut buf = vec![0u8; 16384];
            loop {
                let n = match reader.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                decoder.push(&buf[..n]);
                loop {
                    match decoder.next_datagram() {
                        Ok(Some(datagram)) => {
                            if let Some(addr) = allocate_relayed_address(&datagram) {
                                relayed().lock().unwrap().insert(addr);
                            }
                            let _ = socket.send_to(&datagram, client).await;
                        }
                        Ok(None) => break,
                        Err(e) => {
                            tracing::warn!("TURN/TLS: the server sent {e}; closing");
                            return;
                        }
                    }
                }
            }
        });
        loop {
            tokio::select! {
                _ = &mut read_task => break,
                frame = tokio::time::timeout(IDLE, rx.recv()) => match frame {
                    Ok(Some(frame)) => {
                        if writer.write_all(&frame).await.is_err() {
                            break;
                        }
                    }
                    Ok(None) | Err(_) => break,
                },
            }
        }
        read_task.abort();
        let _ = writer.shutdown().await;
        tracing::debug!("TURN/TLS {target}: closed for {}", self.client);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stun(typ: u16, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&typ.to_be_bytes());
        m.extend_from_slice(&(body.len() as u16).to_be_bytes());
        m.extend_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
        m.extend_from_slice(&[7; 12]);
        m.extend_from_slice(body);
        m
    }

    fn channel_data(channel: u16, data: &[u8]) -> Vec<u8> {
        let mut m = channel.to_be_bytes().to_vec();
        m.extend_from_slice(&(data.len() as u16).to_be_bytes());
        m.extend_from_slice(data);
        m
    }

    #[test]
    fn a_stun_message_goes_on_the_stream_unchanged() {
        let m = stun(0x0003, &[0, 0x19, 0, 4, 17, 0, 0, 0]);
        assert_eq!(to_stream(&m).unwrap(), m);
    }

    #[test]
    fn channel_data_is_padded_to_four_on_the_stream() {
        let m = channel_data(0x4001, b"hello");
        let framed = to_stream(&m).unwrap();
        assert_eq!(framed.len(), 12);
        assert_eq!(&framed[..9], &m[..]);
        assert_eq!(&framed[9..], &[0, 0, 0]);
        // Already aligned: nothing added.
        let aligned = channel_data(0x4001, b"abcd");
        assert_eq!(to_stream(&aligned).unwrap(), aligned);
        // A UDP ChannelData that carries its padding already is accepted as is.
        assert_eq!(to_stream(&framed).unwrap(), framed);
    }

    #[test]
    fn malformed_datagrams_are_refused() {
        assert_eq!(to_stream(&[0x80, 0, 0, 0]), Err(FrameError::NotTurn(0x80)));
        let mut short = stun(0x0001, &[0; 8]);
        short.truncate(24);
        assert!(matches!(to_stream(&short), Err(FrameError::Length { .. })));
        let mut long = channel_data(0x4000, b"ab");
        long.extend_from_slice(&[1; 6]);
        assert!(matches!(to_stream(&long), Err(FrameError::Length { .. })));
        let mut odd = stun(0x0001, &[0; 4]);
        odd[3] = 3; // a STUN length is always a multiple of 4
        assert!(to_stream(&odd).is_err());
    }

    #[test]
    fn the_decoder_splits_a_stream_into_datagrams_and_strips_padding() {
        let a = stun(0x0101, &[0; 12]);
        let b = channel_data(0x4002, b"xyz");
        let c = channel_data(0x4FFF, &[9; 8]);
        let mut stream = Vec::new();
        for m in [&a, &b, &c] {
            stream.extend_from_slice(&to_stream(m).unwrap());
        }
        // Byte by byte: nothing comes out until a message is whole.
        let mut decoder = FrameDecoder::default();
        let mut out = Vec::new();
        for byte in &stream {
            decoder.push(std::slice::from_ref(byte));
            while let Some(d) = decoder.next_datagram().unwrap() {
                out.push(d);
            }
        }
        assert_eq!(out, vec![a.clone(), b.clone(), c.clone()]);
        // All at once.
        let mut decoder = FrameDecoder::default();
        decoder.push(&stream);
        let mut out = Vec::new();
        while let Some(d) = decoder.next_datagram().unwrap() {
            out.push(d);
        }
        assert_eq!(out, vec![a, b, c]);
        assert!(decoder.buf.is_empty());
    }

    #[test]
    fn reserved_channel_numbers_are_not_channel_data() {
        assert_eq!(
            to_stream(&channel_data(0x5000, b"ab")),
            Err(FrameError::NotTurn(0x50))
        );
    }

    #[test]
    fn the_decoder_stops_on_garbage() {
        let mut decoder = FrameDecoder::default();
        decoder.push(b"SSH-2.0-OpenSSH_9.2\r\n");
        assert_eq!(decoder.next_datagram(), Err(FrameError::NotTurn(b'S')));
        let mut decoder = FrameDecoder::default();
        decoder.push(&[0x16, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28, 0x00]); // a TLS record
        assert_eq!(decoder.next_datagram(), Err(FrameError::NotTurn(0x16)));
    }

    #[test]
    fn the_relayed_address_is_read_from_an_allocate_success() {
        // XOR-RELAYED-ADDRESS 203.0.113.1:30001, after a LIFETIME attribute.
        let port = 30001u16 ^ 0x2112;
        let ip: [u8; 4] =
            std::array::from_fn(|i| [203, 0, 113, 1][i] ^ [0x21, 0x12, 0xA4, 0x42][i]);
        let mut body = vec![0, 0x0D, 0, 4, 0, 0, 0x0E, 0x10];
        body.extend_from_slice(&[0, 0x16, 0, 8, 0, 1]);
        body.extend_from_slice(&port.to_be_bytes());
        body.extend_from_slice(&ip);
        let m = stun(0x0103, &body);
        assert_eq!(
            allocate_relayed_address(&m),
            Some("203.0.113.1:30001".parse().unwrap())
        );
        assert_eq!(allocate_relayed_address(&stun(0x0101, &body)), None);
    }

    #[test]
    fn turns_urls_are_parsed_and_others_left_alone() {
        assert_eq!(
            parse_turns_url("turns:turn.lk.test:443?transport=tcp"),
            Some(("turn.lk.test".into(), 443))
        );
        assert_eq!(
            parse_turns_url("turns:turn.example"),
            Some(("turn.example".into(), 443))
        );
        assert_eq!(
            parse_turns_url("turns:[2001:db8::1]:5349"),
            Some(("2001:db8::1".into(), 5349))
        );
        assert_eq!(
            parse_turns_url("turn:198.51.100.1:3478?transport=udp"),
            None
        );
        assert_eq!(parse_turns_url("turns:x.test:443?transport=udp"), None);
    }

    /// End to end through a real TLS server: the relay pads on the way out, strips on the way
    /// back, and refuses a certificate from a CA it was not given.
    #[tokio::test]
    async fn a_datagram_crosses_the_relay_both_ways() {
        let (server_addr, ca_pem, server) = tls_echo_server().await;
        let dir = std::env::temp_dir().join(format!("turn-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, ca_pem).unwrap();
        let tls = crate::signal::ws::tls_config(Some(&ca_file)).unwrap();
        let name = rustls::pki_types::ServerName::try_from("turn.lk.test").unwrap();
        let relay = start_relay(
            server_addr.ip().to_string(),
            server_addr.port(),
            name.clone(),
            tls,
            Duration::ZERO,
        )
        .await
        .unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let msg = channel_data(0x4001, b"media");
        client.send_to(&msg, relay).await.unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
            .await
            .expect("no answer through the relay")
            .unwrap();
        assert_eq!(from, relay);
        assert_eq!(&buf[..n], &msg[..], "padding must be stripped towards UDP");
        // What the server read off the TLS stream was padded to 4.
        let seen = server.await.unwrap();
        assert_eq!(seen, to_stream(&msg).unwrap());

        // Without the test CA, the handshake fails and nothing comes back.
        let (server_addr, _, _server) = tls_echo_server().await;
        let tls = crate::signal::ws::tls_config(None).unwrap();
        let relay = start_relay(
            server_addr.ip().to_string(),
            server_addr.port(),
            name,
            tls,
            Duration::ZERO,
        )
        .await
        .unwrap();
        client.send_to(&msg, relay).await.unwrap();
        let answer =
            tokio::time::timeout(Duration::from_millis(1500), client.recv_from(&mut buf)).await;
        assert!(answer.is_err(), "an untrusted certificate was accepted");
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A TLS server for turn.lk.test with a CA made by openssl now; it echoes one frame back
    /// and returns the bytes it read.
    async fn tls_echo_server() -> (SocketAddr, Vec<u8>, tokio::task::JoinHandle<Vec<u8>>) {
        let dir = std::env::temp_dir().join(format!(
            "turn-tls-ca-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let run = |args: &[&str]| {
            let status = std::process::Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .stderr(std::process::Stdio::null())
                .status()
                .expect("openssl");
            assert!(status.success(), "openssl {args:?}");
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "1",
            "-subj",
            "/CN=test CA",
        ]);
        run(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "turn.key",
            "-out",
            "turn.csr",
            "-subj",
            "/CN=turn.lk.test",
        ]);
        std::fs::write(dir.join("ext"), "subjectAltName=DNS:turn.lk.test\n").unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            "turn.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "turn.crt",
            "-days",
            "1",
            "-extfile",
            "ext",
        ]);
        let ca_pem = std::fs::read(dir.join("ca.pem")).unwrap();
        let certs: Vec<_> =
            rustls_pemfile::certs(&mut std::fs::read(dir.join("turn.crt")).unwrap().as_slice())
                .collect::<Result<_, _>>()
                .unwrap();
        let key = rustls_pemfile::private_key(
            &mut std::fs::read(dir.join("turn.key")).unwrap().as_slice(),
        )
        .unwrap()
        .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                return Vec::new();
            };
            let mut buf = vec![0u8; 64];
            let mut seen = Vec::new();
            while seen.len() < 4
                || seen.len()
                    < (4 + u16::from_be_bytes([seen[2], seen[3]]) as usize).next_multiple_of(4)
            {
                let n = tls.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&buf[..n]);
            }
            tls.write_all(&seen).await.unwrap();
            tls.flush().await.unwrap();
            seen
        });
        (addr, ca_pem, server)
    }
}
