//! The command line: its arguments (`args.rs`), the commands that ask a node
//! through its control socket (one file per family, each with its plain-text
//! output), `image build`, `keys`, `bench` (handed to bench/) and `peervisor
//! demo`. main.rs starts nodes (`peervisor node`, the console); every other
//! command runs from here.

mod args;
pub mod config;
mod console;
pub mod demo;
mod dev;
mod doctor;
pub mod find_node;
#[cfg(test)]
mod fuzz;
mod generate;
mod image;
mod join;
mod migrate;
mod node_args;
mod peers;
mod services;
mod status;
mod top;
mod vm;

pub use args::*;

use anyhow::Result;

use crate::control::client::ControlClient;
use crate::control::{Reply, Request};

/// `config check`, `doctor` and `join`: they read or write the config file
/// themselves, which may be bad or not there yet.
pub async fn run_host(command: HostCommand, globals: &config::Globals) -> Result<()> {
    match command {
        HostCommand::Config(ConfigCommand::Check { file }) => {
            let file = file.or_else(|| globals.config.clone());
            config::check(file.as_deref(), globals.data_dir_given())
        }
        HostCommand::Doctor { json } => doctor::run(globals, json).await,
        HostCommand::Join { token, json } => {
            let data_dir = globals.data_dir_unread();
            let config = globals.config.as_deref();
            join::join(&token, json, &data_dir, config, globals.data_dir_given()).await
        }
    }
}

/// Runs a command (`node` is main.rs's: it is no `Command`) with the config
/// file in force.
pub async fn run(command: Command, globals: &config::Globals) -> Result<()> {
    let (data_dir, config) = globals.in_force()?;
    let (data_dir, config) = (&data_dir, config.as_ref());
    let control = ControlClient::new(&data_dir.control_socket());
    match command {
        Command::Dev(command) => dev::run(data_dir, command).await,
        Command::Keys(look) => {
            print!("{}", crate::console::keys_text(&look.look()));
            Ok(())
        }
        Command::Completions { shell } => generate::completions(shell),
        Command::Man { out_dir } => generate::man_pages(&out_dir),
        Command::Status { json } => status::run(&control, json).await,
        Command::Vm(command) => vm::run(&control, command).await,
        Command::Migrate {
            vm,
            to,
            max_downtime,
            bandwidth,
            abort,
            wait,
            force,
            json,
        } => {
            let request = match to {
                Some(to) if !abort => Request::Migrate {
                    vm,
                    to,
                    max_downtime_ms: max_downtime,
                    bandwidth_mib_s: bandwidth,
                    foreign: force,
                    detach: !wait,
                },
                _ => Request::MigrateAbort { vm },
            };
            migrate::migrate(&control, &request, json).await
        }
        Command::Replicate { vm, to, name, json } => {
            migrate::replicate(
                &control,
                &Request::Replicate {
                    vm,
                    to,
                    name,
                    detach: false,
                },
                json,
            )
            .await
        }
        Command::Services { kind, tag, json } => {
            services::list(&control, kind.as_deref(), &tag, json).await
        }
        Command::Find { name, json } => services::find(&control, name, json).await,
        Command::Consume {
            service,
            local_port,
            bind,
            json,
        } => {
            let request = Request::Consume {
                service,
                local_port,
                bind,
            };
            services::consume(&control, request, json).await
        }
        Command::Unconsume { service, json } => {
            done(&control, Request::Unconsume { service }, json).await
        }
        Command::Expose {
            name,
            target,
            kind,
            allow,
            max_conns,
            json,
        } => {
            let request = Request::Expose {
                name,
                target,
                kind,
                allow,
                max_conns,
            };
            done(&control, request, json).await
        }
        Command::Unexpose { name, json } => done(&control, Request::Unexpose { name }, json).await,
        Command::Image(command) => {
            // The command's --image-dir, else the config file's (so it is the
            // node's), else the default.
            let from_config = config
                .map(|c| config::node_args(&config::empty_matches(), Some(c)))
                .transpose()?
                .and_then(|n| n.image_dir);
            let dir = |flag: Option<std::path::PathBuf>| {
                flag.or_else(|| from_config.clone())
                    .unwrap_or_else(crate::image::default_image_dir)
            };
            match command {
                ImageCommand::Build {
                    name,
                    image_dir,
                    disk,
                    json,
                } => image::build(dir(image_dir), name, disk, json).await,
                ImageCommand::Import {
                    file,
                    name,
                    image_dir,
                    json,
                } => image::import(dir(image_dir), file, name, json).await,
            }
        }
        Command::Demo(args) => demo::run(args).await,
        Command::Peers(command) => peers::run(&control, command).await,
        Command::Invite(args) => join::invite(&control, args).await,
        Command::Top {
            delay,
            iterations,
            json,
        } => top::run(&control, delay, iterations, json).await,
        Command::Bench(bench) => {
            let setup = crate::bench::Setup {
                data_dir: data_dir.clone(),
                accel: bench.accel,
                image_dir: bench
                    .image_dir
                    .unwrap_or_else(crate::image::default_image_dir),
                guest_netns: bench.guest_netns,
            };
            crate::bench::run(bench.command, &setup).await
        }
    }
}

/// Sends a request whose reply is a message, and prints it.
/// A request whose reply is the operator's message: printed as it is, or with
/// --json as `{"message": ...}`.
async fn done(control: &ControlClient, request: Request, json: bool) -> Result<()> {
    if let Reply::Done { message } = control.call(&request).await? {
        if json {
            let value = serde_json::json!({ "message": message });
            println!("{}", serde_json::to_string_pretty(&value)?);
        } else {
            println!("{message}");
        }
    }
    Ok(())
}
