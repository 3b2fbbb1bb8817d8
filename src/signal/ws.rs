//! The WebSocket shell around [`super::session::SignalSession`]: tokio-tungstenite over rustls.
//!
//! It opens the socket (token in `Authorization: Bearer`, never in the URL), asks the validate
//! endpoint why an upgrade failed, and then only moves bytes: frames in are decoded and fed to
//! the session, frames the session wants out are written, timers are the session's.
use super::session::{SessionEvent, SessionOptions, SessionState, SignalSession};
use futures_util::{SinkExt as _, StreamExt as _};
use livekit_protocol as proto;
use prost::Message as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How a connection attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The server refused the upgrade; `reason` is what its validate endpoint said.
    #[error("the server refused the connection (HTTP {status}): {reason}")]
    Rejected { status: u16, reason: String },
    #[error("could not reach {url} within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("could not connect to {url}: {source}")]
    Transport {
        url: String,
        source: tungstenite::Error,
    },
    #[error("TLS setup: {0}")]
    Tls(String),
}

impl ConnectError {
    /// The server's host answered the TCP connect with a reset: it is up, but nothing listens on
    /// the port (yet): the server is restarting.
    pub fn is_refused(&self) -> bool {
        matches!(
            self,
            ConnectError::Transport {
                source: tungstenite::Error::Io(err),
                ..
            } if err.kind() == std::io::ErrorKind::ConnectionRefused
        )
    }

    /// 401/403: the token is wrong; retrying with the same one cannot help.
    pub fn is_auth_failure(&self) -> bool {
        matches!(
            self,
            ConnectError::Rejected {
                status: 401 | 403,
                ..
            }
        )
    }
}

/// A rustls client config with the webpki roots plus, optionally, the CA in `ca_file`.
pub fn tls_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, ConnectError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|e| {
            ConnectError::Tls(format!(
                "ca_file {}: {e} (point ca_file at a PEM file)",
                path.display()
            ))
        })?;
        let mut added = 0;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert =
                cert.map_err(|e| ConnectError::Tls(format!("ca_file {}: {e}", path.display())))?;
            roots
                .add(cert)
                .map_err(|e| ConnectError::Tls(format!("ca_file {}: {e}", path.display())))?;
            added += 1;
        }
        if added == 0 {
            return Err(ConnectError::Tls(format!(
                "ca_file {}: no PEM certificate found",
                path.display()
            )));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConnectError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Open the signalling WebSocket at `url` (already carrying its query).
pub async fn open(
    url: &str,
    token: &str,
    ca_file: Option<&Path>,
    timeout: Duration,
) -> Result<WsStream, ConnectError> {
    let mut request = url
        .into_client_request()
        .map_err(|source| ConnectError::Transport {
            url: redact(url),
            source,
        })?;
    request.headers_mut().insert(
        "Authorization",
        format!("Bearer {token}").parse().map_err(|_| {
            ConnectError::Tls("the token contains characters not allowed in an HTTP header".into())
        })?,
    );
    let connector = if url.starts_with("wss:") {
        Some(tokio_tungstenite::Connector::Rustls(tls_config(ca_file)?))
    } else {
        None
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let host = request.uri().host().unwrap_or_default().to_string();
    let port = request
        .uri()
        .port_u16()
        .unwrap_or(if url.starts_with("wss:") { 443 } else { 80 });
    let attempt = async {
        let tcp = connect_tcp(&host, port, deadline)
            .await
            .map_err(tungstenite::Error::Io)?;
        tokio_tungstenite::client_async_tls_with_config(request, tcp, None, connector).await
    };
    match tokio::time::timeout_at(deadline, attempt).await {
        Err(_) => Err(ConnectError::Timeout {
            url: redact(url),
            timeout,
        }),
        Ok(Ok((ws, _response))) => Ok(ws),
        Ok(Err(tungstenite::Error::Http(response))) => {
            let status = response.status().as_u16();
            let body = response
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).trim().to_string())
                .unwrap_or_default();
            Err(ConnectError::Rejected {
                status,
                reason: without_token(&body, token),
            })
        }
        Ok(Err(source)) => Err(ConnectError::Transport {
            url: redact(url),
            source,
        }),
    }
}

/// While a TCP connect gets no answer, another starts this often (the earlier ones stay open).
const SYN_RETRY: Duration = Duration::from_secs(1);

