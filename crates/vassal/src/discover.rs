//! `-discover NAME`: find the cluster's other agents by mDNS (spec §5.8).
//!
//! Like Serf, each agent advertises the DNS-SD service `_serf_NAME._tcp` with its node name as
//! the instance, its gossip port and its bind address, and browses for the same service. Newly
//! seen `ip:port` pairs are joined together once 100 ms pass with nothing new, honouring
//! `-replay`; a pair is joined once, whether or not the join worked, as in Serf.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use mdns_sd::{IfKind, ServiceDaemon, ServiceEvent, ServiceInfo};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};
use vassal_node::Handle;

/// How long discovery waits for more peers before joining the ones it has (Serf's value).
const QUIET: Duration = Duration::from_millis(100);

/// The running advertiser and browser. Dropping it stops both.
pub struct Discovery {
    daemon: ServiceDaemon,
    task: JoinHandle<()>,
}

impl Drop for Discovery {
    fn drop(&mut self) {
        self.task.abort();
        let _ = self.daemon.shutdown();
    }
}

/// The DNS-SD service type of cluster `name`, as Serf spells it.
pub fn service_type(name: &str) -> String {
    format!("_serf_{name}._tcp.local.")
}

pub struct Settings {
    pub cluster: String,
    pub node: String,
    /// The gossip address to advertise; must be a concrete address, not `0.0.0.0`.
    pub addr: SocketAddr,
    /// Restrict mDNS to this interface (`-iface` / `-mdns-iface`).
    pub iface: Option<String>,
    pub disable_ipv4: bool,
    pub disable_ipv6: bool,
    pub replay: bool,
}

/// Starts advertising and browsing. Errors name the cause (a bad cluster name, no socket).
pub fn start(s: Settings, handle: Handle) -> Result<Discovery, String> {
    let ty = service_type(&s.cluster);
    let daemon = ServiceDaemon::new().map_err(|e| format!("mDNS: cannot start: {e}"))?;
    // Serf's service names are not limited to DNS-SD's 15 bytes; allow the most the crate does.
    let _ = daemon.set_service_name_len_max(30);
    if let Some(iface) = &s.iface {
        let _ = daemon.disable_interface(IfKind::All);
        daemon
            .enable_interface(IfKind::Name(iface.clone()))
            .map_err(|e| format!("mDNS: interface {iface:?}: {e}"))?;
    } else if s.addr.ip().is_loopback() {
        let _ = daemon.enable_interface(IfKind::LoopbackV4);
    }
    if s.disable_ipv4 {
        let _ = daemon.disable_interface(IfKind::IPv4);
    }
    if s.disable_ipv6 {
        let _ = daemon.disable_interface(IfKind::IPv6);
    }
    let host = format!("{}.local.", s.node.replace('.', "-"));
    let txt = [("", format!("Serf '{}' cluster", s.cluster))];
    let service = ServiceInfo::new(&ty, &s.node, &host, s.addr.ip(), s.addr.port(), &txt[..])
        .map_err(|e| {
            format!(
                "mDNS: cannot advertise {ty} for node {:?}: {e} (a cluster name of letters, \
                 digits and dashes works)",
                s.node
            )
        })?;
    daemon
        .register(service)
        .map_err(|e| format!("mDNS: cannot advertise {ty}: {e}"))?;
    let events = daemon
        .browse(&ty)
        .map_err(|e| format!("mDNS: cannot browse {ty}: {e}"))?;
    info!("agent.mdns: advertising and browsing {ty}");
    let own = s.addr;
    let replay = s.replay;
    let task = tokio::spawn(async move {
        let mut seen = BTreeSet::new();
        let mut pending: Vec<SocketAddr> = Vec::new();
        loop {
            let next = if pending.is_empty() {
                events.recv_async().await.ok()
            } else {
                match tokio::time::timeout(QUIET, events.recv_async()).await {
                    Ok(ev) => ev.ok(),
                    Err(_) => {
                        let batch = std::mem::take(&mut pending);
                        seen.extend(batch.iter().copied());
                        match handle.join(batch.clone(), replay).await {
                            Ok(n) if n > 0 => info!("agent.mdns: Joined {n} hosts"),
                            Ok(_) => {}
                            Err(e) => error!("agent.mdns: Failed to join: {e} ({batch:?})"),
                        }
                        continue;
                    }
                }
            };
            let Some(event) = next else {
                warn!("agent.mdns: browsing stopped");
                return;
            };
            if let ServiceEvent::ServiceResolved(r) = event {
                for ip in &r.addresses {
                    let addr = SocketAddr::new(ip.to_ip_addr(), r.port);
                    if addr == own || seen.contains(&addr) || pending.contains(&addr) {
                        continue;
                    }
                    if matches!(addr.ip(), IpAddr::V6(v6) if v6.is_unicast_link_local()) {
                        continue; // needs a scope id the gossip layer does not carry
                    }
                    pending.push(addr);
                }
            }
        }
    });
    Ok(Discovery { daemon, task })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_type_is_serfs() {
        assert_eq!(service_type("demo"), "_serf_demo._tcp.local.");
    }
}
