//! What this host lends to VMs other peers push in (live migrations, replicas),
//! and the one check every incoming VM passes before anything moves:
//! `Capacity::check_incoming`. The VMs already here, whoever made them, count against
//! what is lent; so do incoming VMs that were accepted but have not arrived yet
//! (a `Reservation` holds their share until they arrive or give up).
//!
//! Limits come from `--lend-vcpus/--lend-memory/--lend-disk/--max-migrations`,
//! else from `DATA_DIR/capacity.toml`, else from the host (see `Lending::host_defaults`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, anyhow, bail};
use serde::Deserialize;

use crate::hypervisor::Host;
use crate::model::{LendingView, VmState, VmView};
use crate::names::VmName;

/// Parallel migrations each way a peer runs unless told otherwise.
pub const DEFAULT_MAX_MIGRATIONS: u32 = 2;
/// vCPUs are time-shared: a host lends this many per host CPU by default (the
/// initial CPU allocation ratio of OpenStack, for one).
const VCPUS_PER_CPU: u32 = 4;

/// The operator's settings as given on the command line (None: not given).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CapacityFlags {
    pub lend_vcpus: Option<u32>,
    pub lend_memory_mib: Option<u64>,
    pub lend_disk_mib: Option<u64>,
    pub max_migrations: Option<u32>,
}

/// How much this host lends to guests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lending {
    pub vcpus: u32,
    pub memory_mib: u64,
    pub disk_mib: u64,
}

/// `DATA_DIR/capacity.toml`: every key optional, sizes with a unit ("4GiB").
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CapacityFile {
    lend_vcpus: Option<u32>,
    lend_memory: Option<String>,
    lend_disk: Option<String>,
    max_migrations: Option<u32>,
}

/// The limits in force on a peer: flags over the file over the host's defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CapacityConfig {
    pub lending: Lending,
    pub max_migrations: u32,
}

impl CapacityConfig {
    pub fn resolve(flags: CapacityFlags, file: &Path, defaults: Lending) -> Result<Self> {
        let from_file = match std::fs::read_to_string(file) {
            Ok(text) => toml::from_str::<CapacityFile>(&text)
                .map_err(|e| anyhow!("{}: {}", file.display(), e.message()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => CapacityFile::default(),
            Err(e) => bail!("reading {}: {e}", file.display()),
        };
        let size = |value: &Option<String>, key: &str| -> Result<Option<u64>> {
            value
                .as_deref()
                .map(parse_size_mib)
                .transpose()
                .map_err(|e| anyhow!("{}: {key}: {e}", file.display()))
        };
        let config = CapacityConfig {
            lending: Lending {
                vcpus: flags
                    .lend_vcpus
                    .or(from_file.lend_vcpus)
                    .unwrap_or(defaults.vcpus),
                memory_mib: flags
                    .lend_memory_mib
                    .or(size(&from_file.lend_memory, "lend_memory")?)
                    .unwrap_or(defaults.memory_mib),
                disk_mib: flags
                    .lend_disk_mib
                    .or(size(&from_file.lend_disk, "lend_disk")?)
                    .unwrap_or(defaults.disk_mib),
            },
            max_migrations: flags
                .max_migrations
                .or(from_file.max_migrations)
                .unwrap_or(DEFAULT_MAX_MIGRATIONS),
        };
        if config.max_migrations == 0 {
            bail!("max_migrations must be at least 1 (--max-migrations or capacity.toml)");
        }
        Ok(config)
    }
}

impl Lending {
    /// From the host: vCPUs = 4 per host CPU; memory = total minus a reserve of
    /// 10% (at least 1 GiB) for the host; disk = 90% of the space free now on the
    /// filesystem holding the guests' data disks.
    pub fn host_defaults(disk_dir: &Path) -> Lending {
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1);
        let total_mib = sysinfo::System::new()
            .map(|mut s| {
                s.refresh_memory();
                s.total_memory() >> 20
            })
            .unwrap_or(0);
        let reserve_mib = (total_mib / 10).max(1024);
        Lending {
            vcpus: cpus * VCPUS_PER_CPU,
            memory_mib: total_mib.saturating_sub(reserve_mib),
            disk_mib: free_mib_under(disk_dir).map_or(0, |free| free / 10 * 9),
        }
    }
}

/// Free space of the filesystem that holds `dir` (or would, once created).
pub(crate) fn free_mib_under(dir: &Path) -> Option<u64> {
    // The nearest existing ancestor: the dir itself may not be made yet.
    let existing = dir.ancestors().find(|d| d.exists())?;
    let stat = rustix::fs::statvfs(existing).ok()?;
    Some(stat.f_bavail.saturating_mul(stat.f_frsize) >> 20)
}

/// A size with a binary unit: "512MiB", "4GiB", "1.5G", "20 GiB" (K, M, G, T with
/// or without "iB"). In MiB, rounded up.
pub fn parse_size_mib(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a size (e.g. 512MiB, 4GiB)"))?;
    let mib_per_unit = match unit.trim() {
        "" => return Err(format!("'{text}' has no unit: write e.g. 512MiB or 4GiB")),
        "K" | "KiB" => 1.0 / 1024.0,
        "M" | "MiB" => 1.0,
        "G" | "GiB" => 1024.0,
        "T" | "TiB" => 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "'{text}': unknown unit '{other}' (use KiB, MiB, GiB or TiB)"
            ));
        }
    };
    let mib = (value * mib_per_unit).ceil();
    if !mib.is_finite() || mib > 1e15 {
        return Err(format!("'{text}' is too large"));
    }
    Ok(mib as u64)
}

