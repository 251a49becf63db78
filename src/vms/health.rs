//! Probes each running guest's service from the hosting peer, so the operator sees
//! whether it answers (and keeps seeing it after a migration).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::Vms;
use crate::model::{VmState, VmView};
use crate::names::VmName;

const PROBE_EVERY: Duration = Duration::from_secs(2);
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
const SERVICE_PORT: u16 = 80;

/// Last probe result per VM name.
#[derive(Default)]
pub struct Health {
    up: Mutex<HashMap<VmName, bool>>,
}

impl Health {
    /// Fills `service_up` of the VMs that were probed.
    pub fn annotate(&self, vms: &mut [VmView]) {
        let up = self.up.lock().unwrap_or_else(|e| e.into_inner());
        for vm in vms {
            vm.service_up = if vm.state == VmState::Running {
                up.get(&vm.name).copied()
            } else {
                None
            };
        }
    }

    fn replace(&self, results: HashMap<VmName, bool>) {
        *self.up.lock().unwrap_or_else(|e| e.into_inner()) = results;
    }
}

/// Probes the running guests every few seconds.
pub async fn probe_loop(vms: Arc<Vms>) {
    let mut tick = tokio::time::interval(PROBE_EVERY);
    loop {
        tick.tick().await;
        let targets: Vec<(VmName, IpAddr)> = vms
            .host
            .vms()
            .into_iter()
            .filter(|v| v.state == VmState::Running && v.managed)
            .filter_map(|v| Some((v.name, v.ip?.parse().ok()?)))
            .collect();
        let network = vms.network.clone();
        let results = tokio::task::spawn_blocking(move || {
            targets
                .into_iter()
                .map(|(name, ip)| {
                    let addr = SocketAddr::new(ip, SERVICE_PORT);
                    (name, network.connect(addr, PROBE_TIMEOUT).is_ok())
                })
                .collect()
        })
        .await;
        if let Ok(results) = results {
            vms.health.replace(results);
        }
    }
}
