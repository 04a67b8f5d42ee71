//! `stratus`: the platform's one binary — the server and the CLI that drives it.

mod client;
mod commands;
mod contexts;
mod demo_app;
mod exit;
mod table;
mod templates;

use clap::Parser;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A command that prints (`stratus logs ... | head`) ends, as other Unix
/// tools do, when its reader goes away: SIGPIPE back to its default,
/// instead of a "Broken pipe" panic from the next print.
#[allow(unsafe_code)]
fn end_quietly_when_the_reader_goes() {
    // SAFETY: sets a signal's disposition to its default; no handler runs.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> std::process::ExitCode {
    let cli = commands::Cli::parse();
    if !cli.runs_server() {
        end_quietly_when_the_reader_goes();
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(cli.default_log_filter()));
    // Colour only for a person at a terminal, never into a log file.
    let log = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match cli.log_format() {
        stratus_server::config::LogFormat::Json => log.json().init(),
        stratus_server::config::LogFormat::Text => log.init(),
    }
    // The launcher is forked while this process is still single-threaded.
    let launcher = match cli.launcher() {
        Ok(launcher) => launcher,
        Err(err) => {
            eprintln!("error: {err:#}");
            return exit::code_of(&err);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(commands::run(cli, launcher)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            exit::code_of(&err)
        }
    }
}
