//! Network changes as supervisor inputs: a netlink (NETLINK_ROUTE) socket subscribed to link,
//! IPv4/IPv6 address and route changes. Loopback is ignored, and so are routes outside the main
//! table. After each message the default route's presence is read again from the kernel
//! (/proc/net/route, /proc/net/ipv6_route), so the supervisor always hears the current state.
//!
//! Why a raw socket and not the rtnetlink crate: it was tried (rtnetlink 0.24's multicast
//! connection, messages classified from netlink-packet-route types) and worked the same in the
//! uplink-switch suites, but `cargo bloat --profile small` put netlink-packet-route at 337 KiB
//! and rtnetlink at 85 KiB of .text, about 8 % of the board binary, to read four message types
//! whose few fixed header fields are parsed below (and tested) in under a hundred lines.
use crate::supervisor::{Input, NetworkChangeKind};
use tokio::sync::mpsc;

/// Start the watcher on its own thread. None when netlink is unavailable (then only timeouts
/// and signalling errors tell the supervisor about the network).
pub(crate) fn spawn() -> Option<mpsc::Receiver<Input>> {
    let socket = match NetlinkSocket::open() {
        Ok(socket) => socket,
        Err(e) => {
            tracing::warn!("cannot watch the network (netlink): {e}");
            return None;
        }
    };
    let (tx, rx) = mpsc::channel(super::engine::NETWORK_NOTES);
    if !has_default_route() {
        // A board that boots without network: say so from the start (the supervisor assumes a
        // route until told otherwise), so the status reads "waiting for network" and the route's
        // arrival retries at once.
        let _ = tx.try_send(Input::NetworkChanged {
            kind: NetworkChangeKind::DefaultRouteChanged,
            has_default_route: false,
        });
    }
    std::thread::Builder::new()
        .name("roomcast-netlink".into())
        .spawn(move || socket.run(tx))
        .ok()?;
    Some(rx)
}

const RTMGRP_LINK: u32 = 0x1;
const RTMGRP_IPV4_IFADDR: u32 = 0x10;
const RTMGRP_IPV4_ROUTE: u32 = 0x40;
const RTMGRP_IPV6_IFADDR: u32 = 0x100;
const RTMGRP_IPV6_ROUTE: u32 = 0x400;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RT_TABLE_MAIN: u8 = 254;
const IFF_UP: u32 = 0x1;
const IFF_LOWER_UP: u32 = 0x10000;
const NLMSG_HDRLEN: usize = 16;

struct NetlinkSocket {
    fd: std::os::fd::OwnedFd,
}

impl NetlinkSocket {
    fn open() -> std::io::Result<Self> {
        use std::os::fd::FromRawFd;
        // SAFETY: plain socket(2); the result is checked before it is owned.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh, valid descriptor that nothing else owns.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_nl is plain old data; zeroed is a valid value.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        addr.nl_groups = RTMGRP_LINK
            | RTMGRP_IPV4_IFADDR
            | RTMGRP_IPV4_ROUTE
            | RTMGRP_IPV6_IFADDR
            | RTMGRP_IPV6_ROUTE;
        use std::os::fd::AsRawFd;
        // SAFETY: addr is a valid sockaddr_nl of the size passed.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self { fd })
    }

    fn run(self, tx: mpsc::Sender<Input>) {
        use std::os::fd::AsRawFd;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: buf is valid for writes of its length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let err = std::io::Error::last_os_error();
                if err.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                if err.raw_os_error() == Some(libc::ENOBUFS) {
                    // The kernel dropped messages: something changed, say so.
                    if !self.report(&tx, NetworkChangeKind::DefaultRouteChanged) {
                        return;
                    }
                    continue;
                }
                tracing::warn!("netlink watcher stopped: {err}");
                return;
            }
            for kind in parse(&buf[..n as usize]) {
                if !self.report(&tx, kind) {
                    return;
                }
            }
        }
    }

    /// False once the room is gone.
    fn report(&self, tx: &mpsc::Sender<Input>, kind: NetworkChangeKind) -> bool {
        let input = Input::NetworkChanged {
            kind,
            has_default_route: has_default_route(),
        };
        tracing::info!("network: {input:?}");
        match tx.try_send(input) {
            Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => true,
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn is_loopback(index: u32) -> bool {
    let mut name = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: name has IF_NAMESIZE bytes, as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(index, name.as_mut_ptr()) };
    if p.is_null() {
        return false;
    }
    // SAFETY: if_indextoname wrote a NUL-terminated name into `name`.
    let name = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) };
    name.to_bytes() == b"lo"
}

