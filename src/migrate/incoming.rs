//! Live migration over the overlay, destination side: whether to accept a VM
//! (before anything moves), the token and grant its tunnel streams need, and
//! closing the books when the source reports the end, or when it falls silent.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libp2p::PeerId;

use super::Migrations;
use super::capacity::{Refusal, Reservation, VmRequirements};
use super::operations::Busy;
use crate::api::Role;
use crate::hypervisor::job::JobSample;
use crate::model::{OperationKind, OperationPhase, VmState};
use crate::names::VmName;
use crate::node::protocol::ControlResponse;

/// How long an authorization to open tunnel streams stays valid.
const GRANT_TTL: Duration = Duration::from_secs(600);

/// An accepted migration whose source opens no tunnel stream this fast is over
/// (the source's libvirt connects at once; the source may have died).
const UNUSED_GRANT_TTL: Duration = Duration::from_secs(60);

/// How long a destination waits, once the last tunnel stream of a migration has
/// closed, for the source to say how it ended before finding out itself.
const SETTLE_AFTER_TUNNEL: Duration = Duration::from_secs(5);

/// Bounds on what a source may send about the files its VM boots from.
const MAX_BOOT_FILES: usize = 8;

const MAX_PATH_LEN: usize = 4096;

struct Grant {
    peer: PeerId,
    vm: VmName,
    operation: u64,
    expires: Instant,
    /// The VM's share of the lent capacity, held until it arrived or failed.
    _reservation: Option<Reservation>,
    /// Tunnel streams of this migration open right now.
    streams: u32,
    /// Whether any tunnel stream was opened yet.
    opened: bool,
    /// Disk files made here for the VM (diskmig.rs): deleted unless it arrives.
    made_disks: Vec<PathBuf>,
    /// Where this daemon's QEMU binds the data channel sockets (removed with
    /// the grant).
    _channels: Option<super::tunnel::ChannelDir>,
    /// The VM's address on the source's network (`nudge_neighbour`).
    address: Option<std::net::Ipv4Addr>,
    /// The loopback ports (memory, disks) this daemon's QEMU listens on in a
    /// loopback migration, and the user it runs as.
    loopback_ports: Option<([u16; 2], u32)>,
}

/// Tunnel authorizations this peer (as a destination) has handed out.
#[derive(Default)]
pub struct TunnelGrants {
    grants: Mutex<HashMap<u64, Grant>>,
}

impl TunnelGrants {
    fn insert(&self, token: u64, grant: Grant) {
        let mut grants = self.grants.lock().unwrap_or_else(|e| e.into_inner());
        grants.insert(token, grant);
    }

    /// Removes and returns the grants whose time is up (and carry no transfer).
    fn take_expired(&self) -> Vec<Grant> {
        let mut grants = self.grants.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let expired: Vec<u64> = grants
            .iter()
            .filter(|(_, g)| g.expires <= now && g.streams == 0)
            .map(|(t, _)| *t)
            .collect();
        expired
            .into_iter()
            .filter_map(|t| grants.remove(&t))
            .collect()
    }

    /// Counts a tunnel stream of this grant; false if the token is not good.
    pub(super) fn stream_opened(&self, token: u64, peer: PeerId) -> bool {
        let mut grants = self.grants.lock().unwrap_or_else(|e| e.into_inner());
        match grants.get_mut(&token) {
            Some(g) if g.peer == peer && g.expires > Instant::now() => {
                g.streams += 1;
                g.opened = true;
                true
            }
            _ => false,
        }
    }

    /// Uncounts a tunnel stream; true if it was the grant's last one.
    pub(super) fn stream_closed(&self, token: u64) -> bool {
        let mut grants = self.grants.lock().unwrap_or_else(|e| e.into_inner());
        grants.get_mut(&token).is_some_and(|g| {
            g.streams = g.streams.saturating_sub(1);
            g.streams == 0
        })
    }

