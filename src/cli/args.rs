//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use libp2p::Multiaddr;

use crate::hypervisor::accel::AccelChoice;
use crate::names::{PeerRef, ServiceName, VmName};

use super::config::CONFIG_ENV;
use super::node_args::parse_duration;
pub use super::node_args::{NodeArgs, network_key_source};

#[derive(Parser, Debug)]
#[command(
    name = "peervisor",
    version,
    about = "Peer-to-peer hosting, discovery and delivery of services in virtual machines",
    long_about = "Without a command, opens the operator console: attached to the node that \
                  runs on this host (the system node, or yours) when one does, else on a \
                  node embedded in the console. The node options below are the embedded \
                  node's; `peervisor node --help` describes them."
)]
pub struct Cli {
    /// The node's data dir (identity, network key, control socket, libvirt daemon).
    /// Default: the config file's data-dir, else /var/lib/peervisor for root (the
    /// system node), else $XDG_DATA_HOME/peervisor.
    #[arg(long, global = true, env = "PEERVISOR_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// The node's config file (keys: the node's flags without --). Default for the
    /// system node (root, no --data-dir): /etc/peervisor/config.toml if it exists.
    #[arg(long, global = true, env = CONFIG_ENV, value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Option<TopCommand>,

    /// Attach the console to a running node: the one of DATA_DIR, or by default the
    /// node of --data-dir, else the system node, else your own.
    #[arg(long, value_name = "DATA_DIR", num_args = 0..=1)]
    pub attach: Option<Option<PathBuf>>,

    /// Open the console on a node embedded in it even when a node runs on this host.
    #[arg(long, conflicts_with = "attach")]
    pub embed: bool,

    #[command(flatten)]
    pub look: LookArgs,

    #[command(flatten)]
    pub node: NodeArgs,
}

/// How the console looks.
#[derive(Args, Debug, Clone, Default)]
pub struct LookArgs {
    /// Console theme: default (dark), light, 16color, monochrome, or a user theme
    /// in ~/.config/peervisor/themes/. NO_COLOR wins over it.
    #[arg(long, env = "PEERVISOR_THEME")]
    pub theme: Option<String>,

    /// Console keymap: default, vim, or a keymap file (default: the user's
    /// ~/.config/peervisor/keymap.toml over the default keymap).
    #[arg(long, env = "PEERVISOR_KEYMAP")]
    pub keymap: Option<String>,
}

impl Cli {
    /// Refuses a console option given before a command it does not apply to
    /// (`peervisor --listen ADDR vm list`): clap accepts it there.
    pub fn check_console_options(&self, matches: &clap::ArgMatches) -> Result<(), String> {
        let Some((name, _)) = matches.subcommand() else {
            return Ok(());
        };
        let console = NodeArgs::augment_args(LookArgs::augment_args(clap::Command::new("console")));
        let ids = console
            .get_arguments()
            .map(|a| a.get_id().as_str())
            .chain(["attach", "embed"]);
        // A command with an option of the same name (`bench --image-dir`) has it
        // for itself: clap passes a global option's value up to here too.
        let command = <Cli as clap::CommandFactory>::command();
        let own = |id: &str| {
            command
                .find_subcommand(name)
                .is_some_and(|c| c.get_arguments().any(|a| a.get_id() == id))
        };
        for id in ids {
            if !own(id) && matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine)
            {
                return Err(format!(
                    "--{} is an option of the console, not of `peervisor {name}`{}",
                    id.replace('_', "-"),
                    if name == "node" {
                        ": put it after `node`"
                    } else {
                        ""
                    }
                ));
            }
        }
        Ok(())
    }
}

impl LookArgs {
    pub fn look(&self) -> crate::console::Look {
        crate::console::Look {
            theme: self.theme.clone(),
            keymap: self.keymap.clone(),
        }
    }
}

