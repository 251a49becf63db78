//! The rows each list shows, derived from a snapshot: ordering, the overlay
//! toggle, sorting and the `/` filter. Pure functions, shared by drawing and the
//! reducer so both see the same rows.

use std::collections::HashMap;

use crate::model::{
    ConsumptionView, OperationPhase, OperationView, PeerLoad, PeerView, ProviderView, ServiceView,
    Status, VmView, nick_or_short_id,
};

/// Case-insensitive "contains" for the `/` filter; an empty filter matches all.
pub fn matches(filter: &str, fields: &[&str]) -> bool {
    if filter.is_empty() {
        return true;
    }
    let needle = filter.to_lowercase();
    fields.iter().any(|f| f.to_lowercase().contains(&needle))
}

/// One peer of the topology: this peer first, then the others.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerRow {
    pub peer_id: String,
    pub name: String,
    pub is_local: bool,
    pub connected: bool,
    pub latency_ms: Option<f64>,
    pub vm_count: Option<usize>,
    pub load: Option<PeerLoad>,
    /// Reached only through a relay (NAT).
    pub relayed: bool,
}

/// This peer first, then connected peers, then the rest, each group by name.
pub fn peer_rows(status: &Status) -> Vec<PeerRow> {
    let local = &status.local;
    let mut rows = vec![PeerRow {
        peer_id: local.peer_id.clone(),
        name: nick_or_short_id(&local.nick, &local.peer_id),
        is_local: true,
        connected: true,
        latency_ms: None,
        vm_count: Some(status.vms.len()),
        load: local.host.as_ref().map(|h| PeerLoad {
            cpu_pct: h.cpu_pct,
            vm_cpu_pct: status
                .vms
                .iter()
                .filter(|v| v.state == crate::model::VmState::Running)
                .filter_map(|v| v.stats.as_ref().and_then(|s| s.cpu_pct_host))
                .sum(),
            running_vms: status
                .vms
                .iter()
                .filter(|v| v.state == crate::model::VmState::Running)
                .count() as u32,
            connections: 0,
        }),
        relayed: false,
    }];
    let mut others: Vec<&PeerView> = status
        .peers
        .iter()
        .filter(|p| p.peer_id != local.peer_id)
        .collect();
    others.sort_by_cached_key(|p| (!p.connected, p.display_name()));
    rows.extend(others.into_iter().map(|p| PeerRow {
        peer_id: p.peer_id.clone(),
        name: p.display_name(),
        is_local: false,
        connected: p.connected,
        latency_ms: p.latency_ms,
        vm_count: p.vms.as_ref().map(Vec::len),
        load: p.load.clone(),
        relayed: p.connected && p.relayed_via.is_some(),
    }));
    rows
}

pub fn filtered_peer_rows(status: &Status, filter: &str) -> Vec<PeerRow> {
    let mut rows = peer_rows(status);
    rows.retain(|r| matches(filter, &[&r.name, &r.peer_id]));
    rows
}

/// Columns the VM table sorts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VmSort {
    #[default]
    Name,
    State,
    Cpu,
    Memory,
    Disk,
    Net,
    Host,
}

impl VmSort {
    const ORDER: [VmSort; 7] = [
        VmSort::Name,
        VmSort::State,
        VmSort::Cpu,
        VmSort::Memory,
        VmSort::Disk,
        VmSort::Net,
        VmSort::Host,
    ];

    /// Sorted by a figure the sampler updates (the order moves with each round).
    pub fn by_figures(self) -> bool {
        matches!(
            self,
            VmSort::Cpu | VmSort::Memory | VmSort::Disk | VmSort::Net
        )
    }

    pub fn next(self) -> VmSort {
        let i = Self::ORDER.iter().position(|s| *s == self).unwrap_or(0);
        Self::ORDER[(i + 1) % Self::ORDER.len()]
    }

    pub fn label(self) -> &'static str {
        match self {
            VmSort::Name => "name",
            VmSort::State => "state",
            VmSort::Cpu => "cpu",
            VmSort::Memory => "mem",
            VmSort::Disk => "disk",
            VmSort::Net => "net",
            VmSort::Host => "host",
        }
    }
}

/// One row of the VM table: a VM on this peer (with its figures), or, with the
/// overlay toggle, a VM another peer announced (with the figures its host
/// gave once the row was on screen).
#[derive(Debug, Clone, PartialEq)]
pub struct VmRow<'a> {
    pub name: &'a str,
    pub host: String,
    pub host_id: &'a str,
    pub local: bool,
    pub view: Option<&'a VmView>,
}

impl VmRow<'_> {
    /// Selection key: the name here, `name@host` elsewhere.
    pub fn key(&self) -> String {
        if self.local {
            self.name.to_string()
        } else {
            format!("{}@{}", self.name, self.host)
        }
    }
}