    /// Removes the grant if no tunnel stream was ever opened with it.
    fn take_unused(&self, token: u64) -> Option<Grant> {
        let mut grants = self.grants.lock().unwrap_or_else(|e| e.into_inner());
        match grants.get(&token) {
            Some(g) if !g.opened => grants.remove(&token),
            _ => None,
        }
    }

    /// The loopback ports (memory, disks) of a grant's loopback migration,
    /// and QEMU's user.
    pub(super) fn loopback_ports(&self, token: u64) -> Option<([u16; 2], u32)> {
        let grants = self.grants.lock().unwrap_or_else(|e| e.into_inner());
        grants.get(&token).and_then(|g| g.loopback_ports)
    }

    fn contains(&self, token: u64) -> bool {
        let grants = self.grants.lock().unwrap_or_else(|e| e.into_inner());
        grants.contains_key(&token)
    }

    #[cfg(test)]
    fn allows(&self, token: u64, peer: PeerId) -> bool {
        let grants = self.grants.lock().unwrap_or_else(|e| e.into_inner());
        grants
            .get(&token)
            .is_some_and(|g| g.peer == peer && g.expires > Instant::now())
    }

    fn take(&self, token: u64, peer: PeerId) -> Option<Grant> {
        let mut grants = self.grants.lock().unwrap_or_else(|e| e.into_inner());
        match grants.get(&token) {
            Some(g) if g.peer == peer => grants.remove(&token),
            _ => None,
        }
    }
}

impl Migrations {
    /// Destination side: decides whether to accept a VM, before anything moves.
    pub async fn prepare_incoming(
        self: &Arc<Self>,
        from: PeerId,
        vm: VmRequirements,
        disks: Vec<crate::node::protocol::DiskOffer>,
        address: Option<String>,
    ) -> ControlResponse {
        let from_name = self.node.peer_label(from).await;
        let refuse = |reason: String| {
            tracing::warn!("refusing VM '{}' from {from_name}: {reason}", vm.name);
            ControlResponse::Refused { reason }
        };
        if !self.access.allows(&from, Role::Control) {
            return refuse(format!(
                "peer {from} is not allowed to control this host (its operator can run `peervisor peers allow {from} --role control`)"
            ));
        }
        if !self.accept {
            return refuse("this peer does not accept incoming migrations".into());
        }
        if vm.boot_files.len() > MAX_BOOT_FILES
            || vm
                .boot_files
                .iter()
                .any(|f| f.as_os_str().len() > MAX_PATH_LEN)
        {
            return refuse("malformed request: too many or too long boot file paths".into());
        }
        self.settle_expired_grants();
        let reservation = match self.capacity.check_incoming(&vm).await {
            Ok(reservation) => reservation,
            Err(refusal) => return refuse(refusal.to_string()),
        };
        if let Err(e) = std::fs::create_dir_all(crate::paths::console_log_dir()) {
            return refuse(format!("cannot create the console log directory: {e}"));
        }
        let disk_plan =
            match super::diskmig::plan_disks(&crate::paths::disk_dir(), &vm.name, &vm.uuid, &disks)
            {
                Ok(plan) => plan,
                Err(reason) => return refuse(reason),
            };
        let limit = self.capacity.max_migrations();
        let operation = match self.operations.begin_limited(
            OperationKind::MigrateIn,
            &vm.name,
            &from_name,
            limit,
        ) {
            Ok(id) => id,
            Err(Busy::Limit { running }) => {
                return refuse(Refusal::Busy { running, limit }.to_string());
            }
            Err(Busy::Vm { .. }) => {
                return refuse(format!("VM '{}' is being migrated here already", vm.name));
            }
        };
        let mut incremental = false;
        let made_disks = match disk_plan {
            super::diskmig::DiskPlan::Shared => Vec::new(),
            super::diskmig::DiskPlan::Copy(files) => {
                // Base images here with the same checksum are not copied.
                let bases = super::diskmig::local_bases(&self.image_dir, &disks);
                incremental = bases
                    .as_ref()
                    .is_some_and(|b| b.iter().any(Option::is_some));
                let bases = bases.filter(|_| incremental);
                if let Err(reason) = super::diskmig::make_disks(&files, bases.as_deref()).await {
                    self.operations.finish(operation, Some(reason.clone()));
                    return refuse(reason);
                }
                files.into_iter().map(|(path, _)| path).collect()
            }
        };
        self.operations
            .set_phase(operation, OperationPhase::Transferring);
        let token: u64 = rand::random();
        let (channels, direct_refused, qemu_uid) = self.channel_dir_for_qemu(token).await;
        let loopback_ports = match qemu_uid {
            Some(uid) if !made_disks.is_empty() => {
                self.loopback_ports_for_qemu().await.map(|p| (p, uid))
            }
            _ => None,
        };
        self.grants.insert(
            token,
            Grant {
                peer: from,
                vm: vm.name.clone(),
                operation,
                expires: Instant::now() + GRANT_TTL,
                _reservation: Some(reservation),
                streams: 0,
                opened: false,
                made_disks: made_disks.clone(),
                _channels: channels,
                address: address.and_then(|a| a.parse().ok()),
                loopback_ports,
            },
        );
        self.note_made_disks(&vm.name, &made_disks);
        tokio::spawn(self.clone().expire_unused_grant(token));
        self.services.handovers().arriving(&vm.name);
        tracing::info!("accepted migration of VM '{}' from {from_name}", vm.name);
        ControlResponse::MigrationAccepted {
            token,
            disk_copies: made_disks
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect(),
            incremental,
            direct_refused,
            loopback_ports: loopback_ports.map(|(ports, _)| ports),
        }
    }

