//! The HTTP + WebSocket listener: `/rtc`, `/rtc/v1` (+ `/validate`), `/admin/*`, `/twirp/*`.
//! A thin shell: parsing and decisions live in `connect`, `auth` and `server`.
use super::auth;
use super::connect::{parse_connect, ConnectRequest, Path, Refusal};
use super::events::EventKind;
use super::room::Outbound;
use super::server::Shared;
use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use livekit_protocol as proto;
use prost::Message as _;
use std::sync::Arc;
use std::time::Duration;

type AppState = State<Arc<Shared>>;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/rtc", get(rtc_v0))
        .route("/rtc/", get(rtc_v0))
        .route("/rtc/v1", get(rtc_v1))
        .route("/rtc/v1/", get(rtc_v1))
        .route("/rtc/validate", get(validate_v0).options(cors_preflight))
        .route("/rtc/v1/validate", get(validate_v1).options(cors_preflight))
        .route("/admin/rooms", get(admin_rooms))
        .route("/admin/events", get(admin_events))
        .route("/admin/fault/{name}", post(admin_fault))
        .route("/admin/tracks/{sid}/png", post(admin_png))
        .route("/admin/tracks/{sid}/audio", post(admin_audio))
        .route("/admin/tracks/{sid}/pli", post(admin_pli))
        .route(
            "/twirp/livekit.RoomService/{method}",
            post(super::twirp::room_service),
        )
        .with_state(shared)
}

fn text(status: u16, body: impl Into<String>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, body.into()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn with_cors(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, OPTIONS"),
    );
    resp
}

async fn cors_preflight() -> Response {
    with_cors(StatusCode::NO_CONTENT.into_response())
}

/// Parse + authorize a connect or validate request; Refusal carries LiveKit's status and text.
fn admit(
    shared: &Shared,
    path: Path,
    headers: &HeaderMap,
    query: &str,
) -> Result<(auth::JoinGrant, ConnectRequest), Refusal> {
    let req = parse_connect(path, query)?;
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let grant = auth::authorize_join(authorization, req.access_token.as_deref(), &shared.cfg.keys)
        .map_err(|e| Refusal::new(e.status(), e.to_string()))?;
    Ok((grant, req))
}

async fn rtc_v0(
    state: AppState,
    headers: HeaderMap,
    query: RawQuery,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    rtc(state, Path::V0, headers, query, ws).await
}

async fn rtc_v1(
    state: AppState,
    headers: HeaderMap,
    query: RawQuery,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    rtc(state, Path::V1, headers, query, ws).await
}

async fn rtc(
    State(shared): AppState,
    path: Path,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let query = query.unwrap_or_default();
    let refuse = |status: u16, reason: String| {
        shared.events.push(EventKind::JoinRejected {
            status,
            reason: reason.clone(),
        });
        text(status, reason)
    };
    // An injected rejection wins over everything, even a bad token (as a proxy or an
    // overloaded server would answer before looking at it).
    let admitted = admit(&shared, path, &headers, &query);
    let identity = admitted
        .as_ref()
        .ok()
        .map(|(grant, _)| grant.identity.as_str());
    if let Some((status, reason)) = shared.take_join_rejection(identity) {
        return refuse(status, reason);
    }
    let (grant, req) = match admitted {
        Ok(ok) => ok,
        Err(refusal) => return refuse(refusal.status, refusal.reason),
    };
    let Ok(ws) = ws else {
        return text(
            400,
            "expected a WebSocket upgrade on this path (use /rtc/validate for plain HTTP)",
        );
    };
    ws.max_message_size(2 << 20)
        .on_upgrade(move |socket| run_session(shared, socket, grant, req))
}

async fn validate_v0(state: AppState, headers: HeaderMap, query: RawQuery) -> Response {
    validate(state, Path::V0, headers, query).await
}

async fn validate_v1(state: AppState, headers: HeaderMap, query: RawQuery) -> Response {
    validate(state, Path::V1, headers, query).await
}

async fn validate(
    State(shared): AppState,
    path: Path,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let query = query.unwrap_or_default();
    let resp = match admit(&shared, path, &headers, &query) {
        Err(refusal) => text(refusal.status, refusal.reason),
        Ok((grant, _)) => match shared.explain_rejection(&grant.identity) {
            Some((status, reason)) => text(status, reason),
            None => text(200, "success"),
        },
    };
    with_cors(resp)
}

