//! Network changes as supervisor inputs: rtnetlink's multicast connection subscribed to link,
//! IPv4/IPv6 address and route changes. Loopback is ignored, and so are routes outside the main
//! table. After each message the default route's presence is read again from the kernel
//! (/proc/net/route, /proc/net/ipv6_route), so the supervisor always hears the current state.
use crate::supervisor::{Input, NetworkChangeKind};
use futures_util::StreamExt;
use netlink_packet_core::NetlinkPayload;
use netlink_packet_route::link::{LinkFlags, LinkMessage};
use netlink_packet_route::route::RouteHeader;
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::MulticastGroup;
use std::time::Duration;
use tokio::sync::mpsc;

/// The groups that tell of a path appearing or going away.
const GROUPS: [MulticastGroup; 5] = [
    MulticastGroup::Link,
    MulticastGroup::Ipv4Ifaddr,
    MulticastGroup::Ipv6Ifaddr,
    MulticastGroup::Ipv4Route,
    MulticastGroup::Ipv6Route,
];

/// When the netlink connection ends (the kernel dropped messages and the socket errored, say),
/// wait this long before opening a new one, so a broken socket cannot spin.
const REOPEN_AFTER: Duration = Duration::from_secs(1);

/// Start the watcher as a task on the current runtime. None when netlink is unavailable (then
/// only timeouts and signalling errors tell the supervisor about the network).
pub(crate) fn spawn() -> Option<mpsc::Receiver<Input>> {
    let first = match rtnetlink::new_multicast_connection(&GROUPS) {
        Ok((connection, _handle, messages)) => (connection, messages),
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
    tokio::spawn(async move {
        let (mut connection, mut messages) = first;
        loop {
            let driver = tokio::spawn(connection);
            while let Some((message, _)) = messages.next().await {
                let NetlinkPayload::InnerMessage(message) = message.payload else {
                    continue;
                };
                if let Some(kind) = classify(&message, is_loopback) {
                    if !report(&tx, kind) {
                        driver.abort();
                        return;
                    }
                }
            }
            driver.abort();
            // Messages may have been lost with the connection: something may have changed.
            if !report(&tx, NetworkChangeKind::DefaultRouteChanged) {
                return;
            }
            tokio::time::sleep(REOPEN_AFTER).await;
            match rtnetlink::new_multicast_connection(&GROUPS) {
                Ok((c, _handle, m)) => (connection, messages) = (c, m),
                Err(e) => {
                    tracing::warn!("netlink watcher stopped: {e}");
                    return;
                }
            }
        }
    });
    Some(rx)
}

/// False once the room is gone.
fn report(tx: &mpsc::Sender<Input>, kind: NetworkChangeKind) -> bool {
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

/// What a netlink message means for the path to the server, if anything. `is_loopback` tells
/// whether an interface index is loopback (address messages carry only the index).
fn classify(
    message: &RouteNetlinkMessage,
    is_loopback: impl Fn(u32) -> bool,
) -> Option<NetworkChangeKind> {
    let link = |link: &LinkMessage, added: bool| {
        let flags = link.header.flags;
        let up = flags.contains(LinkFlags::Up) && flags.contains(LinkFlags::LowerUp);
        (!flags.contains(LinkFlags::Loopback)).then_some(if added && up {
            NetworkChangeKind::LinkUp
        } else {
            NetworkChangeKind::LinkDown
        })
    };
    match message {
        RouteNetlinkMessage::NewLink(l) => link(l, true),
        RouteNetlinkMessage::DelLink(l) => link(l, false),
        RouteNetlinkMessage::NewAddress(a) => {
            (!is_loopback(a.header.index)).then_some(NetworkChangeKind::AddressAdded)
        }
        RouteNetlinkMessage::DelAddress(a) => {
            (!is_loopback(a.header.index)).then_some(NetworkChangeKind::AddressRemoved)
        }
        RouteNetlinkMessage::NewRoute(r) | RouteNetlinkMessage::DelRoute(r) => (r.header.table
            == RouteHeader::RT_TABLE_MAIN
            && r.header.destination_prefix_length == 0)
            .then_some(NetworkChangeKind::DefaultRouteChanged),
        _ => None,
    }
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
    use netlink_packet_route::address::AddressMessage;
    use netlink_packet_route::route::RouteMessage;

    fn route(table: u8, prefix: u8) -> RouteMessage {
        let mut r = RouteMessage::default();
        r.header.table = table;
        r.header.destination_prefix_length = prefix;
        r
    }

    fn link(flags: LinkFlags) -> LinkMessage {
        let mut l = LinkMessage::default();
        l.header.flags = flags;
        l
    }

    fn address(index: u32) -> AddressMessage {
        let mut a = AddressMessage::default();
        a.header.index = index;
        a
    }

    #[test]
    fn default_route_changes_in_the_main_table_only() {
        let main = RouteHeader::RT_TABLE_MAIN;
        let kinds: Vec<_> = [
            RouteNetlinkMessage::NewRoute(route(main, 0)),
            RouteNetlinkMessage::DelRoute(route(255, 0)),
            RouteNetlinkMessage::NewRoute(route(main, 24)),
            RouteNetlinkMessage::DelRoute(route(main, 0)),
        ]
        .iter()
        .filter_map(|m| classify(m, |_| false))
        .collect();
        assert_eq!(
            kinds,
            vec![
                NetworkChangeKind::DefaultRouteChanged,
                NetworkChangeKind::DefaultRouteChanged
            ]
        );
    }

    #[test]
    fn links_count_as_up_only_when_up_with_carrier_and_loopback_is_ignored() {
        let up = LinkFlags::Up | LinkFlags::LowerUp;
        let kinds: Vec<_> = [
            RouteNetlinkMessage::NewLink(link(up)),
            RouteNetlinkMessage::NewLink(link(LinkFlags::Up)),
            RouteNetlinkMessage::DelLink(link(up)),
            RouteNetlinkMessage::NewLink(link(up | LinkFlags::Loopback)),
        ]
        .iter()
        .filter_map(|m| classify(m, |_| false))
        .collect();
        assert_eq!(
            kinds,
            vec![
                NetworkChangeKind::LinkUp,
                NetworkChangeKind::LinkDown,
                NetworkChangeKind::LinkDown
            ]
        );
    }

    #[test]
    fn addresses_on_loopback_are_ignored() {
        let loopback = |index: u32| index == 1;
        let kinds: Vec<_> = [
            RouteNetlinkMessage::NewAddress(address(2)),
            RouteNetlinkMessage::DelAddress(address(2)),
            RouteNetlinkMessage::NewAddress(address(1)),
        ]
        .iter()
        .filter_map(|m| classify(m, loopback))
        .collect();
        assert_eq!(
            kinds,
            vec![
                NetworkChangeKind::AddressAdded,
                NetworkChangeKind::AddressRemoved
            ]
        );
    }
}
