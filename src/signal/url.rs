//! Connect and validate URLs, the v1 `join_request` parameter, and our ClientInfo.
