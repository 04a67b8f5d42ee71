//! `stratus runtimes`: the interpreters the server runs functions on and
//! builds their dependencies for, and its build tools.

use std::process::ExitCode;

use crate::client::{Client, Connection};
use crate::table::{Align, Table};

#[derive(Debug, Clone, clap::Args)]
pub struct RuntimesArgs {
    #[arg(long, value_parser = ["text", "json"], default_value = "text")]
    pub output: String,
}

pub async fn run(conn: &Connection, args: RuntimesArgs) -> anyhow::Result<ExitCode> {
    let client = Client::connect(conn)?;
    let body = client.get_json("/v1/runtimes").await?;
    if args.output == "json" {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(&[
        ("RUNTIME", Align::Left),
        ("ALIAS", Align::Left),
        ("INTERPRETER", Align::Left),
        ("EXECUTABLE", Align::Left),
    ]);
    for runtime in ["python3", "nodejs"] {
        let it = &body[runtime];
        table.row(vec![
            it["name"].as_str().unwrap_or("-").to_owned(),
            runtime.to_owned(),
            it["identity"]
                .as_str()
                .unwrap_or("missing: functions on it fail to start")
                .to_owned(),
            it["executable"].as_str().unwrap_or("-").to_owned(),
        ]);
    }
    table.print();
    let tools: Vec<String> = body["tools"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, path)| match path.as_str() {
            Some(path) => format!("{name} {path}"),
            None => format!("{name} missing"),
        })
        .collect();
    println!("build tools: {}", tools.join(", "));
    let packages = &body["python_packages"];
    if let Some(names) = packages["packages"].as_str().filter(|n| !n.is_empty()) {
        println!(
            "python packages: {names} ({})",
            packages["state"].as_str().unwrap_or("-")
        );
    }
    Ok(ExitCode::SUCCESS)
}
