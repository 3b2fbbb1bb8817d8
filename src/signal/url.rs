//! Connect and validate URLs, the v1 `join_request` parameter, and our ClientInfo.
//!
//! `encode_join_request` / `decode_join_request` are shared by the client and devroom, so both
//! sides of our own tests agree with the official SDKs on the wire format:
//! `base64url-with-padding(WrappedJoinRequest{compression, join_request})`, the inner
//! `JoinRequest` gzip-compressed when that makes it smaller (what the Rust SDK does).
use base64::Engine as _;
use flate2::{read::GzDecoder, write::GzEncoder, Compression};
use livekit_protocol as proto;
use prost::Message as _;
use std::io::{Read as _, Write as _};

/// The server refuses a decompressed JoinRequest above this (Go's http.DefaultMaxHeaderBytes).
pub const MAX_JOIN_REQUEST_BYTES: usize = 1 << 20;

/// Why a `join_request` parameter could not be read.
#[derive(Debug, thiserror::Error)]
pub enum JoinRequestError {
    #[error("cannot base64 decode wrapped join request (expected URL-safe base64 with '=' padding): {0}")]
    Base64(#[from] base64::DecodeError),
    #[error("cannot decode WrappedJoinRequest protobuf: {0}")]
    Wrapper(prost::DecodeError),
    #[error("cannot gunzip join request: {0}")]
    Gzip(std::io::Error),
    #[error("join request is larger than {MAX_JOIN_REQUEST_BYTES} bytes")]
    TooLarge,
    #[error("cannot decode JoinRequest protobuf: {0}")]
    Inner(prost::DecodeError),
    #[error("unknown join request compression {0}")]
    UnknownCompression(i32),
}

/// Encode a JoinRequest as the v1 `join_request` query value (not yet percent-encoded).
pub fn encode_join_request(req: &proto::JoinRequest) -> String {
    let plain = req.encode_to_vec();
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    let gzipped = gz.write_all(&plain).and_then(|_| gz.finish()).ok();
    let wrapped = match gzipped {
        Some(g) if g.len() < plain.len() => proto::WrappedJoinRequest {
            compression: proto::wrapped_join_request::Compression::Gzip as i32,
            join_request: g,
        },
        _ => proto::WrappedJoinRequest {
            compression: proto::wrapped_join_request::Compression::None as i32,
            join_request: plain,
        },
    };
    base64::engine::general_purpose::URL_SAFE.encode(wrapped.encode_to_vec())
}

/// Decode a v1 `join_request` query value (already percent-decoded).
pub fn decode_join_request(value: &str) -> Result<proto::JoinRequest, JoinRequestError> {
    let bytes = base64::engine::general_purpose::URL_SAFE.decode(value.trim())?;
    let wrapped = proto::WrappedJoinRequest::decode(bytes.as_slice()).map_err(JoinRequestError::Wrapper)?;
    let inner = match proto::wrapped_join_request::Compression::try_from(wrapped.compression) {
        Ok(proto::wrapped_join_request::Compression::None) => wrapped.join_request,
        Ok(proto::wrapped_join_request::Compression::Gzip) => {
            let mut out = Vec::new();
            GzDecoder::new(wrapped.join_request.as_slice())
                .take(MAX_JOIN_REQUEST_BYTES as u64 + 1)
                .read_to_end(&mut out)
                .map_err(JoinRequestError::Gzip)?;
            out
        }
        Err(_) => return Err(JoinRequestError::UnknownCompression(wrapped.compression)),
    };
    if inner.len() > MAX_JOIN_REQUEST_BYTES {
        return Err(JoinRequestError::TooLarge);
    }
    proto::JoinRequest::decode(inner.as_slice()).map_err(JoinRequestError::Inner)
}
