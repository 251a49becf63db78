//! Test harness: real `peervisor node` processes on loopback, driven through the
//! real CLI, cleaned up on drop (VMs destroyed, daemons stopped, namespaces removed).

#![allow(dead_code)]

pub mod failover;
pub mod guests;
pub mod lab;
pub mod natlab;
pub mod tmux;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_peervisor");

/// A TCP echo server on `ip` (this test's namespace), for any number of
/// connections, each on its own thread.
pub fn echo_server(ip: &str) -> u16 {
    let listener = TcpListener::bind((ip, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 || stream.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A network key in hex, different each call.
pub fn fresh_key() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

pub struct NodeOptions<'a> {
    pub nick: &'a str,
    pub key: &'a str,
    pub bootstrap: Option<u16>,
    /// `Some(uri)`: use that libvirt (e.g. test:///default); None: a private daemon.
    pub hypervisor: Option<&'a str>,
    pub guest_netns: &'a str,
    pub extra: &'a [&'a str],
}

/// A node on libvirt's test driver: for tests of the overlay and services, not VMs.
pub fn node(nick: &str, key: &str, bootstrap: Option<u16>) -> TestNode {
    TestNode::start(NodeOptions {
        nick,
        key,
        bootstrap,
        hypervisor: Some("test:///default"),
        guest_netns: "unused",
        extra: &[],
    })
}

pub struct TestNode {
    pub nick: String,
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    /// The command line it runs with, program first (for `restart`).
    args: Vec<String>,
}

impl TestNode {
    pub fn start(opts: NodeOptions) -> TestNode {
        let bootstrap: Vec<String> = opts
            .bootstrap
            .map(|b| format!("/ip4/127.0.0.1/tcp/{b}"))
            .into_iter()
            .collect();
        TestNode::start_in(opts, None, &["127.0.0.1"], &bootstrap)
    }

    /// A node inside network namespace `netns` (None: this one), listening on one
    /// free port at each of `ips`, joining through `bootstrap` (multiaddrs;
    /// `opts.bootstrap` is not used).
    pub fn start_in(
        opts: NodeOptions,
        netns: Option<&str>,
        ips: &[&str],
        bootstrap: &[String],
    ) -> TestNode {
        TestNode::start_prepared(opts, netns, ips, bootstrap, |_| {})
    }

    /// As `start_in`, with `prepare` run on the data dir before the node starts
    /// (e.g. `peervisor join`); a network key it leaves there is kept.
    pub fn start_prepared(
        opts: NodeOptions,
        netns: Option<&str>,
        ips: &[&str],
        bootstrap: &[String],
        prepare: impl FnOnce(&Path),
    ) -> TestNode {
        let wrapper: Vec<String> = match netns {
            Some(ns) => ["ip", "netns", "exec", ns].map(String::from).to_vec(),
            None => Vec::new(),
        };
        TestNode::start_wrapped(opts, wrapper, ips, bootstrap, prepare)
    }

    /// A node whose command line starts with `wrapper` (e.g. `nsenter` into a
    /// lab host's namespaces, `env VAR=...`), listening at each of `ips`, with
    /// `prepare` run on its data dir first.
    pub fn start_wrapped(
        opts: NodeOptions,
        wrapper: Vec<String>,
        ips: &[&str],
        bootstrap: &[String],
        prepare: impl FnOnce(&Path),
    ) -> TestNode {
        let (dir, port, args) = TestNode::command(&opts, wrapper, "node", ips, bootstrap, prepare);
        let mut node = TestNode {
            nick: opts.nick.to_string(),
            port,
            dir,
            child: None,
            args,
        };
        node.spawn();
        node.wait_ready(scaled(Duration::from_secs(60)));
        node
    }

    /// A node embedded in the operator console (`peervisor --embed`: the
    /// console with its node inside, as an operator starts it), on the
    /// loopback. `launch` runs the shell command line it is given (in a tmux,
    /// say) and owns the process: quit the console to stop the node. The
    /// handle reaches the node through its control socket.
    pub fn embedded(opts: NodeOptions, launch: impl FnOnce(&str)) -> TestNode {
        let bootstrap: Vec<String> = opts
            .bootstrap
            .map(|b| format!("/ip4/127.0.0.1/tcp/{b}"))
            .into_iter()
            .collect();
        let (dir, port, args) = TestNode::command(
            &opts,
            Vec::new(),
            "--embed",
            &["127.0.0.1"],
            &bootstrap,
            |_| {},
        );
        launch(&args.join(" "));
        let node = TestNode {
            nick: opts.nick.to_string(),
            port,
            dir,
            child: None,
            args,
        };
        node.wait_ready(scaled(Duration::from_secs(60)));
        node
    }

    /// A fresh data dir (with the network key), a free port, and the command
    /// line of a node: `wrapper`, the binary, `how` (`node`, `--embed`), its
    /// options.
    fn command(
        opts: &NodeOptions,
        wrapper: Vec<String>,
        how: &str,
        ips: &[&str],
        bootstrap: &[String],
        prepare: impl FnOnce(&Path),
    ) -> (tempfile::TempDir, u16, Vec<String>) {
        let dir = tempfile::Builder::new()
            .prefix(&format!("pv-{}-", opts.nick))
            .tempdir()
            .unwrap();
        let port = free_port();
        prepare(dir.path());
        // The overlay's key where an operator puts it: the node's data dir.
        let key_file = dir.path().join("network.key");
        if !key_file.exists() {
            std::fs::write(key_file, opts.key).unwrap();
        }
        // The program and its arguments, kept for `restart`.
        let mut args = wrapper;
        args.push(BIN.to_string());
        args.extend([how.to_string(), "--data-dir".to_string()]);
        args.push(dir.path().to_str().unwrap().into());
        for a in [
            "--nick",
            opts.nick,
            "--guest-netns",
            opts.guest_netns,
            "--destroy-vms-on-exit",
        ] {
            args.push(a.into());
        }
        args.extend(opts.extra.iter().map(|a| a.to_string()));
        for ip in ips {
            args.push("--listen".into());
            args.push(format!("/ip4/{ip}/tcp/{port}"));
        }
        for b in bootstrap {
            args.push("--bootstrap".into());
            args.push(b.clone());
        }
        if let Some(uri) = opts.hypervisor {
            args.push("--hypervisor".into());
            args.push(uri.into());
        }
        (dir, port, args)
    }

    /// Starts the node process (its log appended to `node.log`).
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("node.log"))
            .unwrap();
        let child = Command::new(&self.args[0])
            .args(&self.args[1..])
            // PEERVISOR_TEST_LOG=debug (say) to see more of what the nodes do.
            .env(
                "PEERVISOR_LOG",
                std::env::var("PEERVISOR_TEST_LOG").unwrap_or("info,libp2p=warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn peervisor node");
        self.child = Some(child);
    }

    /// Starts the node again on the same data dir, port and arguments (after
    /// `kill_hard`, as a crashed node is restarted).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart: the node still runs");
        self.spawn();
        self.wait_ready(scaled(Duration::from_secs(60)));
    }

    fn wait_ready(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.cli(&["status", "--json"]).status.success() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("node {} not ready:\n{}", self.nick, self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("node.log")).unwrap_or_default()
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The node process's id (None after `kill_hard`), e.g. for /proc figures.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Runs `peervisor --data-dir <this node> ARGS`.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--data-dir")
            .arg(self.dir.path())
            .args(args)
            .output()
            .expect("run peervisor")
    }

    /// `peervisor consume SERVICE --json EXTRA...`: the local listener's port, or
    /// the CLI's error.
    pub fn try_consume(&self, service: &str, extra: &[&str]) -> Result<u16, String> {
        let mut args = vec!["consume", service, "--json"];
        args.extend_from_slice(extra);
        let out = self.cli(&args);
        if !out.status.success() {
            return Err(stderr(&out));
        }
        let consumption: Value =
            serde_json::from_slice(&out.stdout).map_err(|e| format!("consume --json: {e}"))?;
        consumption["listen"]
            .as_str()
            .and_then(|l| l.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| format!("no port in {consumption}"))
    }

    /// Consumes `service` here (see [`TestNode::try_consume`]); the local port.
    pub fn consume(&self, service: &str, extra: &[&str]) -> u16 {
        self.try_consume(service, extra)
            .unwrap_or_else(|e| panic!("{} consume {service}: {e}", self.nick))
    }

    pub fn status(&self) -> Value {
        let out = self.cli(&["status", "--json"]);
        assert!(out.status.success(), "status failed: {}", stderr(&out));
        serde_json::from_slice(&out.stdout).expect("status --json is JSON")
    }

    pub fn peer_id(&self) -> String {
        self.status()["local"]["peer_id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    pub fn hypervisor_uri(&self) -> String {
        self.status()["local"]["hypervisor"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Nicknames of the peers this node is connected to.
    /// The peer named `nick` in this node's status (`Null` if it is not listed).
    /// The peer named `nick` in this node's status; a connected one first: a
    /// node restarted under the same nick has a new id, and the old one's entry
    /// stays (not connected) until the overlay has seen it go.
    pub fn peer(&self, nick: &str) -> Value {
        let status = self.status();
        let named: Vec<&Value> = status["peers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["nick"] == nick)
            .collect();
        named
            .iter()
            .find(|p| p["connected"] == true)
            .or(named.first())
            .map(|p| (*p).clone())
            .unwrap_or(Value::Null)
    }

    pub fn connected_peers(&self) -> Vec<String> {
        self.status()["peers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["connected"].as_bool() == Some(true))
            .map(|p| p["nick"].as_str().unwrap_or("").to_string())
            .collect()
    }

    /// Lets `other` migrate VMs into this node (`peervisor peers allow`).
    pub fn allow_control(&self, other: &TestNode) {
        let out = self.cli(&["peers", "allow", &other.peer_id(), "--role", "control"]);
        assert!(out.status.success(), "peers allow: {}", stderr(&out));
    }

    /// Waits until `from` sees this node as its only peer, then lets `from`
    /// migrate VMs in.
    pub fn join_and_allow_control(&self, from: &TestNode) {
        assert!(
            eventually(Duration::from_secs(20), || from.connected_peers()
                == [self.nick.as_str()]),
            "overlay did not form:\n{}",
            from.log()
        );
        self.allow_control(from);
    }

    pub fn vm(&self, name: &str) -> Option<Value> {
        self.status()["vms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .cloned()
    }

    /// The providers of `service` in this node's `services --json`.
    pub fn providers(&self, service: &str) -> Vec<Value> {
        let out = self.cli(&["services", "--json"]);
        let services: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        services
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["name"] == service)
            .flat_map(|s| s["providers"].as_array().cloned().unwrap_or_default())
            .collect()
    }
}

impl TestNode {
    /// kill -9 of the node process, as a crash would. Its private libvirtd
    /// survives: stop it with `stop_orphan_libvirtd`.
    pub fn kill_hard(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the libvirtd a hard-killed node left behind (found by its pid file).
    pub fn stop_orphan_libvirtd(&self) {
        for pid_file in find_files(self.dir.path(), "libvirtd.pid") {
            let Ok(text) = std::fs::read_to_string(&pid_file) else {
                continue;
            };
            let Ok(pid) = text.trim().parse::<i32>() else {
                continue;
            };
            // SAFETY: kill(2) on the daemon our node started.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let gone = eventually(Duration::from_secs(20), || {
                // SAFETY: signal 0 only checks that the process exists.
                (unsafe { libc::kill(pid, 0) }) != 0
            });
            if !gone {
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

fn find_files(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(find_files(&path, name));
        } else if path.file_name().is_some_and(|n| n == name) {
            found.push(path);
        }
    }
    found
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The one knob for slow machines: every bound a test waits under (guest work,
/// node start-up, convergence) is multiplied by `PEERVISOR_TEST_TIME_SCALE`
/// (default 1; e.g. 3 on a machine much slower or busier than 2 shared cores).
/// Bounds that a property is stated against (a timeout the code under test must
/// not wait out) are not scaled. docs/testing.md.
pub fn time_scale() -> f64 {
    let Ok(value) = std::env::var("PEERVISOR_TEST_TIME_SCALE") else {
        return 1.0;
    };
    match value.trim().parse::<f64>() {
        Ok(f) if f.is_finite() && f >= 1.0 => f,
        _ => panic!("PEERVISOR_TEST_TIME_SCALE={value:?}: expected a number of at least 1"),
    }
}

/// `limit` times [`time_scale`].
pub fn scaled(limit: Duration) -> Duration {
    limit.mul_f64(time_scale())
}

/// Polls `check` every 250 ms until it returns true or `limit` (scaled by
/// [`time_scale`]) passes.
pub fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + scaled(limit);
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// GET `url` with curl (inside `netns` if given), waiting for the answer: an
/// attempt that fails at once (refused, reset, an HTTP error) is tried again
/// every 250 ms, a slow one is waited for, until `limit` (scaled) has passed.
/// Guest pages are CGI scripts under TCG: a loaded machine can take seconds.
pub fn http_wait(netns: Option<&TestNetns>, url: &str, limit: Duration) -> Option<String> {
    let deadline = Instant::now() + scaled(limit);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if let Some(page) = http_once(netns, url, left.max(Duration::from_secs(1))) {
            return Some(page);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// One GET of `url` that gives up after `limit` (not scaled): for a page that
/// must NOT be served (a paused guest), where a short wait cannot fail a test
/// wrongly, and inside [`http_wait`].
pub fn http_once(netns: Option<&TestNetns>, url: &str, limit: Duration) -> Option<String> {
    let max_time = format!("{:.1}", limit.as_secs_f64());
    let curl = ["curl", "-sf", "--max-time", max_time.as_str(), url];
    let out = match netns {
        Some(ns) => ns.exec(&curl),
        None => Command::new(curl[0])
            .args(&curl[1..])
            .output()
            .expect("curl"),
    };
    out.status.success().then(|| stdout(&out))
}

/// A guest network namespace of the test's own, removed on drop.
pub struct TestNetns {
    pub name: String,
}

impl TestNetns {
    pub fn new(tag: &str) -> TestNetns {
        TestNetns {
            name: format!("pvt-{tag}-{}", std::process::id()),
        }
    }

    /// Runs a command inside the namespace (e.g. curl to a guest).
    pub fn exec(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .expect("ip netns exec")
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .output();
    }
}

/// Network namespaces of the test's own, each joined to this namespace by a veth
/// pair and to nothing else: island `i` is `inside(i)` (10.B.i+1.2/24) within its
/// namespace and `outside(i)` (10.B.i+1.1) on this side, and has no route to the
/// other islands. Removed on drop.
pub struct Islands {
    pub netns: Vec<TestNetns>,
    links: Vec<String>,
    base: u32,
}

impl Islands {
    pub fn new(tags: &[&str]) -> Islands {
        let pid = std::process::id();
        let mut islands = Islands {
            netns: Vec::new(),
            links: Vec::new(),
            base: 100 + pid % 100,
        };
        for (i, tag) in tags.iter().enumerate() {
            let ns = TestNetns::new(tag);
            run(&["ip", "netns", "add", &ns.name]);
            islands.netns.push(ns);
            let outside = format!("pvi{}{i}", pid % 100_000);
            run(&[
                "ip",
                "link",
                "add",
                &outside,
                "type",
                "veth",
                "peer",
                "name",
                "pvin",
                "netns",
                &islands.netns[i].name,
            ]);
            islands.links.push(outside.clone());
            let ns = &islands.netns[i].name;
            run(&[
                "ip",
                "addr",
                "add",
                &format!("{}/24", islands.outside(i)),
                "dev",
                &outside,
            ]);
            run(&["ip", "link", "set", &outside, "up"]);
            run(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{}/24", islands.inside(i)),
                "dev",
                "pvin",
            ]);
            run(&["ip", "-n", ns, "link", "set", "pvin", "up"]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        islands
    }

    pub fn name(&self, i: usize) -> &str {
        &self.netns[i].name
    }

    pub fn inside(&self, i: usize) -> String {
        format!("10.{}.{}.2", self.base, i + 1)
    }

    pub fn outside(&self, i: usize) -> String {
        format!("10.{}.{}.1", self.base, i + 1)
    }

    /// Cuts island `i` off (its link goes down): packets are dropped silently,
    /// as in a network partition; nothing resets the connections.
    pub fn cut(&self, i: usize) {
        run(&["ip", "link", "set", &self.links[i], "down"]);
    }

    pub fn heal(&self, i: usize) {
        run(&["ip", "link", "set", &self.links[i], "up"]);
    }

    /// Whether a TCP connection from island `from` to `addr:port` succeeds.
    pub fn can_connect(&self, from: usize, addr: &str, port: u16) -> bool {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                self.name(from),
                "timeout",
                "3",
                "bash",
                "-c",
            ])
            .arg(format!("exec 3<>/dev/tcp/{addr}/{port}"))
            .output()
            .expect("ip netns exec")
            .status
            .success()
    }
}

impl Drop for Islands {
    fn drop(&mut self) {
        for link in &self.links {
            let _ = Command::new("ip").args(["link", "delete", link]).output();
        }
    }
}

fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect(args[0]);
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
}

/// Shared image dir (cached across test runs; `PEERVISOR_TEST_IMAGE_DIR` overrides);
/// built once.
pub fn image_dir() -> PathBuf {
    let dir = std::env::var_os("PEERVISOR_TEST_IMAGE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/peervisor/images"));
    let out = Command::new(BIN)
        .args(["image", "build", "--image-dir"])
        .arg(&dir)
        .output()
        .expect("peervisor image build");
    assert!(out.status.success(), "image build failed: {}", stderr(&out));
    dir
}

pub fn virsh(uri: &str, args: &[&str]) -> String {
    let out = Command::new("virsh")
        .args(["-c", uri])
        .args(args)
        .output()
        .expect("virsh");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Destroys every TCP connection from or to these loopback ports (`ss -K`, the
/// kernel's SOCK_DESTROY): both ends see the connection abort at once, as with a
/// network fault. The peers redial on their own.
pub fn cut_connections(ports: &[u16]) {
    let filter = ports
        .iter()
        .map(|p| format!("sport = :{p} or dport = :{p}"))
        .collect::<Vec<_>>()
        .join(" or ");
    let out = std::process::Command::new("ss")
        .args([
            "-K",
            "-tn",
            "dst",
            "127.0.0.1",
            "and",
            &format!("( {filter} )"),
        ])
        .output()
        .expect("ss");
    assert!(out.status.success(), "ss -K: {}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("127.0.0.1"),
        "no connection to cut (kernel without SOCK_DESTROY?): {}",
        String::from_utf8_lossy(&out.stdout)
    );
}
