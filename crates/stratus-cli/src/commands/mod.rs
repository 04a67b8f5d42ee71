//! The subcommands, one file each.

mod alerts;
mod backup;
mod builds;
mod context;
mod db;
mod demo;
mod deploy;
mod dev;
mod dlq;
mod event;
mod failures;
mod files;
mod git;
mod init;
mod invoke;
mod keys;
mod logs;
mod ls;
mod migrate;
mod nodes;
mod profile;
mod queue;
mod rm;
mod rules;
mod runtimes;
mod secret;
mod server;
mod status;
mod trace;
mod users;
mod versions;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use stratus_sandbox::launcher::LauncherHandle;

use crate::client::Connection;

/// Stratus: a self-hosted serverless platform.
#[derive(Debug, Parser)]
#[command(name = "stratus", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub conn: Connection,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the platform: admin API, public listener and instances
    Server(server::ServerArgs),
    /// Run the platform with the demo application deployed
    Demo(server::ServerArgs),
    /// Create an application directory from a template
    Init(init::InitArgs),
    /// Copy the data directory's state (database, packages, code, keys) to
    /// a new directory, consistently, while the server runs
    Backup(backup::BackupArgs),
    /// Copy a backup into a new or empty data directory
    Restore(backup::RestoreArgs),
    /// Move a single node's state (apps, versions, keys, credentials,
    /// queued events and messages, dead letters, schedules) from its SQLite
    /// database into a new PostgreSQL database
    Migrate(migrate::MigrateArgs),
    /// Package and deploy the application in a directory
    Deploy(deploy::DeployArgs),
    /// Deploy the application in a directory, redeploy it on every save and
    /// stream its logs (starting a local server when none answers)
    Dev(dev::DevArgs),
    /// Invoke a function and print its result, or queue an event (--async)
    Invoke(invoke::InvokeArgs),
    /// List, show and redrive dead letters: events whose retries ran out
    Dlq(dlq::DlqArgs),
    /// Manage the keys callers present to `auth: key` routes
    Keys(keys::KeysArgs),
    /// Manage an application's secrets (`env: { VAR: { secret: NAME } }`)
    Secret(secret::SecretArgs),
    /// Show the logs of an application or function
    Logs(logs::LogsArgs),
    /// List deployed applications and their functions
    #[command(visible_alias = "list")]
    Ls(ls::LsArgs),
    /// Send messages to an application's queues and list them
    Queue(queue::QueueArgs),
    /// List, copy, delete and presign the objects of an application's
    /// buckets
    Files(files::FilesArgs),
    /// List an application's buckets, and delete one
    Bucket(files::BucketArgs),
    /// List, read, write, query, export and import the documents of an
    /// application's collections
    Db(db::DbArgs),
    /// Test an application's security rules against cases, with no server
    Rules(rules::RulesArgs),
    /// List an application's end users, revoke their sessions, delete them
    Users(users::UsersArgs),
    /// Remove an application
    #[command(visible_alias = "delete")]
    Rm(rm::RmArgs),
    /// List every version an application was deployed as
    Versions(versions::VersionsArgs),
    /// Make an earlier version of an application active again, at once
    Rollback(versions::RollbackArgs),
    /// Deploy an application on each push to its git repository (a webhook)
    Git(git::GitArgs),
    /// List an application's dependency builds and show their logs
    Builds(builds::BuildsArgs),
    /// List failed invocations, show their scenes, and replay their events
    Failures(failures::FailuresArgs),
    /// Sample a function's running instances: a flame graph and the top
    /// frames (py-spy for Python, perf for provided)
    Profile(profile::ProfileArgs),
    /// List an application's alerts with their state and latest changes
    Alerts(alerts::AlertsArgs),
    /// Show a trace (by its id, or an invocation's request id) as a
    /// waterfall of its spans
    Trace(trace::TraceArgs),
    /// List the interpreters the server runs functions on and builds for,
    /// and its build tools
    Runtimes(runtimes::RuntimesArgs),
    /// Print a sample event of a trigger's shape (pipe it into `stratus invoke`)
    Event(event::EventArgs),
    /// Show every function and service with its instances and recent errors
    Status(status::StatusArgs),
    /// List the nodes that use the store, with their last heartbeat
    Nodes(nodes::NodesArgs),
    /// Save a server's admin URL and token as a named context, and use it
    /// (the token from --token, STRATUS_TOKEN, or standard input)
    Login(context::LoginArgs),
    /// List, switch and forget the contexts `stratus login` saved
    Context(context::ContextArgs),
    /// Print the shell completion script for bash, zsh, fish, elvish or
    /// powershell (e.g. `stratus completion bash > /etc/bash_completion.d/stratus`)
    Completion { shell: clap_complete::Shell },
}