/// TCP to `host:port`. While no answer comes, a further connection attempt starts every
/// [`SYN_RETRY`] until `deadline`, and the first to connect wins: during an outage the kernel's
/// SYN retransmissions back off to seconds apart, so the first one after the link returns would
/// come late; the earlier attempts stay open, so a slow link's late SYN-ACK still counts.
/// Refused or unreachable comes back at once, for the caller's backoff to handle.
async fn connect_tcp(
    host: &str,
    port: u16,
    deadline: tokio::time::Instant,
) -> std::io::Result<TcpStream> {
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let mut attempts = futures_util::stream::FuturesUnordered::new();
    let mut next_at = tokio::time::Instant::now();
    loop {
        if next_at <= tokio::time::Instant::now() && next_at < deadline {
            let host = host.clone();
            attempts.push(async move { TcpStream::connect((host.as_str(), port)).await });
            next_at += SYN_RETRY;
        }
        tokio::select! {
            Some(result) = attempts.next() => {
                let stream = result?;
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            _ = tokio::time::sleep_until(next_at.min(deadline)) => {
                if tokio::time::Instant::now() >= deadline {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "no answer to the TCP connect",
                    ));
                }
            }
        }
    }
}

/// Hide the query (join_request, access tokens) from logs and errors.
pub fn redact(url: &str) -> String {
    match url.split_once('?') {
        Some((base, _)) => format!("{base}?…"),
        None => url.to_string(),
    }
}

/// The server's refusal text with our token taken out: livekit-server quotes the whole JWT in its
/// 401 text ("invalid token: eyJ…, error: token is expired"), which would put a credential in the
/// journal and bury the cause.
pub fn without_token(text: &str, token: &str) -> String {
    if token.is_empty() {
        return text.to_string();
    }
    text.replace(token, "<token>")
}

/// GET the validate URL (same query, same Bearer header) and return the status and the server's
/// text. Runs ureq on a blocking thread; gives up after 3 s like the Rust SDK.
pub async fn validate(
    validate_url: String,
    token: String,
    ca_file: Option<PathBuf>,
) -> Option<(u16, String)> {
    tokio::task::spawn_blocking(move || {
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(path) = &ca_file {
            let pem = std::fs::read(path).ok()?;
            let certs: Vec<_> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(3)))
            .tls_config(tls.build())
            .build()
            .into();
        let mut response = agent
            .get(&validate_url)
            .header("Authorization", &format!("Bearer {token}"))
            .call()
            .ok()?;
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_string().unwrap_or_default();
        Some((status, without_token(body.trim(), &token)))
    })
    .await
    .ok()
    .flatten()
}

/// What the signalling task reports.
#[derive(Debug)]
pub enum SignalEvent {
    Session(Box<SessionEvent>),
    /// The socket is gone: closed by the server (with its close code) or broken.
    Closed {
        code: Option<u16>,
        reason: String,
    },
}

enum Command {
    Send(Box<proto::signal_request::Message>),
    ReleaseRequests,
    Leave(proto::DisconnectReason, oneshot::Sender<()>),
    Close,
}

/// The owner's end of a running signalling task.
#[derive(Clone)]
pub struct SignalHandle {
    commands: mpsc::UnboundedSender<Command>,
}

impl SignalHandle {
    pub fn send(&self, msg: proto::signal_request::Message) {
        let _ = self.commands.send(Command::Send(Box::new(msg)));
    }

    /// Send Leave{reason}, close the socket with 1000, and return when that is done
    /// (or after `timeout`).
    pub async fn leave(&self, reason: proto::DisconnectReason, timeout: Duration) {
        let (done_tx, done_rx) = oneshot::channel();
        if self.commands.send(Command::Leave(reason, done_tx)).is_ok() {
            let _ = tokio::time::timeout(timeout, done_rx).await;
        }
    }

    pub fn close(&self) {
        let _ = self.commands.send(Command::Close);
    }

    /// A resumed session holds requests until the PeerConnections are back: let them go.
    pub fn release_requests(&self) {
        let _ = self.commands.send(Command::ReleaseRequests);
    }

    /// The signalling task still runs (it ends once the socket is closed or broken).
    pub fn is_alive(&self) -> bool {
        !self.commands.is_closed()
    }
}

/// Start the task that pumps `ws` through a fresh session.
pub fn spawn(
    ws: WsStream,
    options: SessionOptions,
) -> (SignalHandle, mpsc::UnboundedReceiver<SignalEvent>) {
    spawn_resumed(ws, options, None)
}

/// What a resumed session carries over from the one it resumes.
#[derive(Debug, Clone, Copy)]
pub struct ResumeSettings {
    /// The original JoinResponse's ping_interval and ping_timeout (ReconnectResponse has none).
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
}

/// As [`spawn`]; with `resume`, the session uses the original ping settings and holds requests
/// until [`SignalHandle::release_requests`].
pub fn spawn_resumed(
    ws: WsStream,
    options: SessionOptions,
    resume: Option<ResumeSettings>,
) -> (SignalHandle, mpsc::UnboundedReceiver<SignalEvent>) {
    let (command_tx, command_rx) = mpsc::unbounded_channel();
    let (event_tx, event_rx) = mpsc::unbounded_channel();
    let mut session = SignalSession::new(options, Instant::now());
    if let Some(resume) = resume {
        session.set_ping_config(resume.ping_interval, resume.ping_timeout);
        session.hold_requests_until_release();
    }
    tokio::spawn(run(ws, session, command_rx, event_tx));
    (
        SignalHandle {
            commands: command_tx,
        },
        event_rx,
    )
}