    /// Destination side: two free ports on the loopback for QEMU's memory
    /// stream and NBD server in a loopback migration, when this daemon (so its
    /// QEMU) shares this node's network namespace; None otherwise (the source
    /// then says why it cannot).
    async fn loopback_ports_for_qemu(&self) -> Option<[u16; 2]> {
        let daemon = tokio::net::UnixStream::connect(&self.daemon.socket)
            .await
            .ok()?;
        let pid = daemon.peer_cred().ok()?.pid()?;
        drop(daemon);
        if !super::transport::shares_our_netns(u32::try_from(pid).ok()) {
            tracing::info!("this libvirt runs in another network namespace: no loopback disk copy");
            return None;
        }
        // Free now (both held at once: two different ones); QEMU binds them
        // when libvirt prepares the migration.
        let free = || std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).ok();
        let (memory, disks) = (free()?, free()?);
        Some([
            memory.local_addr().ok()?.port(),
            disks.local_addr().ok()?.port(),
        ])
    }

    /// Destination side: the directory this daemon's QEMU binds data channel
    /// sockets in, given to the user it runs as; or why its QEMU cannot use
    /// direct channels (its libvirt confines QEMU: the source tunnels); and
    /// that user, when the daemon says.
    async fn channel_dir_for_qemu(
        &self,
        token: u64,
    ) -> (
        Option<super::tunnel::ChannelDir>,
        Option<String>,
        Option<u32>,
    ) {
        let security = match self.host.capabilities().await {
            Ok(xml) => super::transport::daemon_security(&xml),
            Err(e) => {
                tracing::warn!("{e:#}: assuming QEMU runs as this node's user, unconfined");
                Default::default()
            }
        };
        if let Some(model) = security.confining_model {
            let why = format!("{}'s libvirt confines QEMU ({model})", self.nick);
            return (None, Some(why), security.qemu_uid);
        }
        match super::tunnel::ChannelDir::make(&self.daemon.run_dir, token, security.qemu_uid) {
            Ok(dir) => (Some(dir), None, security.qemu_uid),
            Err(e) => (
                None,
                Some(format!("{}: {e:#}", self.nick)),
                security.qemu_uid,
            ),
        }
    }

    /// Destination side: an accepted migration whose source opened no tunnel in
    /// time frees its reservation and its parallel slot.
    async fn expire_unused_grant(self: Arc<Self>, token: u64) {
        tokio::time::sleep(UNUSED_GRANT_TTL).await;
        if let Some(grant) = self.grants.take_unused(token) {
            self.discard_disks(&grant.vm, &grant.made_disks).await;
            self.operations.finish(
                grant.operation,
                Some(format!(
                    "the source opened no migration tunnel within {} s",
                    UNUSED_GRANT_TTL.as_secs()
                )),
            );
            tracing::warn!(
                "incoming migration of VM '{}': the source never opened the tunnel",
                grant.vm
            );
        }
    }

    /// Destination side: incoming migrations whose grant ran out without word
    /// from the source are over.
    fn settle_expired_grants(&self) {
        for grant in self.grants.take_expired() {
            self.discard_disks_later(&grant.vm, &grant.made_disks);
            self.operations.finish(
                grant.operation,
                Some("no word from the source before the authorization expired".into()),
            );
            tracing::warn!("incoming migration of VM '{}' expired", grant.vm);
        }
    }

    /// Destination side: the last tunnel stream of a migration closed. If the
    /// source does not report the end soon (it died, or the overlay was cut),
    /// find out from libvirt whether the VM arrived, and close the books.
    pub(super) async fn settle_after_tunnel(self: Arc<Self>, from: PeerId, token: u64) {
        tokio::time::sleep(SETTLE_AFTER_TUNNEL).await;
        if !self.grants.contains(token) {
            return; // the source reported the end
        }
        let Some(grant) = self.grants.take(token, from) else {
            return;
        };
        let arrived = self
            .host
            .vm(&grant.vm)
            .await
            .is_ok_and(|v| v.state == VmState::Running);
        if arrived {
            self.record_arrival(&grant, from).await;
        } else {
            self.discard_disks(&grant.vm, &grant.made_disks).await;
            self.operations.finish(
                grant.operation,
                Some("the migration tunnel closed before the VM arrived".into()),
            );
            tracing::warn!(
                "incoming migration of VM '{}' from {from}: the tunnel closed before it arrived",
                grant.vm
            );
        }
    }

    /// Destination side: the VM is here; records what libvirt measured.
    async fn record_arrival(&self, grant: &Grant, from: PeerId) -> JobSample {
        // The source's libvirt sent its measurements along with the VM.
        let completed = match self.host.completed_job(&grant.vm).await {
            Ok(sample) => sample.unwrap_or_default(),
            Err(e) => {
                tracing::warn!("no completed job stats for VM '{}': {e:#}", grant.vm);
                JobSample::default()
            }
        };
        self.operations.set_progress(grant.operation, &completed);
        self.operations.finish(grant.operation, None);
        self.forget_made_disks(&grant.vm);
        if let Some(address) = grant.address {
            nudge_neighbour(address);
        }
        tracing::info!(
            "VM '{}' arrived from {from} (libvirt: job {:?} ms, downtime {:?} ms, {:?} bytes)",
            grant.vm,
            completed.elapsed_ms,
            completed.downtime_ms,
            completed.processed_bytes
        );
        completed
    }

    /// Destination side: the source says the migration is over.
    pub async fn incoming_ended(
        &self,
        from: PeerId,
        token: u64,
        ok: bool,
        error: Option<String>,
    ) -> ControlResponse {
        let Some(grant) = self.grants.take(token, from) else {
            return ControlResponse::Refused {
                reason: "unknown migration token".into(),
            };
        };
        // The VM arrived or did not: status shows it before the source hears back.
        self.host.refresh().await;
        if ok {
            let completed = self.record_arrival(&grant, from).await;
            // Consumers learn the new provider now, not at the next periodic announcement.
            self.services.republish();
            let running = self
                .host
                .vm(&grant.vm)
                .await
                .is_ok_and(|v| v.state == VmState::Running);
            return ControlResponse::MigrationStats {
                downtime_ms: completed.downtime_ms,
                transferred_bytes: completed.processed_bytes,
                running,
            };
        }
        self.discard_disks(&grant.vm, &grant.made_disks).await;
        let why = match error {
            Some(e) => format!(
                "the source reported: {}",
                crate::node::protocol::peer_text(&e)
            ),
            None => "the source reported failure".into(),
        };
        tracing::warn!("incoming migration of VM '{}' failed: {why}", grant.vm);
        self.operations.finish(grant.operation, Some(why));
        ControlResponse::Ack
    }
}