impl Cli {
    /// The log level when RUST_LOG is not set: the server says what it does,
    /// client commands stay quiet.
    /// Whether the command runs a server (which must outlive a client that
    /// hangs up), rather than printing for a reader.
    pub fn runs_server(&self) -> bool {
        matches!(self.command, Command::Server(_) | Command::Demo(_))
    }

    /// How the server's own log is written (`--log-format`).
    pub fn log_format(&self) -> stratus_server::config::LogFormat {
        match &self.command {
            Command::Server(args) | Command::Demo(args) => args.config.log_format,
            _ => stratus_server::config::LogFormat::Text,
        }
    }

    pub fn default_log_filter(&self) -> &'static str {
        match self.command {
            Command::Server(_) => "info",
            Command::Demo(_) => "warn",
            _ => "error",
        }
    }
}

impl Cli {
    /// Starts the sandbox launcher for the commands that run a server.
    pub fn launcher(&self) -> anyhow::Result<Option<LauncherHandle>> {
        match &self.command {
            Command::Server(args) | Command::Demo(args) => Ok(Some(
                stratus_sandbox::launcher::start(args.isolation.request(), &self.conn.data_dir)?,
            )),
            _ => Ok(None),
        }
    }
}

pub async fn run(cli: Cli, launcher: Option<LauncherHandle>) -> anyhow::Result<ExitCode> {
    let conn = cli.conn;
    let launcher = || launcher.ok_or_else(|| anyhow::anyhow!("the launcher was not started"));
    match cli.command {
        Command::Server(args) => server::run(&conn, args, launcher()?).await,
        Command::Demo(args) => demo::run(&conn, args, launcher()?).await,
        Command::Init(args) => init::run(args),
        Command::Event(args) => event::run(args),
        Command::Backup(args) => backup::backup(&conn, args),
        Command::Restore(args) => backup::restore(&conn, args),
        Command::Migrate(args) => migrate::run(&conn, args).await,
        Command::Deploy(args) => deploy::run(&conn, args).await,
        Command::Dev(args) => dev::run(&conn, args).await,
        Command::Invoke(args) => invoke::run(&conn, args).await,
        Command::Dlq(args) => dlq::run(&conn, args).await,
        Command::Keys(args) => keys::run(&conn, args).await,
        Command::Secret(args) => secret::run(&conn, args).await,
        Command::Logs(args) => logs::run(&conn, args).await,
        Command::Ls(args) => ls::run(&conn, args).await,
        Command::Queue(args) => queue::run(&conn, args).await,
        Command::Files(args) => files::run(&conn, args).await,
        Command::Bucket(args) => files::run_bucket(&conn, args).await,
        Command::Db(args) => db::run(&conn, args).await,
        Command::Rules(args) => rules::run(args),
        Command::Users(args) => users::run(&conn, args).await,
        Command::Rm(args) => rm::run(&conn, args).await,
        Command::Versions(args) => versions::list(&conn, args).await,
        Command::Rollback(args) => versions::rollback(&conn, args).await,
        Command::Builds(args) => builds::run(&conn, args).await,
        Command::Failures(args) => failures::run(&conn, args).await,
        Command::Trace(args) => trace::run(&conn, args).await,
        Command::Alerts(args) => alerts::run(&conn, args).await,
        Command::Profile(args) => profile::run(&conn, args).await,
        Command::Git(args) => git::run(&conn, args).await,
        Command::Runtimes(args) => runtimes::run(&conn, args).await,
        Command::Status(args) => status::run(&conn, args).await,
        Command::Nodes(args) => nodes::run(&conn, args).await,
        Command::Login(args) => context::login(&conn, args).await,
        Command::Context(args) => context::run(args),
        Command::Completion { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "stratus", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
    }
}