async fn flush(
    ws: &mut WsStream,
    session: &mut SignalSession,
    events: &mpsc::UnboundedSender<SignalEvent>,
) -> bool {
    while let Some(request) = session.poll_transmit() {
        if let Err(e) = ws
            .send(Message::Binary(request.encode_to_vec().into()))
            .await
        {
            tracing::debug!("signal write failed: {e}");
            return false;
        }
    }
    while let Some(event) = session.poll_event() {
        let _ = events.send(SignalEvent::Session(Box::new(event)));
    }
    true
}

async fn close_ws(ws: &mut WsStream) {
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    let _ = ws.close(Some(frame)).await;
    // Give the server a moment to answer the close handshake, as the JS SDK does (250 ms).
    let _ = tokio::time::timeout(Duration::from_millis(250), async {
        while let Some(Ok(msg)) = ws.next().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

async fn run(
    mut ws: WsStream,
    mut session: SignalSession,
    mut commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<SignalEvent>,
) {
    loop {
        if !flush(&mut ws, &mut session, &events).await {
            let _ = events.send(SignalEvent::Closed {
                code: None,
                reason: "write failed".into(),
            });
            return;
        }
        if session.state() == SessionState::Closed {
            close_ws(&mut ws).await;
            let _ = events.send(SignalEvent::Closed {
                code: Some(1000),
                reason: "session closed".into(),
            });
            return;
        }
        let deadline = session.poll_timeout().map(tokio::time::Instant::from_std);
        tokio::select! {
            incoming = ws.next() => match incoming {
                Some(Ok(Message::Binary(bytes))) => match proto::SignalResponse::decode(bytes.as_ref()) {
                    Ok(response) => session.handle_response(response, Instant::now()),
                    Err(e) => tracing::warn!("undecodable signal message ({} bytes): {e}", bytes.len()),
                },
                Some(Ok(Message::Close(frame))) => {
                    let (code, reason) = frame.map(|f| (Some(u16::from(f.code)), f.reason.to_string())).unwrap_or((None, String::new()));
                    session.handle_transport_closed();
                    let _ = flush(&mut ws, &mut session, &events).await;
                    let _ = events.send(SignalEvent::Closed { code, reason });
                    return;
                }
                Some(Ok(_)) => {} // ping/pong are answered by tungstenite; text is not used
                Some(Err(e)) => {
                    session.handle_transport_closed();
                    while let Some(event) = session.poll_event() {
                        let _ = events.send(SignalEvent::Session(Box::new(event)));
                    }
                    let _ = events.send(SignalEvent::Closed { code: None, reason: e.to_string() });
                    return;
                }
                None => {
                    session.handle_transport_closed();
                    while let Some(event) = session.poll_event() {
                        let _ = events.send(SignalEvent::Session(Box::new(event)));
                    }
                    let _ = events.send(SignalEvent::Closed { code: None, reason: "connection closed".into() });
                    return;
                }
            },
            command = commands.recv() => match command {
                Some(Command::Send(msg)) => session.send(*msg),
                Some(Command::ReleaseRequests) => session.release_requests(),
                Some(Command::Leave(reason, done)) => {
                    session.leave(reason);
                    let _ = flush(&mut ws, &mut session, &events).await;
                    close_ws(&mut ws).await;
                    let _ = done.send(());
                    let _ = events.send(SignalEvent::Closed { code: Some(1000), reason: "left".into() });
                    return;
                }
                Some(Command::Close) | None => {
                    close_ws(&mut ws).await;
                    return;
                }
            },
            _ = sleep_until(deadline) => session.handle_timeout(Instant::now()),
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_text_loses_the_token() {
        assert_eq!(
            without_token(
                "invalid token: eyJa.eyJb.sig, error: token is expired",
                "eyJa.eyJb.sig"
            ),
            "invalid token: <token>, error: token is expired"
        );
        assert_eq!(
            without_token("invalid API key: k", ""),
            "invalid API key: k"
        );
    }

    #[test]
    fn redact_hides_the_query() {
        assert_eq!(
            redact("wss://h/rtc/v1?join_request=abc&access_token=t"),
            "wss://h/rtc/v1?…"
        );
        assert_eq!(redact("ws://h/rtc"), "ws://h/rtc");
    }

    #[test]
    fn a_missing_ca_file_is_named_with_the_fix() {
        let err = tls_config(Some(Path::new("/nonexistent/ca.pem")))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/nonexistent/ca.pem") && err.contains("PEM"),
            "{err}"
        );
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let err = tls_config(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("no PEM certificate"), "{err}");
    }

    #[test]
    fn webpki_roots_alone_build_a_config() {
        assert!(tls_config(None).is_ok());
    }
}