/// The changes one netlink datagram reports.
fn parse(mut b: &[u8]) -> Vec<NetworkChangeKind> {
    let mut out = Vec::new();
    while b.len() >= NLMSG_HDRLEN {
        let Some(len) = u32_at(b, 0).map(|l| l as usize) else {
            break;
        };
        if len < NLMSG_HDRLEN || len > b.len() {
            break;
        }
        let msg_type = u16_at(b, 4).unwrap_or(0);
        let body = &b[NLMSG_HDRLEN..len];
        let kind = match msg_type {
            // ifinfomsg: family u8, pad u8, type u16, index i32, flags u32, change u32
            RTM_NEWLINK | RTM_DELLINK => {
                let index = u32_at(body, 4).unwrap_or(0);
                let flags = u32_at(body, 8).unwrap_or(0);
                let up = flags & IFF_UP != 0 && flags & IFF_LOWER_UP != 0;
                (!is_loopback(index)).then_some(if msg_type == RTM_NEWLINK && up {
                    NetworkChangeKind::LinkUp
                } else {
                    NetworkChangeKind::LinkDown
                })
            }
            // ifaddrmsg: family u8, prefixlen u8, flags u8, scope u8, index u32
            RTM_NEWADDR | RTM_DELADDR => {
                let index = u32_at(body, 4).unwrap_or(0);
                (!is_loopback(index)).then_some(if msg_type == RTM_NEWADDR {
                    NetworkChangeKind::AddressAdded
                } else {
                    NetworkChangeKind::AddressRemoved
                })
            }
            // rtmsg: family, dst_len, src_len, tos, table, …
            RTM_NEWROUTE | RTM_DELROUTE => {
                let dst_len = body.get(1).copied().unwrap_or(255);
                let table = body.get(4).copied().unwrap_or(0);
                (table == RT_TABLE_MAIN && dst_len == 0)
                    .then_some(NetworkChangeKind::DefaultRouteChanged)
            }
            _ => None,
        };
        out.extend(kind);
        let aligned = (len + 3) & !3;
        b = b.get(aligned..).unwrap_or(&[]);
    }
    out
}

/// A default route in the main table (IPv4 or IPv6), as the kernel has it now.
fn has_default_route() -> bool {
    let v4 = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    let v4 = v4.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() > 7 && fields[0] != "lo" && fields[1] == "00000000" && fields[7] == "00000000"
    });
    let v6 = std::fs::read_to_string("/proc/net/ipv6_route").unwrap_or_default();
    let v6 = v6.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() > 9
            && fields[0] == "00000000000000000000000000000000"
            && fields[1] == "00"
            && fields[9] != "lo"
    });
    v4 || v6
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(msg_type: u16, body: &[u8]) -> Vec<u8> {
        let len = (NLMSG_HDRLEN + body.len()) as u32;
        let mut m = Vec::new();
        m.extend_from_slice(&len.to_ne_bytes());
        m.extend_from_slice(&msg_type.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(body);
        while m.len() % 4 != 0 {
            m.push(0);
        }
        m
    }

    #[test]
    fn default_route_changes_in_the_main_table_only() {
        let mut main_default = [0u8; 12];
        main_default[4] = RT_TABLE_MAIN;
        let mut local_table = main_default;
        local_table[4] = 255;
        let mut not_default = main_default;
        not_default[1] = 24;
        let mut datagram = message(RTM_NEWROUTE, &main_default);
        datagram.extend(message(RTM_DELROUTE, &local_table));
        datagram.extend(message(RTM_NEWROUTE, &not_default));
        datagram.extend(message(RTM_DELROUTE, &main_default));
        assert_eq!(
            parse(&datagram),
            vec![
                NetworkChangeKind::DefaultRouteChanged,
                NetworkChangeKind::DefaultRouteChanged
            ]
        );
    }

    #[test]
    fn address_and_link_messages_on_a_missing_interface() {
        // Index 0 names no interface, so it is not loopback.
        let addr = [2u8, 24, 0, 0, 0, 0, 0, 0];
        let mut link_up = [0u8; 16];
        link_up[8..12].copy_from_slice(&(IFF_UP | IFF_LOWER_UP).to_ne_bytes());
        let mut datagram = message(RTM_DELADDR, &addr);
        datagram.extend(message(RTM_NEWLINK, &link_up));
        datagram.extend(message(RTM_NEWLINK, &[0u8; 16]));
        assert_eq!(
            parse(&datagram),
            vec![
                NetworkChangeKind::AddressRemoved,
                NetworkChangeKind::LinkUp,
                NetworkChangeKind::LinkDown
            ]
        );
    }
}