/// "512 MiB", "1 GiB", "1.5 GiB".
pub fn fmt_mib(mib: u64) -> String {
    if mib >= 1024 && mib.is_multiple_of(1024) {
        format!("{} GiB", mib / 1024)
    } else if mib >= 1024 {
        format!("{:.1} GiB", mib as f64 / 1024.0)
    } else {
        format!("{mib} MiB")
    }
}

/// What an incoming VM needs from this host.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VmRequirements {
    pub name: VmName,
    pub uuid: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    /// Virtual size of its disks, MiB.
    pub disk_mib: u64,
    /// Files its definition boots from (kernel, initramfs, firmware): they must
    /// exist here at the same paths.
    pub boot_files: Vec<PathBuf>,
}

/// Why a host refuses a VM. Displayed after "<peer> refuses <vm>: ".
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    Invalid(String),
    NameTaken(VmName),
    UuidTaken(String),
    Arriving(VmName),
    MissingFile(PathBuf),
    Short {
        resource: Resource,
        need: u64,
        left: u64,
        lent: u64,
    },
    Busy {
        running: u32,
        limit: u32,
    },
    Hypervisor(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Vcpus,
    Memory,
    Disk,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Invalid(why) => write!(f, "{why}"),
            Refusal::NameTaken(name) => write!(f, "a VM named '{name}' exists already here"),
            Refusal::UuidTaken(uuid) => write!(f, "a VM with UUID {uuid} exists already here"),
            Refusal::Arriving(name) => write!(f, "a VM named '{name}' is arriving here already"),
            Refusal::MissingFile(path) => write!(
                f,
                "{} is missing here (the VM boots from it; build the same image here: peervisor image build)",
                path.display()
            ),
            Refusal::Short {
                resource: Resource::Vcpus,
                need,
                left,
                lent,
            } => write!(
                f,
                "needs {need} vCPU{}, {left} left of {lent} lent",
                if *need == 1 { "" } else { "s" }
            ),
            Refusal::Short {
                resource,
                need,
                left,
                lent,
            } => write!(
                f,
                "needs {} {}, {} left of {} lent",
                fmt_mib(*need),
                if *resource == Resource::Memory {
                    "memory"
                } else {
                    "disk"
                },
                fmt_mib(*left),
                fmt_mib(*lent)
            ),
            Refusal::Busy { running, limit } => write!(
                f,
                "already receiving {running} migration(s) (limit {limit}); try again when one ends"
            ),
            Refusal::Hypervisor(why) => write!(f, "hypervisor unavailable: {why}"),
        }
    }
}

/// What the VMs here (and those on their way) take.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub vcpus: u32,
    pub memory_mib: u64,
    pub disk_mib: u64,
}

/// Whether `req` fits in what is left of `lent` after `used`.
pub fn fits(lent: &Lending, used: &Usage, req: &VmRequirements) -> Result<(), Refusal> {
    let check = |resource, need: u64, used: u64, lent: u64| {
        let left = lent.saturating_sub(used);
        if need > left {
            Err(Refusal::Short {
                resource,
                need,
                left,
                lent,
            })
        } else {
            Ok(())
        }
    };
    check(
        Resource::Vcpus,
        u64::from(req.vcpus),
        u64::from(used.vcpus),
        u64::from(lent.vcpus),
    )?;
    check(
        Resource::Memory,
        req.memory_mib,
        used.memory_mib,
        lent.memory_mib,
    )?;
    check(Resource::Disk, req.disk_mib, used.disk_mib, lent.disk_mib)
}

/// Accepted incoming VMs that have not arrived yet.
#[derive(Default)]
pub struct Reservations {
    next: AtomicU64,
    held: Arc<Mutex<HashMap<u64, VmRequirements>>>,
}

/// One incoming VM's share of the lent capacity; given back when dropped (hold it
/// until the VM is defined here, or the transfer failed).
pub struct Reservation {
    id: u64,
    held: Arc<Mutex<HashMap<u64, VmRequirements>>>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.remove(&self.id);
    }
}