/// What `peervisor COMMAND` runs: a node, which main.rs starts, or one of the
/// commands cli/ runs (the two are separate types, so neither side has a case
/// it cannot handle).
#[derive(Subcommand, Debug)]
pub enum TopCommand {
    /// Run a headless peer node (serves the control socket until SIGINT/SIGTERM;
    /// as a service: `systemctl start peervisor`).
    Node(Box<NodeArgs>),
    #[command(flatten)]
    Cli(Command),
    #[command(flatten)]
    Host(HostCommand),
}

/// The commands about this host's set-up, which read or write the config file
/// themselves (it may be missing or bad): cli/ runs them before any config is read.
#[derive(Subcommand, Debug)]
pub enum HostCommand {
    /// Join the overlay of a host that ran `peervisor invite`: writes the network
    /// key and a config file (bootstrap, network-key, data-dir), redeems the
    /// token with the inviter, and records the grants of its trust group. Run it
    /// before starting the node.
    ///
    /// The keys go into --config FILE (created if missing), by default
    /// /etc/peervisor/config.toml for root, else DATA_DIR/config.toml.
    Join {
        token: String,
        #[arg(long)]
        json: bool,
    },
    /// The node's config file.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Check this host and its node: config, data dir, disk space, key
    /// permissions, accelerator, libvirt, ports, peers, clock; one line each,
    /// with a fix for what is wrong. Exit status 1 when a check failed.
    Doctor {
        #[arg(long)]
        json: bool,
    },
}

