//! `stratus deploy [DIR]`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use stratus_manifest::MANIFEST_FILE;

use crate::client::{Client, Connection};

#[derive(Debug, Clone, clap::Args)]
pub struct DeployArgs {
    /// The application directory, holding stratus.yaml
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// `json` prints the app, version, whether it changed, its functions,
    /// services and routes with their URLs, as one object
    #[arg(long, value_parser = ["text", "json"], default_value = "text")]
    pub output: String,
}

#[derive(Debug, Deserialize, serde::Serialize)]
pub struct Deployed {
    pub app: String,
    pub version: u32,
    pub changed: bool,
    pub functions: Vec<String>,
    #[serde(default)]
    pub services: Vec<String>,
    #[serde(default)]
    pub routes: Vec<String>,
}

impl Deployed {
    /// `greet, hello, service site`.
    pub fn contents(&self) -> String {
        self.functions
            .iter()
            .cloned()
            .chain(self.services.iter().map(|s| format!("service {s}")))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

pub async fn run(conn: &Connection, args: DeployArgs) -> anyhow::Result<ExitCode> {
    let client = Client::connect(conn)?;
    let deployed = deploy_dir(&client, &args.dir).await?;
    if args.output == "json" {
        println!("{}", serde_json::to_string_pretty(&deployed)?);
        return Ok(ExitCode::SUCCESS);
    }
    if deployed.changed {
        println!(
            "deployed {} version {} ({})",
            deployed.app,
            deployed.version,
            deployed.contents()
        );
    } else {
        println!(
            "{} is unchanged at version {}",
            deployed.app, deployed.version
        );
    }
    for route in &deployed.routes {
        println!("  {route}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Validates, packs, uploads and activates the application in `dir`.
pub async fn deploy_dir(client: &Client, dir: &Path) -> anyhow::Result<Deployed> {
    let manifest_path = dir.join(MANIFEST_FILE);
    let manifest = std::fs::read_to_string(&manifest_path).with_context(|| {
        format!(
            "cannot read {}; an application directory holds a {MANIFEST_FILE} (`stratus init NAME` makes one)",
            manifest_path.display()
        )
    })?;
    let label = manifest_path.display().to_string();
    let spec = match stratus_manifest::parse(&label, &manifest) {
        Ok(spec) => spec,
        Err(errors) => bail!("{errors}\nnothing was deployed"),
    };

    let mut packages = BTreeMap::new();
    for code in spec.code_dirs() {
        let path = dir.join(code);
        if !path.is_dir() {
            let users: Vec<_> = spec
                .functions
                .values()
                .filter(|f| f.code == code)
                .map(|f| f.name.as_str())
                .collect();
            bail!(
                "{label}: the code directory {} of {} does not exist; create it or fix `code:`\nnothing was deployed",
                path.display(),
                users.join(", ")
            );
        }
        let package = tokio::task::spawn_blocking(move || stratus_archive::pack(&path))
            .await?
            .with_context(|| format!("cannot package {code}"))?;
        let exists = client
            .request(Method::HEAD, &format!("/v1/packages/{}", package.sha256))
            .send()
            .await
            .map(|r| r.status() == StatusCode::OK)
            .unwrap_or(false);
        if !exists {
            client
                .send(
                    client
                        .request(Method::PUT, &format!("/v1/packages/{}", package.sha256))
                        .header("content-type", "application/gzip")
                        .body(package.bytes),
                )
                .await
                .with_context(|| format!("cannot upload the package of {code}"))?;
        }
        packages.insert(code.to_owned(), package.sha256);
    }

    let body = serde_json::json!({ "manifest": manifest, "file": label, "packages": packages });
    let response = client
        .send(
            client
                .request(Method::POST, &format!("/v1/apps/{}/deploy", spec.name))
                .json(&body),
        )
        .await?;
    Ok(response.json().await?)
}
