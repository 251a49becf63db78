//! `peervisor invite` (asks the running node) and `peervisor join` (no node yet:
//! join/joiner.rs joins, then the overlay's keys are written into the config file).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::config::{ConfigFile, SYSTEM_CONFIG};
use crate::control::client::ControlClient;
use crate::control::{Reply, Request};
use crate::join::{Token, joiner};
use crate::paths::DataDir;

pub async fn invite(control: &ControlClient, args: super::InviteArgs) -> Result<()> {
    let request = match (&args.revoke, args.list) {
        (Some(id), _) => Request::InviteRevoke { id: id.clone() },
        (None, true) => Request::InviteList,
        (None, false) => Request::Invite {
            role: args.role,
            expires_s: args.expires.as_secs().max(1),
            addresses: args.address.iter().map(ToString::to_string).collect(),
        },
    };
    let reply = control.call(&request).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reply)?);
        return Ok(());
    }
    match reply {
        Reply::Invitation { token, id, expires } => {
            // The token alone on stdout, for `$(peervisor invite)`; the rest on stderr.
            println!("{token}");
            eprintln!(
                "invitation {id} ({}), single use, expires {expires}: run `peervisor join TOKEN` on the new host",
                args.role
            );
        }
        Reply::Invitations { invitations } => {
            println!("{:<12}  {:<8}  {:<20}  state", "id", "role", "expires");
            for i in invitations {
                println!(
                    "{:<12}  {:<8}  {:<20}  {}",
                    i.id, i.role, i.expires, i.state
                );
            }
        }
        Reply::Done { message } => println!("{message}"),
        other => bail!("unexpected reply: {other:?}"),
    }
    Ok(())
}

/// Where `join` writes the keys: --config, else the system node's file (root,
/// default data dir), else the data dir's config.toml.
fn config_path(given: Option<&Path>, data_dir: &DataDir, data_dir_given: bool) -> PathBuf {
    match given {
        Some(path) => path.to_path_buf(),
        None if crate::paths::is_root() && !data_dir_given => PathBuf::from(SYSTEM_CONFIG),
        None => data_dir.root().join("config.toml"),
    }
}

pub async fn join(
    token: &str,
    json: bool,
    data_dir: &DataDir,
    config: Option<&Path>,
    data_dir_given: bool,
) -> Result<()> {
    let token = Token::decode(token)?;
    if ControlClient::new(&data_dir.control_socket()).blocking_alive() {
        bail!(
            "a node is running on {}: stop it first (`systemctl stop peervisor`), join, then start it again",
            data_dir.root().display()
        );
    }
    let path = config_path(config, data_dir, data_dir_given);
    // Refuse before joining if the file already says where to join.
    let existing = match path.exists() {
        true => Some(ConfigFile::load(&path)?),
        false => None,
    };
    if let Some(file) = &existing {
        for key in ["bootstrap", "network-key"] {
            if let Some(line) = file.line_of(key) {
                bail!(
                    "{}:{line}: `{key}` is already set: this host is configured for an overlay; remove the key to join another",
                    path.display()
                );
            }
        }
    }
    let joined = joiner::join(data_dir.root(), &token).await?;
    let mut text = match &existing {
        Some(_) => std::fs::read_to_string(&path)?,
        None => String::new(),
    };
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    let _ = writeln!(
        text,
        "\n# Written by `peervisor join` ({}): the overlay of {}.",
        crate::join::when(crate::join::now()),
        joined.inviter
    );
    let quote = |s: &str| toml::Value::String(s.to_string()).to_string();
    let addrs: Vec<String> = joined
        .bootstrap
        .iter()
        .map(|a| quote(&a.to_string()))
        .collect();
    let _ = writeln!(text, "bootstrap = [{}]", addrs.join(", "));
    let _ = writeln!(
        text,
        "network-key = {}",
        quote(&joined.network_key_file.to_string_lossy())
    );
    if existing
        .as_ref()
        .and_then(|f| f.line_of("data-dir"))
        .is_none()
    {
        let _ = writeln!(
            text,
            "data-dir = {}",
            quote(&data_dir.root().to_string_lossy())
        );
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
    ConfigFile::load(&path).context("the config file written")?;
    if json {
        let out = serde_json::json!({
            "peer_id": joined.peer_id.to_string(),
            "inviter": joined.inviter.to_string(),
            "role": joined.role,
            "control_from": joined.members,
            "config": path,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "joined the overlay of {} as {} ({}); config written to {}",
        joined.inviter,
        joined.peer_id,
        joined.role,
        path.display()
    );
    if !joined.members.is_empty() {
        println!(
            "trust group: {} member(s) may migrate VMs into this host, and this host into them",
            joined.members.len()
        );
    }
    let start = match path == Path::new(SYSTEM_CONFIG) {
        true => "systemctl enable --now peervisor".to_string(),
        false => format!("peervisor node --config {}", path.display()),
    };
    println!("start the node: {start}");
    Ok(())
}