pub fn vm_rows<'a>(status: &'a Status, all: bool, sort: VmSort, filter: &str) -> Vec<VmRow<'a>> {
    let local_name = nick_or_short_id(&status.local.nick, &status.local.peer_id);
    let mut rows: Vec<VmRow> = status
        .vms
        .iter()
        .map(|v| VmRow {
            name: &v.name,
            host: local_name.clone(),
            host_id: &status.local.peer_id,
            local: true,
            view: Some(v),
        })
        .collect();
    if all {
        // Figures of the VMs on screen, as their hosts gave them.
        let figures: HashMap<(&str, &str), &VmView> = status
            .remote_vms
            .iter()
            .map(|r| ((r.host_id.as_str(), r.vm.name.as_str()), &r.vm))
            .collect();
        for p in status
            .peers
            .iter()
            .filter(|p| p.peer_id != status.local.peer_id)
        {
            let host = p.display_name();
            for name in p.vms.iter().flatten() {
                rows.push(VmRow {
                    name,
                    host: host.clone(),
                    host_id: &p.peer_id,
                    local: false,
                    view: figures.get(&(p.peer_id.as_str(), name.as_str())).copied(),
                });
            }
        }
    }
    rows.retain(|r| {
        let state = r.view.map_or("", |v| v.state.as_str());
        let services: Vec<&str> = r
            .view
            .map(|v| v.services.iter().map(|s| s.name.as_str()).collect())
            .unwrap_or_default();
        matches(filter, &[r.name, &r.host, state]) || services.iter().any(|s| matches(filter, &[s]))
    });
    let num = |r: &VmRow, f: fn(&VmView) -> f64| -> f64 { r.view.map_or(-1.0, f) };
    match sort {
        VmSort::Name => rows.sort_by(|a, b| (a.name, &a.host).cmp(&(b.name, &b.host))),
        VmSort::Host => rows.sort_by(|a, b| (&a.host, a.name).cmp(&(&b.host, b.name))),
        VmSort::State => rows.sort_by_key(|r| (r.view.map(|v| v.state as u8).unwrap_or(9), r.name)),
        other => {
            let key: fn(&VmView) -> f64 = match other {
                VmSort::Cpu => |v| {
                    v.stats
                        .as_ref()
                        .and_then(|s| s.cpu_pct_host)
                        .unwrap_or(-1.0)
                },
                VmSort::Memory => |v| v.memory_mib as f64,
                VmSort::Disk => |v| {
                    v.stats
                        .as_ref()
                        .map_or(-1.0, |s| s.disk_read_bps + s.disk_write_bps)
                },
                _ => |v| {
                    v.stats
                        .as_ref()
                        .map_or(-1.0, |s| s.net_rx_bps + s.net_tx_bps)
                },
            };
            // Biggest first: the busy VMs are what an operator sorts for.
            rows.sort_by(|a, b| num(b, key).total_cmp(&num(a, key)).then(a.name.cmp(b.name)));
        }
    }
    rows
}

/// The provider a consumer would pick: this peer's own, else the lowest latency.
pub fn best_provider(service: &ServiceView) -> Option<&ProviderView> {
    service.providers.iter().min_by(|a, b| {
        let key = |p: &ProviderView| (!p.local, p.latency_ms.unwrap_or(f64::MAX));
        let (ka, kb) = (key(a), key(b));
        ka.0.cmp(&kb.0).then(ka.1.total_cmp(&kb.1))
    })
}

/// Services by name, filtered on name, type and provider names.
pub fn service_rows<'a>(status: &'a Status, filter: &str) -> Vec<&'a ServiceView> {
    let mut rows: Vec<&ServiceView> = status
        .services
        .iter()
        .filter(|s| {
            matches(filter, &[&s.name, &s.kind])
                || s.providers
                    .iter()
                    .any(|p| matches(filter, &[&p.peer_nick, p.vm.as_deref().unwrap_or("")]))
        })
        .collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    rows
}

/// Local listeners for a service.
pub fn consumptions_of<'a>(status: &'a Status, service: &str) -> Vec<&'a ConsumptionView> {
    status
        .consumptions
        .iter()
        .filter(|c| c.service == service)
        .collect()
}

pub fn is_active(op: &OperationView) -> bool {
    matches!(
        op.phase,
        OperationPhase::Requested | OperationPhase::Transferring
    )
}

/// Running operations first, then the most recent (the node lists each
/// host's in the order they began; ids are per host).
pub fn operation_rows<'a>(status: &'a Status, filter: &str) -> Vec<&'a OperationView> {
    let mut v: Vec<(usize, &OperationView)> = status
        .operations
        .iter()
        .enumerate()
        .filter(|(_, o)| {
            let host = o.host.as_deref().unwrap_or("");
            matches(
                filter,
                &[&o.vm, &o.peer, host, o.error.as_deref().unwrap_or("")],
            )
        })
        .collect();
    v.sort_by_key(|(i, o)| (!is_active(o), std::cmp::Reverse(*i)));
    v.into_iter().map(|(_, o)| o).collect()
}