/// The commands cli/ runs: over a node's control socket, or on their own.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show this node's peers (with latency) and VMs.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Manage the VMs hosted on this node.
    #[command(subcommand)]
    Vm(VmCommand),
    /// Live-migrate a running VM to another peer over the overlay.
    ///
    /// Without --wait, returns once the destination has accepted the VM (its checks
    /// passed: access, name, image files, lent capacity) and the transfer runs on;
    /// a refusal is an error here, before anything moves. Follow the transfer in
    /// `peervisor status` or the console. With --wait, returns when it has ended.
    Migrate {
        /// VM name on this peer.
        vm: VmName,
        /// Destination: peer id, unique prefix of one, or nickname.
        #[arg(long, required_unless_present = "abort")]
        to: Option<PeerRef>,
        /// Longest pause of the guest at switch-over, in milliseconds.
        #[arg(long, value_name = "MS", conflicts_with = "abort")]
        max_downtime: Option<u64>,
        /// Cap on the transfer rate, in MiB/s.
        #[arg(long, value_name = "MIB_S", conflicts_with = "abort")]
        bandwidth: Option<u64>,
        /// Cancel the running migration of VM instead; it keeps running here.
        #[arg(long, conflicts_with = "to")]
        abort: bool,
        /// Wait until the migration has ended: print its figures, or fail (exit
        /// status 1) if it did not complete, in which case the VM keeps running here.
        #[arg(long, conflicts_with = "abort")]
        wait: bool,
        /// Migrate a VM peervisor did not create (otherwise refused: it is shown read-only).
        #[arg(long, conflicts_with = "abort")]
        force: bool,
        #[arg(long)]
        json: bool,
    },
    /// Copy a VM (definition and data disk, sparse) to another peer and start it
    /// there under a new name, as one more provider of the same services.
    Replicate {
        /// VM name on this peer (it keeps running).
        vm: VmName,
        /// Destination: peer id, unique prefix of one, or nickname.
        #[arg(long)]
        to: PeerRef,
        /// Name of the replica (default: VM-r1, VM-r2, ... whichever is free).
        #[arg(long)]
        name: Option<VmName>,
        #[arg(long)]
        json: bool,
    },
    /// Services of the whole overlay, with their providers, latency and load.
    Services {
        /// Only services of this type (e.g. http).
        #[arg(long = "type", value_name = "TYPE")]
        kind: Option<String>,
        /// Only services with this tag (KEY=VALUE; repeatable).
        #[arg(long, value_name = "KEY=VALUE")]
        tag: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Resolve a service through the DHT, even where gossip has not reached.
    Find {
        name: ServiceName,
        #[arg(long)]
        json: bool,
    },
    /// Forward a local port to a service through the overlay (kept by the node).
    Consume {
        service: ServiceName,
        /// Local port (default: any free port).
        #[arg(long)]
        local_port: Option<u16>,
        /// Address to listen on (default 127.0.0.1; others expose the service).
        #[arg(long)]
        bind: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Stop forwarding a consumed service.
    Unconsume {
        service: ServiceName,
        /// Print the outcome as JSON (docs/cli-json.md).
        #[arg(long)]
        json: bool,
    },
    /// Publish a TCP service of this host (no VM) in the overlay.
    Expose {
        name: ServiceName,
        /// HOST:PORT the service listens on.
        #[arg(long)]
        target: String,
        #[arg(long = "type", value_name = "TYPE")]
        kind: Option<String>,
        /// Only this peer (id or nickname) may consume it; repeat for several.
        #[arg(long, value_name = "PEER")]
        allow: Vec<PeerRef>,
        /// Serve at most N connections at once (from all peers together).
        #[arg(long, value_name = "N")]
        max_conns: Option<u32>,
        /// Print the outcome as JSON (docs/cli-json.md).
        #[arg(long)]
        json: bool,
    },
    /// Withdraw a service published with `expose`.
    Unexpose {
        name: ServiceName,
        /// Print the outcome as JSON (docs/cli-json.md).
        #[arg(long)]
        json: bool,
    },
    /// Build guest images.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Which peers may consume from or control this host.
    #[command(subcommand)]
    Peers(PeersCommand),
    /// Make a one-line token that lets one new host join this overlay
    /// (`peervisor join TOKEN` there). It carries the network key: hand it over
    /// as you would the key. Single use; expires.
    Invite(InviteArgs),
    /// VMs with live figures, as a plain table every interval (like virt-top -b).
    Top {
        /// Seconds between tables.
        #[arg(long, short = 'd', default_value_t = 1.0)]
        delay: f64,
        /// Stop after this many tables (default: until interrupted).
        #[arg(long, short = 'n')]
        iterations: Option<u64>,
        /// Print the outcome as JSON (docs/cli-json.md).
        #[arg(long)]
        json: bool,
    },
    /// Benchmarks, each printing its baseline measured in the same run.
    Bench(BenchArgs),
    /// Start a local overlay of peers with a guest and open the console on it.
    Demo(DemoArgs),
    /// Print the console's effective keymap (shipped defaults plus your keymap.toml).
    Keys(LookArgs),
    /// Print a shell completion script, e.g. `peervisor completions bash >
    /// ~/.local/share/bash-completion/completions/peervisor`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (peervisor.1 and one per subcommand) into a directory.
    Man {
        #[arg(long, value_name = "DIR")]
        out_dir: PathBuf,
    },
    /// Tools for testing peervisor itself.
    #[command(subcommand, hide = true)]
    Dev(DevCommand),
}

/// `peervisor invite`: make, list or revoke invitations.
#[derive(Args, Debug)]
pub struct InviteArgs {
    /// What the new host may do here: consume, or control (migrate VMs in).
    /// control also joins this host's trust group: its members may all
    /// migrate VMs into each other.
    #[arg(long, default_value = "consume", conflicts_with_all = ["list", "revoke"])]
    pub role: crate::control::Role,
    /// How long the token stays valid, e.g. 30m, 1h, 2days.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub expires: std::time::Duration,
    /// Address the new host should reach this one at (repeatable; default:
    /// this node's listen addresses), e.g. /ip4/203.0.113.5/tcp/7470.
    #[arg(long, value_name = "MULTIADDR")]
    pub address: Vec<Multiaddr>,
    /// List this host's invitations instead.
    #[arg(long)]
    pub list: bool,
    /// Revoke the open invitation with this id instead.
    #[arg(long, value_name = "ID", conflicts_with = "list")]
    pub revoke: Option<String>,
    #[arg(long)]
    pub json: bool,
}

/// Hidden: tools for tests of peervisor itself, not for operators.
#[derive(Subcommand, Debug)]
pub enum DevCommand {
    /// Join the overlay (--network-key, --bootstrap) as the member whose identity
    /// is in --data-dir (no node runs there), send one hand-made replication offer
    /// frame to a peer, and print its answer as JSON.
    ReplicaOffer {
        /// Peer id of the destination.
        #[arg(long)]
        to: libp2p::PeerId,
        /// File holding the offer's body (any bytes, e.g. JSON).
        #[arg(long)]
        body: PathBuf,
        /// Length to put in the frame's prefix (default: the body's).
        #[arg(long)]
        declare: Option<u32>,
        /// Keep the stream open after the body, as a sender that stalls.
        #[arg(long)]
        stall: bool,
        /// Address of a member to join through (repeatable).
        #[arg(long)]
        bootstrap: Vec<Multiaddr>,
        /// The overlay's network key file (else PEERVISOR_NETWORK_KEY).
        #[arg(long, value_name = "FILE")]
        network_key: Option<PathBuf>,
    },
    /// Join the overlay as the member whose identity is in --data-dir (no node
    /// runs there), announce one legacy service (records kept for hours, so
    /// only a departure report drops them), tell a peer "I am trimming my
    /// connection to you" without closing it, print the answer as a JSON line,
    /// then stay: a test stops the process to make this member fall silent.
    TrimNotice {
        /// Peer id of the peer to tell.
        #[arg(long)]
        to: libp2p::PeerId,
        /// The service to announce.
        #[arg(long)]
        service: String,
        /// Address of a member to join through (repeatable).
        #[arg(long)]
        bootstrap: Vec<Multiaddr>,
        /// The overlay's network key file (else PEERVISOR_NETWORK_KEY).
        #[arg(long, value_name = "FILE")]
        network_key: Option<PathBuf>,
    },
    /// Open the full-screen console on no node and hand the terminal to a
    /// session that prints a line, then panics (or, with --ok, ends): the
    /// console must take the screen back either way.
    ConsoleTakeover {
        #[arg(long)]
        ok: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum VmCommand {
    /// List VMs on this node.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Create a VM from an image and start it (from a TOML manifest, or flags).
    Create {
        /// VM name (default: the manifest's).
        name: Option<VmName>,
        /// Manifest file: name, vcpus, memory_mib, data_disk_mib, image, [[services]].
        #[arg(long, short = 'f', value_name = "FILE")]
        manifest: Option<PathBuf>,
        #[command(flatten)]
        flags: CreateFlags,
        /// Print the outcome as JSON (docs/cli-json.md).
        #[arg(long)]
        json: bool,
    },
    /// Take a VM defined outside peervisor (virsh, virt-manager) under its
    /// wing: its services (from the manifest; else HTTP on port 80) are
    /// published and it can be migrated. Nothing else of it changes.
    Adopt {
        name: VmName,
        /// Manifest file whose [[services]] the VM provides (its name must match).
        #[arg(long, short = 'f', value_name = "FILE")]
        manifest: Option<PathBuf>,
        /// Print the outcome as JSON (docs/cli-json.md).
        #[arg(long)]
        json: bool,
    },
    /// Undo `vm adopt`: the VM is listed as foreign again, its services withdrawn.
    Release {
        name: VmName,
        /// Print the outcome as JSON (docs/cli-json.md).
        #[arg(long)]
        json: bool,
    },
    /// Start a stopped VM.
    Start {
        name: VmName,
        /// Act on a VM peervisor did not create.
        #[arg(long)]
        force: bool,
        /// Print the outcome as JSON (docs/cli-json.md).
        #[arg(long)]
        json: bool,
    },
    /// Shut a VM down (ACPI power button; powered off after --timeout).
    Stop {
        name: VmName,
        /// Power off at once instead.
        #[arg(long)]
        hard: bool,
        /// Seconds to wait for the guest before powering it off.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
        /// Act on a VM peervisor did not create.
        #[arg(long)]
        force: bool,
        /// Print the outcome as JSON (docs/cli-json.md).
        #[arg(long)]
        json: bool,
    },
    /// Pause a running VM (it keeps its memory).
    Pause {
        name: VmName,
        #[arg(long)]
        force: bool,
        /// Print the outcome as JSON (docs/cli-json.md).
        #[arg(long)]
        json: bool,
    },
    /// Resume a paused VM.
    Resume {
        name: VmName,
        #[arg(long)]
        force: bool,
        /// Print the outcome as JSON (docs/cli-json.md).
        #[arg(long)]
        json: bool,
    },
    /// Power off and delete a VM with its disks.
    Rm {
        name: VmName,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
        /// Act on a VM peervisor did not create.
        #[arg(long)]
        force: bool,
        /// Print the outcome as JSON (docs/cli-json.md).
        #[arg(long)]
        json: bool,
    },
    /// A VM's live figures: CPU, memory, disk and network rates.
    Stats {
        name: VmName,
        #[arg(long)]
        json: bool,
        /// Print a new line every second until interrupted.
        #[arg(long)]
        watch: bool,
    },
    /// Attach to a VM's serial console, here or on another peer that grants
    /// this one the control role (like `virsh console`). Ctrl-] detaches.
    Console { name: VmName },
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Check a config file (default: --config, else /etc/peervisor/config.toml):
    /// every key known, every value valid. Exit status 1 names the file, line and key.
    Check {
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum PeersCommand {
    /// Grant a peer a role on this host (control lets it migrate VMs here).
    Allow {
        /// Peer id, or nickname of a connected peer.
        peer: PeerRef,
        #[arg(long, default_value = "control")]
        role: crate::control::Role,
        /// Print the outcome as JSON (docs/cli-json.md).
        #[arg(long)]
        json: bool,
    },
    /// Reduce a peer to observing: it may neither consume nor control.
    Deny {
        peer: PeerRef,
        /// Print the outcome as JSON (docs/cli-json.md).
        #[arg(long)]
        json: bool,
    },
    /// Drop a peer's grant: it gets the default role again.
    Forget {
        peer: PeerRef,
        /// Print the outcome as JSON (docs/cli-json.md).
        #[arg(long)]
        json: bool,
    },
    /// List grants.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Build (or reuse the cached) guest image from Debian packages.
    Build {
        #[arg(long, default_value = crate::image::DEFAULT_IMAGE)]
        name: String,
        /// Where images are kept.
        #[arg(long)]
        image_dir: Option<PathBuf>,
        /// Also make it a bootable qcow2 disk (IMAGE_DIR/NAME/disk.qcow2:
        /// syslinux, the kernel, the initramfs) to import as a base image.
        #[arg(long)]
        disk: bool,
        /// Print the outcome as JSON (docs/cli-json.md).
        #[arg(long)]
        json: bool,
    },
    /// Keep a disk image (qcow2 or raw) as a base image for `vm create --disk`,
    /// with its SHA-256 (checked whenever a VM is made from it).
    Import {
        /// The image file.
        file: PathBuf,
        /// Its name here (default: the file name without extension).
        #[arg(long)]
        name: Option<String>,
        /// Where images are kept.
        #[arg(long)]
        image_dir: Option<PathBuf>,
        /// Print the outcome as JSON (docs/cli-json.md).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// How many peers to start.
    #[arg(long, default_value_t = 3)]
    pub peers: usize,
    /// Start the overlay and the guest, print how to reach them, and exit without a console
    /// (the peers keep running until `peervisor demo --stop`).
    #[arg(long)]
    pub no_console: bool,
    /// Stop a demo started with --no-console.
    #[arg(long)]
    pub stop: bool,
    /// Accelerator for the demo's guests: auto (probe), kvm or tcg.
    #[arg(long, default_value = "auto")]
    pub accel: AccelChoice,
    /// Where guest images are kept.
    #[arg(long, value_name = "DIR")]
    pub image_dir: Option<PathBuf>,
    #[command(flatten)]
    pub look: LookArgs,
}

/// `peervisor bench`: the benchmark, and what the guests it boots need.
#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: crate::bench::BenchCommand,
    /// Accelerator for the guests benchmarks boot: auto (probe), kvm or tcg.
    #[arg(long, global = true, default_value = "auto")]
    pub accel: AccelChoice,
    /// Where guest images are kept.
    #[arg(long, global = true, value_name = "DIR")]
    pub image_dir: Option<PathBuf>,
    /// Network namespace of the node's guests (`bench boot`).
    #[arg(long, global = true, default_value = "peervisor")]
    pub guest_netns: String,
}

/// `vm create`'s flags that override the manifest.
#[derive(Args, Debug)]
pub struct CreateFlags {
    #[arg(long)]
    pub vcpus: Option<u32>,
    #[arg(long = "memory", value_name = "MIB")]
    pub memory_mib: Option<u64>,
    #[arg(long)]
    pub image: Option<String>,
    /// Attach a new qcow2 data disk of this size (the guest mounts it on /data).
    #[arg(long = "data-disk", value_name = "MIB")]
    pub data_disk_mib: Option<u64>,
    /// Plug its NIC into this libvirt network (e.g. default); the guest asks
    /// the network's DHCP for an address.
    #[arg(long, value_name = "NAME", conflicts_with = "bridge")]
    pub network: Option<String>,
    /// Plug its NIC into this host bridge (e.g. br0) instead.
    #[arg(long, value_name = "BR")]
    pub bridge: Option<String>,
    /// Boot this disk image (an imported one's name, or a path to a qcow2 or
    /// raw file) on a copy-on-write overlay, instead of the kernel image.
    #[arg(long, value_name = "IMAGE")]
    pub disk: Option<String>,
    /// With --disk: run on the image itself (its changes stay in it).
    #[arg(long, requires = "disk")]
    pub no_overlay: bool,
    /// With a disk image: cloud-init user-data (#cloud-config or a #! script)
    /// for a NoCloud seed attached to the VM (checked before anything is made).
    #[arg(long = "cloud-init", value_name = "FILE")]
    pub cloud_init: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// clap's own checks of the whole command line, and a parse that reaches a
    /// subcommand under the node's global flags (clap panics there when a
    /// global flag shares a name with the subcommand's, e.g. --network).
    #[test]
    fn the_command_line_is_consistent() {
        use clap::Parser;
        super::Cli::command().debug_assert();
        let cli = super::Cli::try_parse_from([
            "peervisor",
            "vm",
            "create",
            "web-1",
            "--network",
            "default",
        ])
        .unwrap();
        let text = format!("{cli:?}");
        assert!(text.contains("network: Some(\"default\")"), "{text}");
        let cli =
            super::Cli::try_parse_from(["peervisor", "vm", "create", "web-1", "--bridge", "br0"])
                .unwrap();
        let text = format!("{cli:?}");
        assert!(text.contains("bridge: Some(\"br0\")"), "{text}");
    }

    /// A console option before another command is refused, but a command's own
    /// option of the same name (`bench --image-dir`) is its own.
    #[test]
    fn console_options_are_refused_only_where_they_do_not_belong() {
        let check = |words: &[&str]| {
            let matches = super::Cli::command().try_get_matches_from(words).unwrap();
            let cli = <super::Cli as clap::FromArgMatches>::from_arg_matches(&matches).unwrap();
            cli.check_console_options(&matches)
        };
        let refused = check(&[
            "peervisor",
            "--listen",
            "/ip4/127.0.0.1/tcp/1",
            "vm",
            "list",
        ]);
        assert_eq!(
            refused.unwrap_err(),
            "--listen is an option of the console, not of `peervisor vm`"
        );
        check(&[
            "peervisor",
            "bench",
            "penalty",
            "--image-dir",
            "/tmp/images",
        ])
        .unwrap();
        check(&[
            "peervisor",
            "bench",
            "--image-dir",
            "/tmp/images",
            "penalty",
        ])
        .unwrap();
    }
}