/// Makes this host resolve the arrived VM's address (one empty datagram to the
/// discard port: the kernel asks the guest's MAC with ARP), so that libvirt's
/// ARP source finds it at the next listing. A guest keeps its DHCP lease from
/// the source's network and stays silent otherwise; the leases here do not
/// know it. Only private addresses: a peer cannot aim this elsewhere.
fn nudge_neighbour(address: std::net::Ipv4Addr) {
    if !address.is_private() {
        return;
    }
    let sent = std::net::UdpSocket::bind("0.0.0.0:0").and_then(|s| s.send_to(&[], (address, 9)));
    if let Err(e) = sent {
        tracing::debug!("asking for {address}'s neighbour entry: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_are_bound_to_their_peer_and_expire() {
        let grants = TunnelGrants::default();
        let a = PeerId::random();
        let b = PeerId::random();
        grants.insert(
            7,
            Grant {
                peer: a,
                vm: "web-1".into(),
                operation: 1,
                expires: Instant::now() + Duration::from_secs(60),
                _reservation: None,
                streams: 0,
                opened: false,
                made_disks: Vec::new(),
                _channels: None,
                address: None,
                loopback_ports: None,
            },
        );
        assert!(grants.allows(7, a));
        assert!(!grants.allows(7, b), "another peer cannot use the token");
        assert!(!grants.allows(8, a));
        assert!(grants.take(7, b).is_none());
        assert!(grants.take(7, a).is_some());
        assert!(!grants.allows(7, a), "a token is good for one migration");
        grants.insert(
            9,
            Grant {
                peer: a,
                vm: "x".into(),
                operation: 2,
                expires: Instant::now() - Duration::from_secs(1),
                _reservation: None,
                streams: 0,
                opened: false,
                made_disks: Vec::new(),
                _channels: None,
                address: None,
                loopback_ports: None,
            },
        );
        assert!(!grants.allows(9, a), "expired");
        assert!(!grants.stream_opened(9, a), "expired");
        assert_eq!(grants.take_expired().len(), 1);
        assert!(!grants.contains(9));

        grants.insert(
            10,
            Grant {
                peer: a,
                vm: "y".into(),
                operation: 3,
                expires: Instant::now() + Duration::from_secs(60),
                _reservation: None,
                streams: 0,
                opened: false,
                made_disks: Vec::new(),
                _channels: None,
                address: None,
                loopback_ports: None,
            },
        );
        assert!(!grants.stream_opened(10, b), "bound to its peer");
        assert!(grants.stream_opened(10, a) && grants.stream_opened(10, a));
        assert!(!grants.stream_closed(10), "one stream still open");
        assert!(grants.stream_closed(10), "the last one closed");
        assert!(grants.take_expired().is_empty());
        assert!(grants.take_unused(10).is_none(), "it was used");
        grants.insert(
            11,
            Grant {
                peer: a,
                vm: "z".into(),
                operation: 4,
                expires: Instant::now() + Duration::from_secs(60),
                _reservation: None,
                streams: 0,
                opened: false,
                made_disks: Vec::new(),
                _channels: None,
                address: None,
                loopback_ports: None,
            },
        );
        assert!(grants.take_unused(11).is_some());
    }
}