/// One signalling connection: first response, then requests in and responses out until it ends.
async fn run_session(
    shared: Arc<Shared>,
    mut socket: WebSocket,
    grant: auth::JoinGrant,
    req: ConnectRequest,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let identity = grant.identity.clone();
    let opened = match shared.open_session(grant, req, tx).await {
        Ok(opened) => opened,
        Err(e) => {
            tracing::warn!(error = %e, "devroom: join failed");
            let leave = proto::SignalResponse {
                message: Some(super::server::leave_message(
                    proto::DisconnectReason::JoinFailure,
                    proto::leave_request::Action::Disconnect,
                )),
            };
            let _ = socket
                .send(WsMessage::Binary(leave.encode_to_vec().into()))
                .await;
            let _ = socket.send(WsMessage::Close(None)).await;
            return;
        }
    };
    let Some((room, sid, conn)) = opened else {
        // Turned away (resume of an unknown sid): flush the Leave and close.
        while let Ok(out) = rx.try_recv() {
            if let Outbound::Msg(m) = out {
                let _ = socket
                    .send(WsMessage::Binary(m.encode_to_vec().into()))
                    .await;
            }
        }
        let _ = socket
            .send(WsMessage::Close(Some(CloseFrame {
                code: 1000,
                reason: "".into(),
            })))
            .await;
        return;
    };
    let mut json_replies = false;
    let code: u16 = loop {
        tokio::select! {
            incoming = socket.recv() => match incoming {
                Some(Ok(WsMessage::Binary(bytes))) => match proto::SignalRequest::decode(bytes.as_ref()) {
                    Ok(request) => shared.handle_request(&room, &sid, request).await,
                    Err(e) => tracing::warn!(%identity, error = %e, "devroom: undecodable SignalRequest"),
                },
                Some(Ok(WsMessage::Text(text))) => match serde_json::from_str::<proto::SignalRequest>(text.as_str()) {
                    Ok(request) => {
                        json_replies = true;
                        shared.handle_request(&room, &sid, request).await
                    }
                    Err(e) => tracing::warn!(%identity, error = %e, "devroom: undecodable JSON SignalRequest"),
                },
                Some(Ok(WsMessage::Close(frame))) => break frame.map(|f| f.code).unwrap_or(1005),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break 1006,
            },
            out = rx.recv() => match out {
                Some(Outbound::Msg(m)) => {
                    let frame = if json_replies {
                        WsMessage::Text(serde_json::to_string(&*m).unwrap_or_default().into())
                    } else {
                        WsMessage::Binary(m.encode_to_vec().into())
                    };
                    if socket.send(frame).await.is_err() {
                        break 1006;
                    }
                }
                Some(Outbound::Close(code)) => {
                    let _ = socket.send(WsMessage::Close(Some(CloseFrame { code, reason: "".into() }))).await;
                    // Give the client a moment to read the close; it usually answers at once.
                    let _ = tokio::time::timeout(Duration::from_millis(500), async {
                        while let Some(Ok(m)) = socket.recv().await {
                            if matches!(m, WsMessage::Close(_)) { break; }
                        }
                    }).await;
                    break code;
                }
                Some(Outbound::Drop) | None => break 1006,
            },
        }
    };
    drop(socket);
    shared.on_ws_closed(&room, &sid, &identity, conn, code);
}

async fn admin_rooms(State(shared): AppState) -> Response {
    axum::Json(shared.snapshot()).into_response()
}

#[derive(serde::Deserialize)]
struct EventsQuery {
    #[serde(default)]
    after: u64,
    #[serde(default)]
    wait_ms: u64,
}

async fn admin_events(
    State(shared): AppState,
    axum::extract::Query(q): axum::extract::Query<EventsQuery>,
) -> Response {
    let wait = Duration::from_millis(q.wait_ms.min(60_000));
    let events = shared.events.wait_after(q.after, wait).await;
    axum::Json(serde_json::json!({ "events": events })).into_response()
}

fn parse_reason(v: &serde_json::Value) -> Option<proto::DisconnectReason> {
    match v {
        serde_json::Value::Number(n) => proto::DisconnectReason::try_from(n.as_i64()? as i32).ok(),
        serde_json::Value::String(s) => {
            proto::DisconnectReason::from_str_name(&s.to_ascii_uppercase())
        }
        _ => None,
    }
}

