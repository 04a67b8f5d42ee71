//! `stratus deploy [DIR]`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use stratus_manifest::{MANIFEST_FILE, Runtime};

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
    /// Return once the new version's `min_instances` are up (functions
    /// started, services ready), or fail with the reason
    #[arg(long)]
    pub wait: bool,
    /// Longest --wait waits
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub wait_timeout: std::time::Duration,
    /// Deploy from this git repository instead (the server fetches it: any
    /// URL it can reach)
    #[arg(long, conflicts_with = "dir")]
    pub git: Option<String>,
    /// The branch, tag or commit to deploy (default: the repository's HEAD)
    #[arg(long = "ref", requires = "git")]
    pub reference: Option<String>,
    /// The app's directory in the repository (default: its root)
    #[arg(long, requires = "git")]
    pub path: Option<String>,
    /// Where dependencies are installed: `server` (at deploy, in its build
    /// sandbox) or `local` (here, with this machine's uv, pip or npm, before
    /// upload: for servers that must not reach the package registries)
    #[arg(long, value_parser = ["server", "local"], default_value = "server", conflicts_with = "git")]
    pub build: String,
    /// Where the code came from, as `stratus versions` shows it (the app's
    /// git remote names the pushed commit)
    #[arg(long, hide = true, conflicts_with = "git")]
    pub source: Option<String>,
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
    let deployed = match &args.git {
        Some(url) => {
            eprintln!(
                "the server fetches {} of {url} ...",
                args.reference.as_deref().unwrap_or("HEAD")
            );
            let body = serde_json::json!({ "url": url, "ref": args.reference, "path": args.path });
            let answer = client
                .send_with_progress(client.request(Method::POST, "/v1/deploy/git").json(&body))
                .await?;
            serde_json::from_value(answer)?
        }
        None => {
            let options = DeployOptions {
                local: args.build == "local",
                debug: None,
                source: args.source.clone(),
            };
            deploy_dir(&client, &args.dir, &options).await?
        }
    };
    if args.wait {
        wait_until_up(&client, &deployed, args.wait_timeout).await?;
    }
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