/// vCPUs and memory of the VMs that hold them (running or paused).
fn active_usage(vms: &[VmView]) -> Usage {
    vms.iter()
        .filter(|v| matches!(v.state, VmState::Running | VmState::Paused | VmState::Other))
        .fold(Usage::default(), |u, v| Usage {
            vcpus: u.vcpus + v.vcpus,
            memory_mib: u.memory_mib + v.memory_mib,
            disk_mib: u.disk_mib,
        })
}

/// What this host lends to incoming VMs, what of it is promised to VMs on
/// their way, and the hypervisor that says what the VMs here take.
pub struct Capacity {
    config: CapacityConfig,
    reservations: Reservations,
    host: Host,
}

impl Capacity {
    pub fn new(config: CapacityConfig, host: Host) -> Capacity {
        Capacity {
            config,
            reservations: Reservations::default(),
            host,
        }
    }

    /// Parallel migrations (and replications) each way.
    pub fn max_migrations(&self) -> u32 {
        self.config.max_migrations
    }

    /// For `status`: what is lent, and what the VMs here use of it.
    pub fn view(&self, vms: &[VmView]) -> LendingView {
        let used = active_usage(vms);
        let lent = &self.config.lending;
        LendingView {
            vcpus: lent.vcpus,
            vcpus_used: used.vcpus,
            memory_mib: lent.memory_mib,
            memory_used_mib: used.memory_mib,
            disk_mib: lent.disk_mib,
            max_migrations: self.config.max_migrations,
        }
    }

    /// The destination's checks for an incoming VM (migration or replica), before
    /// anything moves: a valid, free name and UUID, its boot files present here,
    /// and vCPUs, memory and disk within what this host lends. On success the
    /// VM's share is reserved until the returned guard is dropped.
    pub async fn check_incoming(&self, req: &VmRequirements) -> Result<Reservation, Refusal> {
        (req.name.validate()).map_err(|e| Refusal::Invalid(e.to_string()))?;
        if req.vcpus == 0 || req.memory_mib == 0 {
            return Err(Refusal::Invalid("the VM has no vCPU or no memory".into()));
        }
        let vms = self
            .host
            .list()
            .await
            .map_err(|e| Refusal::Hypervisor(format!("{e:#}")))?;
        if vms.iter().any(|v| v.name == req.name) {
            return Err(Refusal::NameTaken(req.name.clone()));
        }
        if vms.iter().any(|v| v.uuid == req.uuid) {
            return Err(Refusal::UuidTaken(req.uuid.clone()));
        }
        if let Some(missing) = req.boot_files.iter().find(|f| !f.is_file()) {
            return Err(Refusal::MissingFile(missing.clone()));
        }
        let disk_mib = self
            .host
            .disk_mib_in_use()
            .await
            .map_err(|e| Refusal::Hypervisor(format!("{e:#}")))?;
        let mut used = Usage {
            disk_mib,
            ..active_usage(&vms)
        };

        let reservations = &self.reservations;
        let mut held = reservations.held.lock().unwrap_or_else(|e| e.into_inner());
        // An accepted VM counts once: as a reservation until libvirt lists it.
        for r in held
            .values()
            .filter(|r| !vms.iter().any(|v| v.name == r.name))
        {
            if r.name == req.name {
                return Err(Refusal::Arriving(req.name.clone()));
            }
            used.vcpus += r.vcpus;
            used.memory_mib += r.memory_mib;
            used.disk_mib += r.disk_mib;
        }
        fits(&self.config.lending, &used, req)?;
        let id = reservations.next.fetch_add(1, Ordering::Relaxed);
        held.insert(id, req.clone());
        Ok(Reservation {
            id,
            held: reservations.held.clone(),
        })
    }

