//! Twirp RoomService (`POST /twirp/livekit.RoomService/<Method>`), protobuf or JSON bodies
//! (Python livekit-api sends protobuf, node livekit-server-sdk sends camelCase JSON).
// Handlers return ready HTTP responses as errors; their size is irrelevant next to the IO.
#![allow(clippy::result_large_err)]
use super::server::Shared;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use livekit_protocol as proto;
use prost::Message;
use serde::{de::DeserializeOwned, Serialize};
use std::sync::Arc;

struct Codec {
    json: bool,
}

impl Codec {
    fn decode<T: Message + Default + DeserializeOwned>(&self, body: &[u8]) -> Result<T, Response> {
        if self.json {
            let body = if body.is_empty() {
                b"{}".as_slice()
            } else {
                body
            };
            serde_json::from_slice(body)
                .map_err(|e| twirp_error(400, "malformed", &format!("bad JSON body: {e}")))
        } else {
            T::decode(body)
                .map_err(|e| twirp_error(400, "malformed", &format!("bad protobuf body: {e}")))
        }
    }

    fn reply<T: Message + Serialize>(&self, msg: &T) -> Response {
        let (body, ctype) = if self.json {
            (
                serde_json::to_vec(msg).unwrap_or_default(),
                "application/json",
            )
        } else {
            (msg.encode_to_vec(), "application/protobuf")
        };
        let mut resp = (StatusCode::OK, body).into_response();
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
        resp
    }
}

fn twirp_error(status: u16, code: &str, msg: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        axum::Json(serde_json::json!({"code": code, "msg": msg})),
    )
        .into_response()
}

/// Server API tokens: any valid token from a configured key; room-scoped calls need roomAdmin
/// for that room or roomList/roomCreate, as the Go server's EnsureAdminPermission (simplified).
fn authorize(
    shared: &Shared,
    headers: &HeaderMap,
) -> Result<livekit_api::access_token::Claims, Response> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let token = super::auth::token_from(authorization, None)
        .map_err(|e| twirp_error(401, "unauthenticated", &e.to_string()))?;
    super::auth::verify(&token, &shared.cfg.keys)
        .map_err(|e| twirp_error(401, "unauthenticated", &e.to_string()))
}

fn require(ok: bool, what: &str) -> Result<(), Response> {
    if ok {
        Ok(())
    } else {
        Err(twirp_error(
            403,
            "permission_denied",
            &format!("permissions denied: the token needs {what}"),
        ))
    }
}

pub async fn room_service(
    State(shared): State<Arc<Shared>>,
    axum::extract::Path(method): axum::extract::Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    match handle(&shared, &method, &headers, &body).await {
        Ok(resp) | Err(resp) => resp,
    }
}

