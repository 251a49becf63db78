//! On-demand provision (off unless `--provision`): when this host stays busy, a
//! copy of its busiest serving VM is started on the least-loaded peer; when a host
//! that received such a copy stays idle, it removes the copy again, as long as the
//! service keeps another provider. Every action is logged with its reason
//! (tracing target `provision`).
//!
//! The signal is the CPU this peer's running VMs use, as a share of the host's
//! CPUs (peers announce it as `vm_cpu_pct`): it is the load a replica can take
//! over, and it is each peer's own even when several peers share a machine (the
//! host's total CPU use would be the same figure for all of them). A peer over
//! `high` % for `sustain` replicates its busiest VM to the least-loaded peer that
//! does not provide its services yet; a peer under `low` % for `sustain` removes
//! a replica the policy put there once every other provider of its services has
//! been under `low` % as long too (the service as a whole went quiet). One action per
//! `sustain` at most; a VM counts once it has run for `sustain` (a boot is not
//! demand).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::replicate::Replications;
use crate::model::{PeerView, ServiceView, VmState, VmView};
use crate::names::{PeerRef, VmName};
use crate::node::Client;
use crate::paths::DataDir;
use crate::services::Services;
use crate::services::publish::vms_cpu_pct;
use crate::vms::Vms;

const LOOK_EVERY: Duration = Duration::from_secs(5);

/// The operator's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProvisionPolicy {
    pub enabled: bool,
    /// VM CPU % (of the host) above which this host asks for help.
    pub high_pct: f64,
    /// VM CPU % below which this host gives back the replicas it was given.
    pub low_pct: f64,
    /// How long a condition must hold before acting (also the pause between actions).
    pub sustain: Duration,
}

impl Default for ProvisionPolicy {
    fn default() -> Self {
        ProvisionPolicy {
            enabled: false,
            high_pct: 80.0,
            low_pct: 20.0,
            sustain: Duration::from_secs(60),
        }
    }
}

