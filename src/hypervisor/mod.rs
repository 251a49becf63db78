//! The only module that touches libvirt. libvirt calls block, so every call runs
//! on tokio's blocking pool; a libvirt connection is thread-safe and shared.

pub mod accel;
pub mod choice;
pub mod console;
pub mod daemon;
pub mod domain;
mod ffi;
pub mod footprint;
pub mod job;
pub mod link;
pub mod manifest;
mod migration;
pub mod netns;
mod networks;
pub mod reaper;
pub mod sampler;
pub mod snapshot;
pub mod stats;
pub mod tick_cost;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use virt::connect::Connect;
use virt::domain::Domain;
use virt::enumutil::Enum;
use virt::error::ErrorNumber;
use virt::sys;

use crate::model::{HostStats, LibvirtLink, VmState, VmView};
use daemon::PrivateDaemon;
use domain::{DomainSpec, METADATA_NS, METADATA_PREFIX, parse_metadata};
use link::Link;
pub use migration::MigrationUris;
use sampler::{SamplerConfig, StatsBoard};

/// A libvirt connection this peer hosts VMs on, reopened when it is lost.
#[derive(Clone)]
pub struct Host {
    link: Arc<Link>,
    stats: Arc<StatsBoard>,
    /// The domains as last listed: what `status` and the services show, kept
    /// fresh by lifecycle events, our own actions and a 2 s poll. With the
    /// number of the listing that produced it: a listing that started earlier
    /// but finished later does not overwrite a newer one.
    known: Arc<Mutex<(u64, Vec<VmView>)>>,
    listings: Arc<AtomicU64>,
    /// A lifecycle event came: list again.
    changed: Arc<tokio::sync::Notify>,
}

impl Host {
    pub async fn open(uri: &str) -> Result<Host> {
        Host::open_with(uri, SamplerConfig::default()).await
    }

    /// Opens the connection and starts the stats sampler and the event watch.
    pub async fn open_with(uri: &str, sampling: SamplerConfig) -> Result<Host> {
        Host::connect(uri.to_string(), None, sampling).await
    }

    /// Hosts on our own private libvirtd, which is restarted if it dies.
    pub async fn open_private(daemon: PrivateDaemon, sampling: SamplerConfig) -> Result<Host> {
        Host::connect(daemon.uri(), Some(daemon), sampling).await
    }

    async fn connect(
        uri: String,
        daemon: Option<PrivateDaemon>,
        sampling: SamplerConfig,
    ) -> Result<Host> {
        // libvirt prints every error to stderr by default; ours carry them instead.
        virt::error::clear_error_callback();
        // Events and close callbacks need libvirt's event loop before the
        // connection opens.
        if let Err(e) = ffi::ensure_event_loop() {
            tracing::warn!("libvirt event loop unavailable ({e}); state is polled only");
        }
        let changed = Arc::new(tokio::sync::Notify::new());
        let notify = changed.clone();
        let events: link::EventHandler = Arc::new(move |event| {
            log_event(&event);
            notify.notify_one();
        });
        let link = blocking(move || Link::open(&uri, daemon, events)).await?;
        let stats = Arc::new(StatsBoard::new(sampling));
        sampler::spawn(&link, &stats, sampling);
        Ok(Host {
            link,
            stats,
            known: Arc::default(),
            listings: Arc::default(),
            changed,
        })
    }

