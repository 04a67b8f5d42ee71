//! `stratus rules test APP_DIR CASES.yaml`: runs an app's security rules
//! against cases (who, what, which document, allowed or not), with no
//! server, as the server applies them.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};

#[derive(Debug, Clone, clap::Args)]
pub struct RulesArgs {
    #[command(subcommand)]
    pub command: RulesCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum RulesCommand {
    /// Run rule cases (a YAML file; the README shows one) against the
    /// rules in an app directory's stratus.yaml; fails if any case does
    /// not come out as it says
    Test {
        /// The app's directory (holding stratus.yaml)
        app: PathBuf,
        /// The cases
        cases: PathBuf,
        #[arg(long, value_parser = ["text", "json"], default_value = "text")]
        output: String,
    },
}

pub fn run(args: RulesArgs) -> anyhow::Result<ExitCode> {
    let RulesCommand::Test { app, cases, output } = args.command;
    let manifest = app.join(stratus_manifest::MANIFEST_FILE);
    let text = std::fs::read_to_string(&manifest)
        .with_context(|| format!("cannot read {}", manifest.display()))?;
    let spec = match stratus_manifest::parse(&manifest.display().to_string(), &text) {
        Ok(spec) => spec,
        Err(errors) => bail!("{errors}"),
    };
    let yaml = std::fs::read_to_string(&cases)
        .with_context(|| format!("cannot read {}", cases.display()))?;
    let outcomes = stratus_server::run_rule_cases(&spec, &yaml)
        .map_err(|why| anyhow::anyhow!("{}: {why}", cases.display()))?;
    let failed = outcomes.iter().filter(|o| !o.passed()).count();
    if output == "json" {
        println!("{}", serde_json::to_string_pretty(&outcomes)?);
    } else {
        for o in &outcomes {
            let verdict = if o.allowed { "allowed" } else { "denied" };
            if o.passed() {
                println!("ok    {}: {verdict}", o.name);
            } else {
                println!(
                    "FAIL  {}: {verdict}, expected {}{}",
                    o.name,
                    if o.expected { "allowed" } else { "denied" },
                    o.reason
                        .as_deref()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                );
            }
        }
        println!(
            "{} cases, {} passed, {failed} failed",
            outcomes.len(),
            outcomes.len() - failed
        );
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
