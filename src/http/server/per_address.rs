//! Connections counted per client address, so that one host cannot take
//! every connection slot.
//!
//! A slot is taken at accept, before the TLS handshake and before a global
//! slot, and given back when its guard drops. IPv6 clients are grouped by
//! their /64, since one host usually holds a whole /64 and could otherwise
//! rotate addresses. The map only holds addresses with open connections:
//! an entry goes when its count drops to zero.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, PoisonError};

/// Open connections per address group, up to `cap` each.
pub(super) struct PerAddress {
    cap: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's share of its address's cap; released on drop.
pub(super) struct AddressSlot {
    table: Arc<PerAddress>,
    group: IpAddr,
}

impl PerAddress {
    pub(super) fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self {
            cap,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for a connection from `peer`, or `None` when its address
    /// group already has `cap` connections open.
    pub(super) fn try_take(self: &Arc<Self>, peer: IpAddr) -> Option<AddressSlot> {
        let group = group_of(peer);
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.get(&group).copied().unwrap_or(0);
        if count >= self.cap {
            return None;
        }
        open.insert(group, count + 1);
        Some(AddressSlot {
            table: Arc::clone(self),
            group,
        })
    }

    /// Address groups with at least one connection open.
    #[cfg(test)]
    fn groups(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self
            .table
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.group) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.group);
            }
        }
    }
}

/// The key a peer is counted under: an IPv4 address as it is (also when a
/// dual-stack listener shows it as `::ffff:a.b.c.d`), an IPv6 address by
/// its /64.
fn group_of(peer: IpAddr) -> IpAddr {
    match peer.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !u128::from(u64::MAX);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_address_at_its_cap_is_refused_until_one_closes() {
        let table = PerAddress::new(2);
        let first = table.try_take(ip("192.0.2.1")).unwrap();
        let _second = table.try_take(ip("192.0.2.1")).unwrap();
        assert!(table.try_take(ip("192.0.2.1")).is_none());
        // Another address is not affected.
        let _other = table.try_take(ip("192.0.2.2")).unwrap();
        drop(first);
        assert!(table.try_take(ip("192.0.2.1")).is_some());
    }

    #[test]
    fn ipv6_addresses_count_by_their_64() {
        let table = PerAddress::new(2);
        let _a = table.try_take(ip("2001:db8:1:2::1")).unwrap();
        let _b = table
            .try_take(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"))
            .unwrap();
        assert!(table.try_take(ip("2001:db8:1:2:abcd::7")).is_none());
        assert!(table.try_take(ip("2001:db8:1:3::1")).is_some());
        assert_eq!(table.groups(), 1, "the slot just taken was dropped");
    }

    #[test]
    fn ipv4_mapped_addresses_count_as_ipv4() {
        let table = PerAddress::new(1);
        let _v4 = table.try_take(ip("192.0.2.1")).unwrap();
        assert!(table.try_take(ip("::ffff:192.0.2.1")).is_none());
        // Two IPv4 clients seen through a dual-stack listener are two groups,
        // not one shared ::/64.
        assert!(table.try_take(ip("::ffff:192.0.2.2")).is_some());
    }

    #[test]
    fn the_map_empties_when_every_connection_closes() {
        let table = PerAddress::new(4);
        let slots: Vec<_> = ["192.0.2.1", "192.0.2.1", "2001:db8::1", "198.51.100.7"]
            .into_iter()
            .map(|a| table.try_take(ip(a)).unwrap())
            .collect();
        assert_eq!(table.groups(), 3);
        drop(slots);
        assert_eq!(table.groups(), 0);
    }
}