    /// The requirements of one of this host's VMs, as a destination would check them.
    pub async fn requirements_of(&self, vm: &VmView) -> Result<VmRequirements> {
        let footprint = self
            .host
            .footprint(&vm.name)
            .await
            .with_context(|| format!("reading what VM '{}' needs", vm.name))?;
        Ok(VmRequirements {
            name: vm.name.clone(),
            uuid: vm.uuid.clone(),
            vcpus: vm.vcpus,
            memory_mib: vm.memory_mib,
            disk_mib: footprint.disk_mib,
            boot_files: footprint.boot_files,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(vcpus: u32, memory_mib: u64, disk_mib: u64) -> VmRequirements {
        VmRequirements {
            name: "web-1".into(),
            vcpus,
            memory_mib,
            disk_mib,
            ..VmRequirements::default()
        }
    }

    #[test]
    fn a_vm_fits_in_what_is_left_or_is_refused_naming_the_resource() {
        let lent = Lending {
            vcpus: 4,
            memory_mib: 1024,
            disk_mib: 10 * 1024,
        };
        let used = Usage {
            vcpus: 2,
            memory_mib: 768,
            disk_mib: 0,
        };
        assert_eq!(fits(&lent, &used, &req(2, 256, 10 * 1024)), Ok(()));
        let err = fits(&lent, &used, &req(1, 512, 0)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "needs 512 MiB memory, 256 MiB left of 1 GiB lent"
        );
        let err = fits(&lent, &used, &req(3, 64, 0)).unwrap_err();
        assert_eq!(err.to_string(), "needs 3 vCPUs, 2 left of 4 lent");
        let err = fits(&lent, &used, &req(1, 64, 10 * 1024 + 1)).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("needs 10.0 GiB disk, 10 GiB left of 10 GiB lent"),
            "{err}"
        );
        // Over-committed already (limits lowered after VMs arrived): nothing left.
        let over = Usage { vcpus: 9, ..used };
        let err = fits(&lent, &over, &req(1, 64, 0)).unwrap_err();
        assert_eq!(err.to_string(), "needs 1 vCPU, 0 left of 4 lent");
    }

    #[test]
    fn refusals_say_what_to_do() {
        let missing = Refusal::MissingFile(PathBuf::from("/img/vmlinux")).to_string();
        assert!(
            missing.starts_with("/img/vmlinux is missing here") && missing.contains("image build"),
            "{missing}"
        );
        let busy = Refusal::Busy {
            running: 2,
            limit: 2,
        };
        assert_eq!(
            busy.to_string(),
            "already receiving 2 migration(s) (limit 2); try again when one ends"
        );
    }

    #[test]
    fn sizes_need_a_binary_unit() {
        assert_eq!(parse_size_mib("4GiB"), Ok(4096));
        assert_eq!(parse_size_mib("512MiB"), Ok(512));
        assert_eq!(parse_size_mib("1.5G"), Ok(1536));
        assert_eq!(parse_size_mib(" 20 GiB"), Ok(20 * 1024));
        assert_eq!(parse_size_mib("1K"), Ok(1));
        assert!(parse_size_mib("4").unwrap_err().contains("no unit"));
        assert!(
            parse_size_mib("4GB")
                .unwrap_err()
                .contains("unknown unit 'GB'")
        );
        assert!(parse_size_mib("lots").unwrap_err().contains("not a size"));
        assert!(parse_size_mib("1e300T").is_err());
    }

    #[test]
    fn flags_win_over_the_file_which_wins_over_the_host() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("capacity.toml");
        let host = Lending {
            vcpus: 8,
            memory_mib: 20 * 1024,
            disk_mib: 100 * 1024,
        };
        let none = CapacityFlags::default();
        let c = CapacityConfig::resolve(none, &file, host).unwrap();
        assert_eq!(c.lending, host, "no file, no flags: the host's defaults");
        assert_eq!(c.max_migrations, DEFAULT_MAX_MIGRATIONS);

        std::fs::write(&file, "lend_memory = \"4GiB\"\nmax_migrations = 1\n").unwrap();
        let c = CapacityConfig::resolve(none, &file, host).unwrap();
        assert_eq!(c.lending.memory_mib, 4096);
        assert_eq!(c.lending.vcpus, 8);
        assert_eq!(c.max_migrations, 1);
        let flags = CapacityFlags {
            lend_memory_mib: Some(512),
            ..none
        };
        let c = CapacityConfig::resolve(flags, &file, host).unwrap();
        assert_eq!(c.lending.memory_mib, 512);

        std::fs::write(&file, "lend_memory = \"4\"\n").unwrap();
        let err = CapacityConfig::resolve(none, &file, host)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("capacity.toml") && err.contains("lend_memory") && err.contains("no unit"),
            "{err}"
        );
        std::fs::write(&file, "lend_cpus = 3\n").unwrap();
        let err = CapacityConfig::resolve(none, &file, host)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("capacity.toml") && err.contains("lend_cpus"),
            "{err}"
        );
    }

    #[test]
    fn host_defaults_leave_the_host_a_reserve() {
        let lending = Lending::host_defaults(Path::new("/"));
        assert!(lending.vcpus >= VCPUS_PER_CPU);
        let total = sysinfo::System::new().unwrap();
        let mut total = total;
        total.refresh_memory();
        let total_mib = total.total_memory() >> 20;
        assert!(lending.memory_mib > 0 && lending.memory_mib + 1024 <= total_mib);
    }

    #[test]
    fn a_reservation_is_given_back_when_dropped() {
        let reservations = Reservations::default();
        let r = Reservation {
            id: 1,
            held: reservations.held.clone(),
        };
        reservations.held.lock().unwrap().insert(1, req(1, 64, 0));
        drop(r);
        assert!(reservations.held.lock().unwrap().is_empty());
    }
}
