//! Open WebSocket connections per client address, bounded.
//!
//! A flood of connections from one address is refused with 429 once that address holds
//! `--max-connections-per-addr` (default 10000; 0: no limit) open connections, so one host
//! cannot take every file descriptor of the node. Behind a proxy every client shares the proxy's
//! address: raise or disable the limit there and let the proxy enforce its own.

use std::net::IpAddr;
use std::sync::Arc;

use dashmap::DashMap;

/// Counts per address.
#[derive(Debug)]
pub struct ConnLimit {
    max: u32,
    open: Arc<DashMap<IpAddr, u32>>,
}

/// One counted connection; dropping it releases the slot.
#[derive(Debug)]
pub struct ConnSlot {
    addr: IpAddr,
    open: Arc<DashMap<IpAddr, u32>>,
}

impl ConnLimit {
    /// `max`: connections per address; 0 for no limit.
    pub fn new(max: u32) -> Self {
        ConnLimit { max, open: Arc::new(DashMap::new()) }
    }

    /// Takes a slot for `addr`, or `None` when the address is at its limit.
    pub fn acquire(&self, addr: IpAddr) -> Option<ConnSlot> {
        let mut n = self.open.entry(addr).or_insert(0);
        if self.max > 0 && *n >= self.max {
            return None;
        }
        *n += 1;
        Some(ConnSlot { addr, open: self.open.clone() })
    }

    /// Addresses with at least one open connection.
    pub fn addresses(&self) -> usize {
        self.open.len()
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        if let Some(mut n) = self.open.get_mut(&self.addr) {
            *n = n.saturating_sub(1);
        }
        self.open.remove_if(&self.addr, |_, n| *n == 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_per_address_and_releases_on_drop() {
        let limit = ConnLimit::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let s1 = limit.acquire(a).unwrap();
        let _s2 = limit.acquire(a).unwrap();
        assert!(limit.acquire(a).is_none(), "third from the same address");
        assert!(limit.acquire(b).is_some(), "other addresses are not affected");
        drop(s1);
        assert!(limit.acquire(a).is_some(), "a closed connection frees its slot");
        assert!(ConnLimit::new(0).acquire(a).is_some(), "0 means no limit");
        let limit = ConnLimit::new(1);
        drop(limit.acquire(a));
        assert_eq!(limit.addresses(), 0, "no entry is kept for an address without connections");
    }
}
