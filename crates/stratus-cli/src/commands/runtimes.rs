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
    for it in body["runtimes"].as_array().into_iter().flatten() {
        let runtime = it["runtime"].as_str().unwrap_or("-");
        table.row(vec![
            it["name"].as_str().unwrap_or(runtime).to_owned(),
            match it["default"].as_bool() {
                Some(true) => runtime.to_owned(),
                _ => "-".to_owned(),
            },
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
        let states: Vec<String> = body["runtimes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|it| {
                Some(format!(
                    "{}: {}",
                    it["name"].as_str()?,
                    it["python_packages"].as_str()?
                ))
            })
            .collect();
        println!("python packages: {names} ({})", states.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}