impl ProvisionPolicy {
    pub fn validate(&self) -> Result<(), String> {
        let pct = |v: f64| (0.0..=100.0).contains(&v);
        if !pct(self.high_pct) || !pct(self.low_pct) || self.low_pct >= self.high_pct {
            return Err(format!(
                "--provision-low ({}) must be below --provision-high ({}), both 0..100",
                self.low_pct, self.high_pct
            ));
        }
        if self.sustain.is_zero() {
            return Err("--provision-after must be at least 1 second".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Nothing,
    Replicate {
        vm: VmName,
        to: PeerRef,
        reason: String,
    },
    Remove {
        vm: VmName,
        reason: String,
    },
}

/// How long the host has been over or under the thresholds.
#[derive(Debug, Default)]
pub struct Tracker {
    over_since: Option<Instant>,
    under_since: Option<Instant>,
    last_action: Option<Instant>,
    /// When each VM was first seen running (by name).
    running_since: HashMap<VmName, Instant>,
    /// Since when each replica placed here has had other providers, all quiet.
    quiet_since: HashMap<VmName, Instant>,
}

impl Tracker {
    /// The signal at `now`: the CPU of the VMs that have run for `settle` at
    /// least. A booting VM keeps a vCPU busy for seconds: that is not demand.
    pub fn settled_cpu_pct(&mut self, vms: &[VmView], now: Instant, settle: Duration) -> f64 {
        self.running_since.retain(|name, _| {
            vms.iter()
                .any(|v| &v.name == name && v.state == VmState::Running)
        });
        let settled: Vec<VmView> = vms
            .iter()
            .filter(|v| v.state == VmState::Running)
            .filter(|v| {
                let since = *self.running_since.entry(v.name.clone()).or_insert(now);
                now - since >= settle
            })
            .cloned()
            .collect();
        vms_cpu_pct(&settled)
    }
}

/// What the policy sees at one look.
pub struct View<'a> {
    pub now: Instant,
    /// This peer's signal: its running VMs' CPU, % of the host.
    pub cpu_pct: f64,
    pub vms: &'a [VmView],
    /// Replicas the policy placed on this host.
    pub auto_replicas: &'a [VmName],
    pub peers: &'a [PeerView],
    pub services: &'a [ServiceView],
}

pub fn decide(policy: &ProvisionPolicy, t: &mut Tracker, v: &View) -> Decision {
    let now = v.now;
    if v.cpu_pct > policy.high_pct {
        t.over_since.get_or_insert(now);
    } else {
        t.over_since = None;
    }
    if v.cpu_pct < policy.low_pct {
        t.under_since.get_or_insert(now);
    } else {
        t.under_since = None;
    }
    // Since when each replica placed here has had other providers, all quiet.
    let quiet: Vec<&VmName> = v
        .auto_replicas
        .iter()
        .filter(|name| others_quiet(policy, v, name))
        .collect();
    t.quiet_since.retain(|name, _| quiet.contains(&name));
    for name in quiet {
        t.quiet_since.entry(name.clone()).or_insert(now);
    }
    let held = |since: Option<Instant>| since.is_some_and(|s| now - s >= policy.sustain);
    if t.last_action.is_some_and(|a| now - a < policy.sustain) {
        return Decision::Nothing;
    }
    let secs = policy.sustain.as_secs();
    if held(t.over_since) {
        let busiest = v
            .vms
            .iter()
            .filter(|vm| vm.managed && vm.state == VmState::Running)
            .max_by(|a, b| cpu_of(a).total_cmp(&cpu_of(b)));
        // A peer that provides the VM's services already would add little.
        let provides = |peer: &PeerView, vm: &VmView| {
            // A VM without manifest services provides its guest's HTTP server
            // under its own name.
            let serves = |name: &str| {
                vm.services.iter().any(|own| own.name == name)
                    || (vm.services.is_empty() && vm.name == name)
            };
            v.services
                .iter()
                .filter(|s| serves(&s.name))
                .flat_map(|s| &s.providers)
                .any(|p| p.peer_id == peer.peer_id)
        };
        let target = busiest.and_then(|vm| {
            v.peers
                .iter()
                .filter(|p| p.connected && !provides(p, vm))
                .filter_map(|p| Some((p, p.load.as_ref()?.vm_cpu_pct)))
                .filter(|(_, load)| *load < policy.high_pct)
                .min_by(|a, b| a.1.total_cmp(&b.1))
        });
        if let (Some(vm), Some((peer, load))) = (busiest, target) {
            t.last_action = Some(now);
            return Decision::Replicate {
                vm: vm.name.clone(),
                to: peer.peer_id.as_str().into(),
                reason: format!(
                    "its VMs use {:.0}% of the host's CPU, above {:.0}% for {secs} s; {} is the least loaded peer ({load:.0}%) and does not provide its services yet",
                    v.cpu_pct,
                    policy.high_pct,
                    peer.display_name()
                ),
            };
        }
    }
    if held(t.under_since) {
        for name in v.auto_replicas {
            if !held(t.quiet_since.get(name).copied()) {
                continue;
            }
            let Some(vm) = v.vms.iter().find(|vm| &vm.name == name) else {
                continue;
            };
            let served: Vec<String> = vm.services.iter().map(|s| s.name.to_string()).collect();
            t.last_action = Some(now);
            return Decision::Remove {
                vm: name.clone(),
                reason: format!(
                    "its VMs use {:.0}% of the host's CPU, below {:.0}% for {secs} s, and its services ({}) have other providers, all quiet as long",
                    v.cpu_pct,
                    policy.low_pct,
                    served.join(", ")
                ),
            };
        }
    }
    Decision::Nothing
}

/// Whether every service of the replica `name` (a VM here) has another
/// provider and all of them are quiet (a provider whose load is unknown is not).
fn others_quiet(policy: &ProvisionPolicy, v: &View, name: &str) -> bool {
    let Some(vm) = v.vms.iter().find(|vm| vm.name == name) else {
        return false;
    };
    !vm.services.is_empty()
        && vm.services.iter().all(|svc| {
            let others: Vec<_> = v
                .services
                .iter()
                .filter(|s| s.name == svc.name)
                .flat_map(|s| &s.providers)
                .filter(|p| p.vm.as_deref() != Some(name))
                .collect();
            !others.is_empty()
                && others.iter().all(|p| {
                    let load = if p.local {
                        Some(v.cpu_pct)
                    } else {
                        p.load.as_ref().map(|l| l.vm_cpu_pct)
                    };
                    load.is_some_and(|l| l < policy.low_pct)
                })
        })
}

fn cpu_of(vm: &VmView) -> f64 {
    // Unknown CPU (no counter) counts as not busy: no replica for it.
    vm.stats
        .as_ref()
        .and_then(|s| s.cpu_pct_host)
        .unwrap_or(0.0)
}

/// `data-dir/provisioned.json`: the replicas other peers' policies placed on
/// this host (the only VMs this host's policy may remove).
#[derive(Debug, Clone)]
pub struct AutoReplicas {
    file: PathBuf,
}

impl AutoReplicas {
    pub fn in_dir(data_dir: &DataDir) -> AutoReplicas {
        AutoReplicas {
            file: data_dir.root().join("provisioned.json"),
        }
    }

    /// Replicas the policy placed on this host (some may be gone since).
    pub fn list(&self) -> Vec<VmName> {
        std::fs::read_to_string(&self.file)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    /// Records (or forgets) a replica placed here by another peer's policy.
    pub fn mark(&self, name: &VmName, placed: bool) -> Result<()> {
        let mut list = self.list();
        list.retain(|n| n != name);
        if placed {
            list.push(name.clone());
        }
        std::fs::write(&self.file, serde_json::to_vec_pretty(&list)?)
            .with_context(|| format!("writing {}", self.file.display()))
    }
}

/// The policy at work on this peer: what it looks at (the overlay's peers and
/// services, the VMs here) and what it does (replicate a VM, remove a replica).
pub struct Provision {
    policy: ProvisionPolicy,
    node: Client,
    vms: Arc<Vms>,
    services: Arc<Services>,
    replications: Arc<Replications>,
    auto: AutoReplicas,
}

impl Provision {
    pub fn new(
        policy: ProvisionPolicy,
        node: Client,
        data_dir: &DataDir,
        vms: Arc<Vms>,
        services: Arc<Services>,
        replications: Arc<Replications>,
    ) -> Provision {
        Provision {
            policy,
            node,
            vms,
            services,
            replications,
            auto: AutoReplicas::in_dir(data_dir),
        }
    }

    /// The policy's loop: one look every few seconds, at most one action at a time.
    pub async fn run(self) {
        let policy = self.policy;
        tracing::info!(
            target: "provision",
            "on-demand provision on: replicate when this peer's VMs use over {:.0}% of the host's CPU, give back below {:.0}%, after {} s",
            policy.high_pct,
            policy.low_pct,
            policy.sustain.as_secs()
        );
        let mut tracker = Tracker::default();
        loop {
            tokio::time::sleep(LOOK_EVERY).await;
            let (Ok(vms), Ok(net)) = (self.vms.list().await, self.node.status().await) else {
                continue;
            };
            let now = Instant::now();
            let cpu_pct = tracker.settled_cpu_pct(&vms, now, policy.sustain);
            let services = self.services.services_view(&net.peers).await;
            let auto: Vec<VmName> = self
                .auto
                .list()
                .into_iter()
                .filter(|n| vms.iter().any(|v| &v.name == n))
                .collect();
            let view = View {
                now,
                cpu_pct,
                vms: &vms,
                auto_replicas: &auto,
                peers: &net.peers,
                services: &services,
            };
            match decide(&policy, &mut tracker, &view) {
                Decision::Nothing => {}
                Decision::Replicate { vm, to, reason } => self.replicate(&vm, &to, &reason).await,
                Decision::Remove { vm, reason } => self.remove(&vm, &reason).await,
            }
        }
    }

    async fn replicate(&self, vm: &VmName, to: &PeerRef, reason: &str) {
        tracing::info!(target: "provision", "replicating VM '{vm}': {reason}");
        match self
            .replications
            .replicate_as(vm, to, None, true, None)
            .await
        {
            Ok(r) => tracing::info!(
                target: "provision",
                "VM '{vm}' replicated to {} as '{}'",
                r.to,
                r.replica
            ),
            Err(e) => tracing::warn!(target: "provision", "replicating VM '{vm}' failed: {e:#}"),
        }
    }

    async fn remove(&self, vm: &VmName, reason: &str) {
        tracing::info!(target: "provision", "removing replica '{vm}': {reason}");
        match self.vms.destroy(vm).await {
            Ok(()) => {
                let _ = self.auto.mark(vm, false);
            }
            Err(e) => tracing::warn!(target: "provision", "removing '{vm}' failed: {e:#}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{PeerLoad, ProviderView, ServiceSpec, VmStats};

    fn policy() -> ProvisionPolicy {
        ProvisionPolicy {
            enabled: true,
            sustain: Duration::from_secs(30),
            ..ProvisionPolicy::default()
        }
    }

    fn vm(name: &str, cpu: f64) -> VmView {
        VmView {
            name: name.into(),
            state: VmState::Running,
            managed: true,
            stats: Some(VmStats {
                cpu_pct_host: Some(cpu),
                ..VmStats::default()
            }),
            services: vec![ServiceSpec {
                name: "web".into(),
                kind: "http".into(),
                port: 80,
                tags: Vec::new(),
                ..ServiceSpec::default()
            }],
            ..VmView::default()
        }
    }

    fn peer(id: &str, cpu: f64) -> PeerView {
        PeerView {
            peer_id: id.into(),
            nick: id.into(),
            connected: true,
            load: Some(PeerLoad {
                vm_cpu_pct: cpu,
                ..PeerLoad::default()
            }),
            ..PeerView::default()
        }
    }

    #[test]
    fn sustained_load_replicates_the_busiest_vm_to_the_least_loaded_peer_once() {
        let p = policy();
        let mut t = Tracker::default();
        let vms = [vm("web-1", 10.0), vm("web-2", 60.0)];
        let peers = [peer("b", 50.0), peer("c", 5.0), peer("d", 95.0)];
        let start = Instant::now();
        let look = |t: &mut Tracker, secs: u64, cpu: f64| {
            decide(
                &p,
                t,
                &View {
                    now: start + Duration::from_secs(secs),
                    cpu_pct: cpu,
                    vms: &vms,
                    auto_replicas: &[],
                    peers: &peers,
                    services: &[],
                },
            )
        };
        assert_eq!(look(&mut t, 0, 90.0), Decision::Nothing);
        assert_eq!(
            look(&mut t, 20, 90.0),
            Decision::Nothing,
            "not yet sustained"
        );
        assert_eq!(
            look(&mut t, 25, 50.0),
            Decision::Nothing,
            "a dip restarts the clock"
        );
        assert_eq!(look(&mut t, 30, 90.0), Decision::Nothing);
        let Decision::Replicate { vm, to, reason } = look(&mut t, 60, 90.0) else {
            panic!("expected a replication");
        };
        assert_eq!((vm.as_str(), to.as_str()), ("web-2", "c"));
        assert!(
            reason.contains("90% of the host's CPU, above 80%")
                && reason.contains("c is the least loaded"),
            "{reason}"
        );
        assert_eq!(
            look(&mut t, 70, 90.0),
            Decision::Nothing,
            "one action per sustain period"
        );
    }

    #[test]
    fn a_peer_that_provides_the_service_already_is_not_a_target() {
        let p = policy();
        let vms = [vm("web-1", 60.0)];
        let peers = [peer("b", 5.0), peer("c", 10.0)];
        let on_b = [ServiceView {
            name: "web".into(),
            providers: vec![ProviderView {
                peer_id: "b".into(),
                vm: Some("web-1-r1".into()),
                ..ProviderView::default()
            }],
            ..ServiceView::default()
        }];
        let start = Instant::now();
        let mut t = Tracker::default();
        let look = |t: &mut Tracker, secs: u64, peers: &[PeerView]| {
            decide(
                &p,
                t,
                &View {
                    now: start + Duration::from_secs(secs),
                    cpu_pct: 90.0,
                    vms: &vms,
                    auto_replicas: &[],
                    peers,
                    services: &on_b,
                },
            )
        };
        look(&mut t, 0, &peers);
        let Decision::Replicate { to, .. } = look(&mut t, 31, &peers) else {
            panic!("expected a replication");
        };
        assert_eq!(to, "c", "b, less loaded, provides web already");
        let mut t = Tracker::default();
        look(&mut t, 0, &peers[..1]);
        assert_eq!(look(&mut t, 31, &peers[..1]), Decision::Nothing);
    }

    #[test]
    fn idle_host_removes_only_its_auto_replicas_that_have_other_providers() {
        let p = policy();
        let vms = [vm("web-1-r1", 1.0), vm("mine", 1.0)];
        let auto = ["web-1-r1".into()];
        // Providers on this host (their load is ours), or on a peer with `load`.
        let provider = |vm: &str| ProviderView {
            vm: Some(vm.into()),
            local: true,
            ..ProviderView::default()
        };
        let remote = |vm: &str, load: Option<f64>| ProviderView {
            vm: Some(vm.into()),
            load: load.map(|l| PeerLoad {
                vm_cpu_pct: l,
                ..PeerLoad::default()
            }),
            ..ProviderView::default()
        };
        let web = |providers: Vec<ProviderView>| ServiceView {
            name: "web".into(),
            providers,
            ..ServiceView::default()
        };
        let start = Instant::now();
        let idle = |t: &mut Tracker, secs: u64, services: &[ServiceView]| {
            decide(
                &p,
                t,
                &View {
                    now: start + Duration::from_secs(secs),
                    cpu_pct: 5.0,
                    vms: &vms,
                    auto_replicas: &auto,
                    peers: &[],
                    services,
                },
            )
        };
        let two = [web(vec![provider("web-1-r1"), provider("mine")])];
        let mut t = Tracker::default();
        assert_eq!(idle(&mut t, 0, &two), Decision::Nothing);
        let Decision::Remove { vm, reason } = idle(&mut t, 31, &two) else {
            panic!("expected a removal");
        };
        assert_eq!(vm, "web-1-r1", "never a VM the operator placed");
        assert!(reason.contains("below 20%"), "{reason}");
        // The last provider stays.
        let one = [web(vec![provider("web-1-r1")])];
        let mut t = Tracker::default();
        idle(&mut t, 0, &one);
        assert_eq!(idle(&mut t, 40, &one), Decision::Nothing);
        // The source is quiet too: the replica goes.
        let quiet = [web(vec![provider("web-1-r1"), remote("web-1", Some(3.0))])];
        let mut t = Tracker::default();
        idle(&mut t, 0, &quiet);
        assert!(matches!(idle(&mut t, 31, &quiet), Decision::Remove { .. }));
        // The source is still busy, or its load unknown: the replica stays.
        for busy in [Some(60.0), None] {
            let busy = [web(vec![provider("web-1-r1"), remote("web-1", busy)])];
            let mut t = Tracker::default();
            idle(&mut t, 0, &busy);
            assert_eq!(idle(&mut t, 40, &busy), Decision::Nothing);
        }
        // The source was busy until a moment ago: it must stay quiet as long.
        let busy = [web(vec![provider("web-1-r1"), remote("web-1", Some(60.0))])];
        let mut t = Tracker::default();
        idle(&mut t, 0, &busy);
        idle(&mut t, 35, &quiet);
        assert_eq!(
            idle(&mut t, 40, &quiet),
            Decision::Nothing,
            "quiet 5 s only"
        );
        assert!(matches!(idle(&mut t, 66, &quiet), Decision::Remove { .. }));
    }

    #[test]
    fn a_booting_vm_is_not_load() {
        let mut t = Tracker::default();
        let start = Instant::now();
        let settle = Duration::from_secs(30);
        let vms = [vm("web-1", 50.0)];
        assert_eq!(t.settled_cpu_pct(&vms, start, settle), 0.0);
        let later = start + Duration::from_secs(31);
        assert_eq!(t.settled_cpu_pct(&vms, later, settle), 50.0);
        // Stopped and started again: it settles again.
        assert_eq!(t.settled_cpu_pct(&[], later, settle), 0.0);
        assert_eq!(t.settled_cpu_pct(&vms, later, settle), 0.0);
    }

    #[test]
    fn bad_thresholds_are_refused() {
        let mut p = policy();
        p.low_pct = 90.0;
        assert!(p.validate().unwrap_err().contains("--provision-low"));
        assert!(policy().validate().is_ok());
    }
}
