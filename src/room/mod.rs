//! The public Room API (Room, LocalParticipant, RemoteParticipants, RoomEvent) and the task that
//! drives one connection.
pub mod cli;
