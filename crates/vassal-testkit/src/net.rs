//! Free loopback addresses: each [`Loopback`] is a random 127.A.B.C address, and its ports are
//! bind-tested for both TCP and UDP (memberlist listens on both, on the same port).

use std::collections::hash_map::RandomState;
use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// Ports are drawn below Linux's ephemeral range (32768+), so an outgoing connection cannot take
/// one between our bind test and the agent's bind.
const PORT_RANGE: std::ops::Range<u16> = 20000..32000;

/// A loopback address of its own for one test, e.g. `127.83.17.201`.
///
/// The first octet after 127 is drawn from 32..=223, so the address never falls in
/// `127.0.0.0/16` or `127.1.0.0/16`, where people and benches run agents by hand (spec §8).
/// Nextest runs every test in its own process, so addresses are random rather than counted.
#[derive(Debug)]
pub struct Loopback {
    ip: Ipv4Addr,
    handed_out: Mutex<HashSet<u16>>,
}

impl Loopback {
    /// A fresh random loopback address.
    pub fn fresh() -> Self {
        let r = random_u64();
        let a = 32 + (r % 192) as u8;
        let b = (r >> 8) as u8;
        let c = 1 + ((r >> 16) % 254) as u8;
        Self::at(Ipv4Addr::new(127, a, b, c))
    }

    /// A specific loopback address (must be in 127.0.0.0/8).
    pub fn at(ip: Ipv4Addr) -> Self {
        assert!(
            ip.is_loopback(),
            "{ip} is not a loopback address; tests stay on 127.0.0.0/8"
        );
        Loopback {
            ip,
            handed_out: Mutex::new(HashSet::new()),
        }
    }

    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// A port on this address that is free for both TCP and UDP right now and that this
    /// `Loopback` has not handed out before.
    pub fn free_port(&self) -> u16 {
        let mut handed_out = self.handed_out.lock().unwrap();
        let span = u64::from(PORT_RANGE.end - PORT_RANGE.start);
        let mut tried = Vec::new();
        for _ in 0..200 {
            let port = PORT_RANGE.start + (random_u64() % span) as u16;
            if handed_out.contains(&port) {
                continue;
            }
            let addr = SocketAddrV4::new(self.ip, port);
            match (TcpListener::bind(addr), UdpSocket::bind(addr)) {
                (Ok(_), Ok(_)) => {
                    handed_out.insert(port);
                    return port;
                }
                (t, u) => tried.push(format!("{port}: tcp {:?} udp {:?}", t.err(), u.err())),
            }
        }
        panic!(
            "no free TCP+UDP port on {} after 200 tries; last failures: {:?}",
            self.ip,
            &tried[tried.len().saturating_sub(5)..]
        );
    }

    /// `ip:free_port()`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, self.free_port()))
    }
}

fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // RandomState is seeded from the OS per process; mix in pid, time and a counter anyway.
    let mut h = RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    h.write_u128(nanos);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_addresses_avoid_the_hand_run_ranges() {
        for _ in 0..100 {
            let o = Loopback::fresh().ip().octets();
            assert_eq!(o[0], 127);
            assert!((32..=223).contains(&o[1]), "{o:?}");
            assert_ne!(o[3], 0, "{o:?}");
            assert_ne!(o[3], 255, "{o:?}");
        }
    }

    #[test]
    fn ports_are_distinct_and_bindable_for_tcp_and_udp() {
        let lo = Loopback::fresh();
        let ports: HashSet<u16> = (0..20).map(|_| lo.free_port()).collect();
        assert_eq!(ports.len(), 20);
        for p in ports {
            let a = SocketAddr::from((lo.ip(), p));
            TcpListener::bind(a).unwrap_or_else(|e| panic!("tcp {a}: {e}"));
            UdpSocket::bind(a).unwrap_or_else(|e| panic!("udp {a}: {e}"));
        }
    }
}