fn parse_action(v: &serde_json::Value) -> Option<proto::leave_request::Action> {
    match v {
        serde_json::Value::Number(n) => {
            proto::leave_request::Action::try_from(n.as_i64()? as i32).ok()
        }
        serde_json::Value::String(s) => {
            proto::leave_request::Action::from_str_name(&s.to_ascii_uppercase())
        }
        serde_json::Value::Null => Some(proto::leave_request::Action::Disconnect),
        _ => None,
    }
}

async fn admin_fault(
    State(shared): AppState,
    axum::extract::Path(name): axum::extract::Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let body: serde_json::Value = if body.is_empty() {
        serde_json::json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return text(400, format!("body is not JSON: {e}")),
        }
    };
    let identity = body["identity"].as_str().unwrap_or_default().to_string();
    let needs_identity = matches!(name.as_str(), "drop_ws" | "pings" | "leave");
    if needs_identity && identity.is_empty() {
        return text(
            400,
            format!("/admin/fault/{name} needs {{\"identity\": \"...\"}}"),
        );
    }
    let found = |ok: bool| {
        if ok {
            axum::Json(serde_json::json!({"ok": true})).into_response()
        } else {
            text(
                404,
                format!("no connected participant with identity {identity:?}"),
            )
        }
    };
    match name.as_str() {
        "drop_ws" => found(shared.fault_drop_ws(&identity)),
        "pings" => {
            let Some(answer) = body["answer"].as_bool() else {
                return text(400, "pings needs {\"identity\", \"answer\": true|false}");
            };
            found(shared.fault_answer_pings(&identity, answer))
        }
        "leave" => {
            let Some(reason) = parse_reason(&body["reason"]) else {
                return text(400, "leave needs \"reason\": a DisconnectReason name (e.g. \"DUPLICATE_IDENTITY\") or number");
            };
            let Some(action) = parse_action(&body["action"]) else {
                return text(400, "leave \"action\" must be \"DISCONNECT\", \"RESUME\" or \"RECONNECT\"");
            };
            found(shared.fault_send_leave(&identity, reason, action).await)
        }
        "restart" => {
            shared.fault_restart().await;
            axum::Json(serde_json::json!({"ok": true})).into_response()
        }
        "pause_media" => {
            let Some(paused) = body["paused"].as_bool() else {
                return text(400, "pause_media needs {\"paused\": true|false}");
            };
            shared.fault_pause_media(paused);
            axum::Json(serde_json::json!({"ok": true})).into_response()
        }
        "reject_joins" => {
            let count = body["count"].as_u64().unwrap_or(1) as u32;
            let status = body["status"].as_u64().unwrap_or(503) as u16;
            if StatusCode::from_u16(status).is_err() || status < 400 {
                return text(400, "reject_joins \"status\" must be an HTTP error status (400..599)");
            }
            shared.fault_reject_joins(count, status);
            axum::Json(serde_json::json!({"ok": true})).into_response()
        }
        other => text(
            404,
            format!("unknown fault {other:?}: use drop_ws, pings, leave, restart, pause_media or reject_joins"),
        ),
    }
}

async fn admin_png(
    State(shared): AppState,
    axum::extract::Path(sid): axum::extract::Path<String>,
) -> Response {
    match shared.write_png(&sid).await {
        Ok((path, width, height)) => axum::Json(serde_json::json!({
            "path": path.display().to_string(), "width": width, "height": height
        }))
        .into_response(),
        Err(e) => text(404, format!("{e:#}")),
    }
}

/// Asks the track's publisher for a keyframe with a PLI, as a subscriber would: `{"sent": false}`
/// when the last one went out less than 100 ms ago.
async fn admin_pli(
    State(shared): AppState,
    axum::extract::Path(sid): axum::extract::Path<String>,
) -> Response {
    match shared.request_keyframe(&sid) {
        Ok(sent) => axum::Json(serde_json::json!({"sent": sent})).into_response(),
        Err(e) => text(404, format!("{e:#}")),
    }
}

/// Decodes the last seconds of an Opus track: `{"frequency_hz", "rms", "seconds", "packets"}`.
async fn admin_audio(
    State(shared): AppState,
    axum::extract::Path(sid): axum::extract::Path<String>,
) -> Response {
    match shared.analyse_audio(&sid).await {
        Ok(analysis) => axum::Json(analysis).into_response(),
        Err(e) => text(404, format!("{e:#}")),
    }
}
