//! webrtc-rs wrappers: publisher/subscriber PeerConnections, the trickle queue, data channels.