    /// Lists the domains now, then keeps `vms()` fresh: again at each lifecycle
    /// event, and every 2 s as the fallback (changes libvirt sends no event for,
    /// e.g. metadata).
    pub async fn keep_list_fresh(&self) {
        if let Err(e) = self.list().await {
            tracing::warn!("{e:#}");
        }
        let host = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = host.changed.notified() => {}
                    _ = tokio::time::sleep(LIST_EVERY) => {}
                }
                let _ = host.list().await;
            }
        });
    }

    /// Host CPU, memory and load, as last sampled.
    pub fn host_stats(&self) -> Option<HostStats> {
        self.stats.host()
    }

    /// Whether the libvirt connection is up, or since when it is being reopened.
    pub fn link(&self) -> LibvirtLink {
        self.link.view()
    }

    /// Stops the private libvirtd (if this host has one) for good. Guests keep
    /// running; the next daemon on the same directory reattaches to them.
    pub async fn stop_daemon(&self) {
        let link = self.link.clone();
        let _ = tokio::task::spawn_blocking(move || link.stop_daemon()).await;
    }

    /// Makes libvirt probe QEMU now (seconds on a fresh daemon) rather than during
    /// the first VM creation or incoming migration.
    pub async fn warm_up(&self) {
        let link = self.link.clone();
        let probe = blocking(move || {
            let conn = link.conn()?;
            conn.capabilities()
                .map(|_| ())
                .map_err(|e| anyhow!("{}", e.message()))
        });
        if let Err(e) = probe.await {
            tracing::warn!("libvirt capabilities probe: {e:#}");
        }
    }

    pub fn uri(&self) -> &str {
        self.link.uri()
    }

    /// Every domain of this hypervisor, ours and foreign, sorted by name.
    pub async fn list(&self) -> Result<Vec<VmView>> {
        let link = self.link.clone();
        let listing = self.listings.fetch_add(1, Ordering::SeqCst) + 1;
        let vms = query(
            &self.link,
            blocking(move || {
                let conn = link.conn()?;
                let domains = conn
                    .list_all_domains(0)
                    .map_err(|e| anyhow!("listing domains: {}", e.message()))?;
                let mut vms: Vec<VmView> = domains.iter().filter_map(|d| vm_view(d).ok()).collect();
                vms.sort_by(|a, b| a.name.cmp(&b.name));
                Ok(vms)
            }),
        )
        .await?;
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if listing > known.0 {
            *known = (listing, vms.clone());
        }
        drop(known);
        Ok(self.annotated(vms))
    }

    /// The domains as last listed (see `keep_list_fresh`), with their latest
    /// stats; no libvirt call, so status and the services never wait on libvirt,
    /// and go on while it is lost or restarts (the guests run on without it).
    pub fn vms(&self) -> Vec<VmView> {
        self.annotated(self.vm_list())
    }

    /// The domains as last listed, without stats: what changed in them is
    /// published apart from the figures (the sampler's rounds carry those).
    pub fn vm_list(&self) -> Vec<VmView> {
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clone()
    }

    /// Fills the VMs' latest stats and history; returns the sampler round
    /// they come from (see `stats_rounds`).
    pub fn annotate(&self, vms: &mut [VmView]) -> u64 {
        self.stats.annotate(vms)
    }

    /// Each stats round from now on, as the sampler takes it.
    pub fn stats_rounds(&self) -> tokio::sync::broadcast::Receiver<sampler::Round> {
        self.stats.rounds()
    }

    /// Lists again after an action, so the next `vms()` shows its effect.
    pub async fn refresh(&self) {
        let _ = self.list().await;
    }

    fn annotated(&self, mut vms: Vec<VmView>) -> Vec<VmView> {
        self.stats.annotate(&mut vms);
        vms
    }

    /// One VM by name; an unknown name is an error that lists the known ones.
    pub async fn vm(&self, name: &str) -> Result<VmView> {
        let owned = name.to_string();
        let link = self.link.clone();
        let found = query(
            &self.link,
            blocking(move || {
                lookup(&*link.conn()?, &owned)?
                    .map(|d| vm_view(&d))
                    .transpose()
            }),
        )
        .await?;
        match found {
            Some(vm) => {
                let mut one = [vm];
                self.stats.annotate(&mut one);
                let [vm] = one;
                Ok(vm)
            }
            None => Err(self.unknown_vm(name).await),
        }
    }

    async fn unknown_vm(&self, name: &str) -> anyhow::Error {
        let known: Vec<String> = self
            .list()
            .await
            .map(|vms| vms.into_iter().map(|v| v.name.to_string()).collect())
            .unwrap_or_default();
        if known.is_empty() {
            anyhow!("no VM named '{name}' on this peer (it hosts none)")
        } else {
            anyhow!(
                "no VM named '{name}' on this peer (it hosts: {})",
                known.join(", ")
            )
        }
    }

    /// Defines the domain persistently and starts it.
    pub async fn create(&self, spec: &DomainSpec) -> Result<()> {
        self.create_from_xml(&spec.name, spec.to_xml()).await
    }

    /// Defines and starts a domain from ready-made XML (also for throwaway guests
    /// such as the penalty benchmark's, whose XML adds a disk); `remove` undoes it.
    pub async fn create_from_xml(&self, name: &str, xml: String) -> Result<()> {
        let name = name.to_string();
        let link = self.link.clone();
        blocking(move || {
            let conn = link.conn()?;
            if lookup(&conn, &name)?.is_some() {
                bail!("a VM named '{name}' exists already on this peer");
            }
            let domain = conn
                .define_domain_xml(&xml)
                .map_err(|e| anyhow!("defining VM '{name}': {}", e.message()))?;
            if let Err(e) = domain.create() {
                // Leave nothing half-made behind.
                let _ = domain.undefine();
                bail!("starting VM '{name}': {}", e.message());
            }
            Ok(())
        })
        .await?;
        self.refresh().await;
        Ok(())
    }

    pub async fn start(&self, name: &str) -> Result<()> {
        self.act(name, "starting", |d| d.create().map(|_| ())).await
    }

    /// Powers a VM off at once (like pulling the plug).
    pub async fn power_off(&self, name: &str) -> Result<()> {
        self.act(name, "powering off", |d| d.destroy()).await
    }

    /// One libvirt call on a VM, its error told as "<doing> VM '<name>': <why>".
    async fn act<F>(&self, name: &str, doing: &'static str, call: F) -> Result<()>
    where
        F: FnOnce(&Domain) -> Result<(), virt::error::Error> + Send + 'static,
    {
        let done = self
            .with_domain(name, move |d, name| {
                call(d).map_err(|e| anyhow!("{doing} VM '{name}': {}", e.message()))
            })
            .await;
        self.refresh().await;
        done
    }

    /// Asks the guest to shut down (ACPI power button) and waits up to `timeout`;
    /// powers it off if it is still running then. Returns true if it stopped by itself.
    pub async fn shutdown(&self, name: &str, timeout: Duration) -> Result<bool> {
        self.act(name, "shutting down", |d| d.shutdown()).await?;
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if self.vm(name).await?.state == VmState::Stopped {
                self.refresh().await;
                return Ok(true);
            }
        }
        match self.power_off(name).await {
            Ok(()) => Ok(false),
            // It stopped between the last check and the power-off.
            Err(_) if self.vm(name).await?.state == VmState::Stopped => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// The guest's serial console as a byte pipe (see `console.rs`).
    pub async fn open_console(&self, name: &str) -> Result<tokio::io::DuplexStream> {
        let link = self.link.clone();
        let owned = name.to_string();
        // Spawned on the runtime: the bridge task needs one.
        let handle = tokio::runtime::Handle::current();
        blocking(move || {
            let _guard = handle.enter();
            console::open(link.conn()?, &owned)
        })
        .await
    }

    pub async fn pause(&self, name: &str) -> Result<()> {
        self.act(name, "pausing", |d| d.suspend()).await
    }

    pub async fn resume(&self, name: &str) -> Result<()> {
        self.act(name, "resuming", |d| d.resume()).await
    }

    /// Whether the VM is paused because someone asked for it (not libvirt on
    /// its own, e.g. for a migration).
    pub async fn paused_by_request(&self, name: &str) -> Result<bool> {
        use virt::domain::{DomainPausedReason, DomainStateReason, DomainStateReasonEnum};
        self.with_domain(name, |d, name| {
            let (_, reason) = d
                .state()
                .map_err(|e| anyhow!("state of VM '{name}': {}", e.message()))?;
            Ok(matches!(
                reason,
                DomainStateReasonEnum::Known(DomainStateReason::Paused(Enum::Known(
                    DomainPausedReason::User
                )))
            ))
        })
        .await
    }

    /// Stops (if running) and undefines a VM. Returns the disk files peervisor
    /// recorded for it in its metadata (the caller decides what to delete).
    pub async fn remove(&self, name: &str) -> Result<Vec<String>> {
        let disks = self
            .with_domain(name, |d, name| {
                let disks = read_metadata(d).map(|m| m.disks).unwrap_or_default();
                if d.is_active().unwrap_or(false) {
                    let _ = d.destroy();
                }
                d.undefine()
                    .map_err(|e| anyhow!("removing VM '{name}': {}", e.message()))?;
                Ok(disks)
            })
            .await;
        self.refresh().await;
        disks
    }

    /// peervisor's metadata of a VM (image, services, disks); None for a foreign VM.
    pub async fn metadata(&self, name: &str) -> Result<Option<domain::VmMetadata>> {
        self.with_domain(name, |d, _| Ok(read_metadata(d))).await
    }

    /// Writes our `<metadata>` element into the VM's definition (running and
    /// persistent alike), or removes it (`None`).
    pub async fn set_metadata(&self, name: &str, xml: Option<String>) -> Result<()> {
        let done = self
            .with_domain(name, move |d, name| {
                let active = d.is_active().unwrap_or(false);
                let persistent = d.is_persistent().unwrap_or(false);
                let mut flags = 0;
                if active {
                    flags |= sys::VIR_DOMAIN_AFFECT_LIVE;
                }
                if persistent || !active {
                    flags |= sys::VIR_DOMAIN_AFFECT_CONFIG;
                }
                d.set_metadata(
                    sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
                    xml.as_deref(),
                    Some(METADATA_PREFIX),
                    Some(METADATA_NS),
                    flags,
                )
                .map_err(|e| anyhow!("writing VM '{name}' metadata: {}", e.message()))
            })
            .await;
        self.refresh().await;
        done
    }

    async fn with_domain<T, F>(&self, name: &str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Domain, &str) -> Result<T> + Send + 'static,
    {
        let owned = name.to_string();
        let link = self.link.clone();
        let outcome = blocking(move || match lookup(&*link.conn()?, &owned)? {
            Some(domain) => f(&domain, &owned).map(Some),
            None => Ok(None),
        })
        .await?;
        match outcome {
            Some(value) => Ok(value),
            None => Err(self.unknown_vm(name).await),
        }
    }
}

/// Logs libvirt lifecycle events as they happen, so the operator hears of a crash
/// or a stop at once (the sampler and status polls are the fallback).
fn log_event(event: &ffi::DomainEvent) {
    use ffi::Lifecycle::*;
    let what = match event.what {
        Started => "started",
        Suspended => "paused",
        Resumed => "resumed",
        Stopped => "stopped",
        Shutdown => "shutting down",
        MigratedAway => "migrated away",
        MigratedIn => "arrived by migration",
        Crashed => "crashed",
        Defined | Undefined | Other => return,
    };
    if event.what == Crashed {
        tracing::warn!("VM '{}' {what}", event.name);
    } else {
        tracing::info!("VM '{}' {what}", event.name);
    }
}

fn lookup(conn: &Connect, name: &str) -> Result<Option<Domain>> {
    match conn.lookup_domain_by_name(name) {
        Ok(d) => Ok(Some(d)),
        Err(e) if e.code() == Enum::Known(ErrorNumber::NoDomain) => Ok(None),
        Err(e) => Err(anyhow!("looking up VM '{name}': {}", e.message())),
    }
}

fn vm_view(domain: &Domain) -> Result<VmView> {
    let name = domain.name().context("domain name")?;
    let info = domain.info().context("domain info")?;
    let metadata = read_metadata(domain);
    let state = state_of(info.state.to_raw());
    // Ours on our bridge carry their address; a DHCP guest's is learned.
    let ip = match metadata.as_ref().and_then(|m| m.ip.clone()) {
        Some(ip) => Some(ip),
        None if state == VmState::Running => networks::learned_address(domain),
        None => None,
    };
    Ok(VmView {
        name: name.into(),
        uuid: domain.uuid_string().unwrap_or_default(),
        state,
        vcpus: info.nr_virt_cpu,
        memory_mib: info.memory / 1024,
        ip,
        managed: metadata.is_some(),
        adopted: metadata.as_ref().is_some_and(|m| m.adopted),
        services: metadata.map(|m| m.services).unwrap_or_default(),
        service_up: None,
        ..VmView::default()
    })
}

/// peervisor's metadata of a domain; None for a foreign domain.
fn read_metadata(domain: &Domain) -> Option<domain::VmMetadata> {
    domain
        .metadata(
            sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
            Some(METADATA_NS),
            0,
        )
        .ok()
        .map(|xml| parse_metadata(&xml))
}

fn state_of(state: sys::virDomainState) -> VmState {
    match state {
        sys::VIR_DOMAIN_RUNNING | sys::VIR_DOMAIN_BLOCKED => VmState::Running,
        sys::VIR_DOMAIN_PAUSED | sys::VIR_DOMAIN_PMSUSPENDED => VmState::Paused,
        sys::VIR_DOMAIN_SHUTOFF | sys::VIR_DOMAIN_SHUTDOWN => VmState::Stopped,
        sys::VIR_DOMAIN_CRASHED => VmState::Crashed,
        _ => VmState::Other,
    }
}

/// Longest a read-only query waits for libvirt. Past it the link is marked
/// stalled (see link.rs): the daemon is alive but not answering.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// How often `keep_list_fresh` lists the domains without an event.
const LIST_EVERY: Duration = Duration::from_secs(2);

/// A timeout marks the link stalled, so later calls fail at once instead of
/// piling up threads that wait on the daemon.
async fn query<T>(link: &Link, call: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    match tokio::time::timeout(QUERY_TIMEOUT, call).await {
        Ok(outcome) => outcome,
        Err(_) => {
            link.note_stalled();
            bail!(
                "libvirtd did not answer within {} s",
                QUERY_TIMEOUT.as_secs()
            )
        }
    }
}

/// Runs a blocking libvirt call off the async threads.
async fn blocking<T, F>(f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| anyhow!("libvirt worker failed: {e}"))?
}

/// The unix socket behind a local libvirt URI: `socket=` if given, else the
/// system daemon's default.
pub fn local_socket_for(uri: &str) -> std::path::PathBuf {
    let query = uri.split_once('?').map(|(_, q)| q).unwrap_or("");
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("socket="))
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/var/run/libvirt/libvirt-sock".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_path_comes_from_the_uri() {
        assert_eq!(
            local_socket_for("qemu+unix:///system?socket=/d/libvirt-sock"),
            std::path::PathBuf::from("/d/libvirt-sock")
        );
        assert_eq!(
            local_socket_for("qemu:///system"),
            std::path::PathBuf::from("/var/run/libvirt/libvirt-sock")
        );
    }
}