/// Waits until every function of `deployed`'s version has its
/// `min_instances` started and every service its `min_instances` ready;
/// a service that keeps failing ends the wait with its last error.
async fn wait_until_up(
    client: &Client,
    deployed: &Deployed,
    limit: std::time::Duration,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let count = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    loop {
        let status = client
            .get_json(&format!("/v1/status?app={}", deployed.app))
            .await?;
        let app = status["apps"]
            .as_array()
            .and_then(|apps| apps.iter().find(|a| a["app"] == deployed.app.as_str()))
            .cloned()
            .unwrap_or_default();
        let mut waiting_for = Vec::new();
        if count(&app["version"]) == u64::from(deployed.version) {
            for f in app["functions"].as_array().into_iter().flatten() {
                let up = count(&f["instances"]["busy"]) + count(&f["instances"]["idle"]);
                if up < count(&f["min_instances"]) {
                    waiting_for.push(format!("function {}", f["name"].as_str().unwrap_or("")));
                }
            }
            for s in app["services"].as_array().into_iter().flatten() {
                let name = s["name"].as_str().unwrap_or("");
                if count(&s["instances"]["ready"]) >= count(&s["min_instances"]) {
                    continue;
                }
                if s["backoff_ms"].as_u64().is_some_and(|ms| ms > 0) {
                    let last = s["errors"]
                        .as_array()
                        .and_then(|e| e.last())
                        .and_then(|e| e["message"].as_str())
                        .unwrap_or("it keeps failing");
                    bail!("service {name} of {} cannot start: {last}", deployed.app);
                }
                waiting_for.push(format!("service {name}"));
            }
        } else {
            waiting_for.push(format!("version {}", deployed.version));
        }
        if waiting_for.is_empty() {
            return Ok(());
        }
        if started.elapsed() > limit {
            bail!(
                "{} is not up after {}: still waiting for {}",
                deployed.app,
                humantime::format_duration(limit),
                waiting_for.join(", ")
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// How `deploy_dir` deploys.
#[derive(Debug, Clone, Default)]
pub struct DeployOptions {
    /// Dependencies installed here first (`--build local`).
    pub local: bool,
    /// A function run with its debugger listening on this port.
    pub debug: Option<(String, u16)>,
    /// Where the code came from, for the version's record.
    pub source: Option<String>,
}

/// Validates, packs, uploads and activates the application in `dir`.
pub async fn deploy_dir(
    client: &Client,
    dir: &Path,
    options: &DeployOptions,
) -> anyhow::Result<Deployed> {
    let local = options.local;
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
    let mut local_builder: Option<LocalBuild> = None;
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
        let runtimes = runtimes_of(&spec, code);
        eprint!("packing {code} ... ");
        let mut package = tokio::task::spawn_blocking(move || stratus_archive::pack(&path))
            .await?
            .with_context(|| format!("cannot package {code}"))?;
        if local && !runtimes.is_empty() {
            eprintln!();
            let builder = match &local_builder {
                Some(builder) => builder,
                None => local_builder.insert(LocalBuild::new(client).await?),
            };
            package = builder.build(code, package, &runtimes).await?;
            eprint!("packing {code} with its dependencies ... ");
        }
        eprintln!(
            "{} files, {} unpacked, {} packed",
            package.files,
            crate::table::bytes(package.unpacked_bytes),
            crate::table::bytes(package.bytes.len() as u64)
        );
        let exists = client
            .request(Method::HEAD, &format!("/v1/packages/{}", package.sha256))
            .send()
            .await
            .map(|r| r.status() == StatusCode::OK)
            .unwrap_or(false);
        if exists {
            eprintln!("uploading {code} ... unchanged, already on the server");
        } else {
            let size = package.bytes.len() as u64;
            eprint!("uploading {code} ... ");
            client
                .send(
                    client
                        .request(Method::PUT, &format!("/v1/packages/{}", package.sha256))
                        .header("content-type", "application/gzip")
                        .body(package.bytes),
                )
                .await
                .with_context(|| format!("cannot upload the package of {code}"))?;
            eprintln!("{} sent", crate::table::bytes(size));
        }
        packages.insert(code.to_owned(), package.sha256);
    }

    let mut body = serde_json::json!({ "manifest": manifest, "file": label, "packages": packages });
    if let Some((function, port)) = &options.debug {
        body["debug"] = serde_json::json!({ "function": function, "port": port });
    }
    if let Some(source) = &options.source {
        body["source"] = serde_json::json!(source);
    }
    let answer = client
        .send_with_progress(
            client
                .request(Method::POST, &format!("/v1/apps/{}/deploy", spec.name))
                .json(&body),
        )
        .await?;
    Ok(serde_json::from_value(answer)?)
}

/// The language runtimes `code` runs on in `spec`, with the versions
/// named.
fn runtimes_of(spec: &stratus_manifest::AppSpec, code: &str) -> Vec<(Runtime, Option<String>)> {
    let mut runtimes: Vec<(Runtime, Option<String>)> = spec
        .functions
        .values()
        .filter(|f| f.code == code && f.runtime != Runtime::Provided)
        .map(|f| (f.runtime, f.runtime_version.clone()))
        .chain(
            spec.services
                .values()
                .filter(|s| s.code == code)
                .filter_map(|s| Some((s.runtime?, s.runtime_version.clone()))),
        )
        .collect();
    runtimes.sort_unstable();
    runtimes.dedup();
    runtimes
}

/// `--build local`: this machine's tools, checked against the server's
/// interpreters.
struct LocalBuild {
    builder: stratus_server::LocalBuilder,
    server: serde_json::Value,
}

impl LocalBuild {
    async fn new(client: &Client) -> anyhow::Result<LocalBuild> {
        let server = client
            .get_json("/v1/runtimes")
            .await
            .context("cannot ask the server which interpreters it runs")?;
        Ok(LocalBuild {
            builder: stratus_server::LocalBuilder::discover().await?,
            server,
        })
    }

    /// Unpacks `package` into a scratch directory, installs its
    /// dependencies there, and packs the result (`.stratusignore` was
    /// applied by the first pack, and must not drop what was installed).
    async fn build(
        &self,
        code: &str,
        package: stratus_archive::Package,
        runtimes: &[(Runtime, Option<String>)],
    ) -> anyhow::Result<stratus_archive::Package> {
        for (runtime, version) in runtimes {
            let name = runtime.name_at(version.as_deref());
            let server = match version {
                None => self.server[runtime.as_str()]["identity"].as_str(),
                Some(_) => self.server["runtimes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|r| r["name"] == name.as_str())
                    .and_then(|r| r["identity"].as_str()),
            };
            let here = self.builder.identity((*runtime, version.as_deref()));
            if server != here {
                bail!(
                    "the server runs {name} as {}, this machine as {}: what is installed here (native packages above all) would not run there; deploy without --build local, or from a machine with the same interpreter\nnothing was deployed",
                    server.unwrap_or("nothing"),
                    here.unwrap_or("nothing")
                );
            }
        }
        let scratch = Scratch::new()?;
        let staged = scratch.0.join("code");
        let bytes = package.bytes;
        let unpack_to = staged.clone();
        tokio::task::spawn_blocking(move || {
            stratus_archive::unpack(&bytes, &unpack_to, stratus_archive::Limits::default())
        })
        .await?
        .with_context(|| format!("cannot unpack {code} to build it"))?;
        for (runtime, version) in runtimes {
            let named = (*runtime, version.as_deref());
            let name = runtime.name_at(version.as_deref());
            match self.builder.install(&staged, named).await {
                Ok(Some(step)) => eprintln!("==> {code} ({name}): {step}, on this machine"),
                Ok(None) => {}
                Err(message) => bail!("{code} ({name}): {message}\nnothing was deployed"),
            }
        }
        let _ = std::fs::remove_file(staged.join(stratus_archive::IGNORE_FILE));
        let package = tokio::task::spawn_blocking(move || stratus_archive::pack(&staged))
            .await?
            .with_context(|| format!("cannot package {code} with its dependencies"))?;
        drop(scratch);
        Ok(package)
    }
}

/// A directory of the deploy's own under the system's temporary one,
/// removed with it.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> anyhow::Result<Scratch> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let dir =
            std::env::temp_dir().join(format!("stratus-build-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