async fn handle(
    shared: &Arc<Shared>,
    method: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, Response> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/json"));
    let codec = Codec { json };
    let claims = authorize(shared, headers)?;
    let admin_of = |room: &str| {
        claims.video.room_admin && (claims.video.room.is_empty() || claims.video.room == room)
    };
    match method {
        "ListRooms" => {
            require(claims.video.room_list, "roomList")?;
            let req: proto::ListRoomsRequest = codec.decode(body)?;
            let state = shared.state.lock().unwrap();
            let rooms = state
                .rooms
                .values()
                .filter(|r| req.names.is_empty() || req.names.contains(&r.name))
                .map(|r| r.info())
                .collect();
            Ok(codec.reply(&proto::ListRoomsResponse { rooms }))
        }
        "CreateRoom" => {
            require(claims.video.room_create, "roomCreate")?;
            let req: proto::CreateRoomRequest = codec.decode(body)?;
            let mut state = shared.state.lock().unwrap();
            let room = state
                .rooms
                .entry(req.name.clone())
                .or_insert_with(|| super::room::Room {
                    name: req.name.clone(),
                    sid: super::room::new_sid("RM_"),
                    created_ms: super::server::unix_ms(),
                    participants: Vec::new(),
                });
            Ok(codec.reply(&room.info()))
        }
        "ListParticipants" => {
            let req: proto::ListParticipantsRequest = codec.decode(body)?;
            require(admin_of(&req.room), "roomAdmin for this room")?;
            let state = shared.state.lock().unwrap();
            let participants = state
                .rooms
                .get(&req.room)
                .map(|r| r.participants.iter().map(|p| p.info()).collect())
                .unwrap_or_default();
            Ok(codec.reply(&proto::ListParticipantsResponse { participants }))
        }
        "GetParticipant" => {
            let req: proto::RoomParticipantIdentity = codec.decode(body)?;
            require(admin_of(&req.room), "roomAdmin for this room")?;
            let state = shared.state.lock().unwrap();
            let info = state
                .rooms
                .get(&req.room)
                .and_then(|r| r.by_identity(&req.identity))
                .map(|p| p.info());
            match info {
                Some(info) => Ok(codec.reply(&info)),
                None => Err(twirp_error(404, "not_found", "participant does not exist")),
            }
        }
        "RemoveParticipant" => {
            let req: proto::RoomParticipantIdentity = codec.decode(body)?;
            require(admin_of(&req.room), "roomAdmin for this room")?;
            let sid = {
                let state = shared.state.lock().unwrap();
                state
                    .rooms
                    .get(&req.room)
                    .and_then(|r| r.by_identity(&req.identity))
                    .map(|p| p.sid.clone())
            };
            let Some(sid) = sid else {
                return Err(twirp_error(404, "not_found", "participant does not exist"));
            };
            shared
                .remove_participant(
                    &req.room,
                    &sid,
                    proto::DisconnectReason::ParticipantRemoved,
                    Some(proto::leave_request::Action::Disconnect),
                )
                .await;
            Ok(codec.reply(&proto::RemoveParticipantResponse {}))
        }
        "MutePublishedTrack" => {
            let req: proto::MuteRoomTrackRequest = codec.decode(body)?;
            require(admin_of(&req.room), "roomAdmin for this room")?;
            match shared.mute_track(&req.room, &req.identity, &req.track_sid, req.muted) {
                Some(track) => {
                    Ok(codec.reply(&proto::MuteRoomTrackResponse { track: Some(track) }))
                }
                None => Err(twirp_error(404, "not_found", "track is not found")),
            }
        }
        "SendData" => {
            let req: proto::SendDataRequest = codec.decode(body)?;
            require(admin_of(&req.room), "roomAdmin for this room")?;
            let reliable = req.kind != proto::data_packet::Kind::Lossy as i32;
            let targets = {
                let state = shared.state.lock().unwrap();
                let Some(r) = state.rooms.get(&req.room) else {
                    return Err(twirp_error(
                        404,
                        "not_found",
                        "requested room does not exist",
                    ));
                };
                #[allow(deprecated)]
                let sids = &req.destination_sids;
                r.participants
                    .iter()
                    .filter(|p| {
                        (req.destination_identities.is_empty() && sids.is_empty())
                            || req.destination_identities.contains(&p.identity)
                            || sids.contains(&p.sid)
                    })
                    .map(|p| (p.identity.clone(), p.receive_peer()))
                    .collect::<Vec<_>>()
            };
            #[allow(deprecated)]
            let packet = proto::DataPacket {
                kind: req.kind,
                destination_identities: req.destination_identities.clone(),
                value: Some(proto::data_packet::Value::User(proto::UserPacket {
                    payload: req.data.clone(),
                    topic: req.topic.clone(),
                    nonce: req.nonce.clone(),
                    destination_identities: req.destination_identities.clone(),
                    ..Default::default()
                })),
                ..Default::default()
            };
            shared.deliver_data(&packet, reliable, targets).await;
            Ok(codec.reply(&proto::SendDataResponse {}))
        }
        "DeleteRoom" => {
            let req: proto::DeleteRoomRequest = codec.decode(body)?;
            require(claims.video.room_create, "roomCreate")?;
            let sids: Vec<String> = {
                let state = shared.state.lock().unwrap();
                state
                    .rooms
                    .get(&req.room)
                    .map(|r| r.participants.iter().map(|p| p.sid.clone()).collect())
                    .unwrap_or_default()
            };
            for sid in sids {
                shared
                    .remove_participant(
                        &req.room,
                        &sid,
                        proto::DisconnectReason::RoomDeleted,
                        Some(proto::leave_request::Action::Disconnect),
                    )
                    .await;
            }
            shared.state.lock().unwrap().rooms.remove(&req.room);
            Ok(codec.reply(&proto::DeleteRoomResponse {}))
        }
        other => Err(twirp_error(
            404,
            "bad_route",
            &format!("RoomService method {other:?} is not implemented by devroom"),
        )),
    }
}
