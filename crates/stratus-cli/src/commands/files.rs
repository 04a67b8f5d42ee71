//! `stratus files ls|cp|rm|presign` and `stratus bucket ls|rm`: an app's
//! buckets and objects, through the admin API. Objects are named
//! `APP/BUCKET/KEY`, the bucket as the manifest names it (or by its S3
//! name).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use reqwest::Method;

use crate::client::{Client, Connection};
use crate::table::{Align, Table};

#[derive(Debug, Clone, clap::Args)]
pub struct FilesArgs {
    #[command(subcommand)]
    pub command: FilesCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum FilesCommand {
    /// List the objects of a bucket (APP/BUCKET), or under a prefix
    /// (APP/BUCKET/PREFIX)
    #[command(visible_alias = "list")]
    Ls {
        target: String,
        #[arg(long, value_parser = ["text", "json"], default_value = "text")]
        output: String,
    },
    /// Copy a file into a bucket (FILE APP/BUCKET/KEY) or out of one
    /// (APP/BUCKET/KEY FILE); `-` is standard input or output. A FROM that
    /// is a file here is uploaded
    Cp { from: String, to: String },
    /// Delete an object (APP/BUCKET/KEY), or every object under a prefix
    /// with --recursive
    Rm {
        target: String,
        #[arg(long)]
        recursive: bool,
    },
    /// Print a URL that reads (or, with --put, writes) one object with no
    /// credential until it expires
    Presign {
        target: String,
        #[arg(long)]
        put: bool,
        /// How long it lasts: 30m, 1h, 7d (at most)
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        expires: std::time::Duration,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub struct BucketArgs {
    #[command(subcommand)]
    pub command: BucketCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum BucketCommand {
    /// List an application's buckets and what they hold
    #[command(visible_alias = "list")]
    Ls {
        app: String,
        #[arg(long, value_parser = ["text", "json"], default_value = "text")]
        output: String,
    },
    /// Delete a bucket; one that holds objects only with --force, which
    /// deletes them too
    Rm {
        app: String,
        bucket: String,
        #[arg(long)]
        force: bool,
    },
}

/// `APP/BUCKET[/KEY]`.
struct Remote<'a> {
    app: &'a str,
    bucket: &'a str,
    key: &'a str,
}

fn remote(target: &str) -> anyhow::Result<Remote<'_>> {
    let mut parts = target.splitn(3, '/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(app), Some(bucket), key) if !app.is_empty() && !bucket.is_empty() => Ok(Remote {
            app,
            bucket,
            key: key.unwrap_or(""),
        }),
        _ => {
            bail!("expected APP/BUCKET or APP/BUCKET/KEY, e.g. shop/uploads/a.jpg, not {target:?}")
        }
    }
}

/// A key as a path segment of the admin API: each part encoded, `/` kept.
fn encoded(key: &str) -> String {
    key.split('/')
        .map(|part| {
            part.bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn object_path(r: &Remote<'_>) -> String {
    format!(
        "/v1/apps/{}/buckets/{}/objects/{}",
        r.app,
        r.bucket,
        encoded(r.key)
    )
}

/// Every object under `prefix`, following pages.
async fn list_all(client: &Client, r: &Remote<'_>) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut objects = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut request = client
            .request(
                Method::GET,
                &format!("/v1/apps/{}/buckets/{}/objects", r.app, r.bucket),
            )
            .query(&[("prefix", r.key)]);
        if let Some(after) = &after {
            request = request.query(&[("after", after)]);
        }
        let page: serde_json::Value = client.send(request).await?.json().await?;
        objects.extend(page["objects"].as_array().cloned().unwrap_or_default());
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => return Ok(objects),
        }
    }
}

pub async fn run(conn: &Connection, args: FilesArgs) -> anyhow::Result<ExitCode> {
    let client = Client::connect(conn)?;
    match args.command {
        FilesCommand::Ls { target, output } => {
            let r = remote(&target)?;
            let objects = list_all(&client, &r).await?;
            if output == "json" {
                println!("{}", serde_json::to_string_pretty(&objects)?);
                return Ok(ExitCode::SUCCESS);
            }
            if objects.is_empty() {
                println!("no objects in {target}");
                return Ok(ExitCode::SUCCESS);
            }
            let mut table = Table::new(&[
                ("KEY", Align::Left),
                ("SIZE", Align::Right),
                ("MODIFIED", Align::Left),
            ]);
            for o in &objects {
                let modified = o["modified_ms"].as_u64().map_or("-".to_owned(), |ms| {
                    humantime::format_rfc3339_seconds(
                        std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
                    )
                    .to_string()
                });
                table.row(vec![
                    crate::table::text(&o["key"]),
                    crate::table::bytes(o["size"].as_u64().unwrap_or(0)),
                    modified,
                ]);
            }
            table.print();
        }
        FilesCommand::Cp { from, to } => {
            let local = from == "-" || Path::new(&from).is_file();
            if local {
                let r = remote(&to)?;
                if r.key.is_empty() || r.key.ends_with('/') {
                    let name = Path::new(&from)
                        .file_name()
                        .and_then(|n| n.to_str())
                        .filter(|_| from != "-")
                        .context("name the object: APP/BUCKET/KEY")?;
                    let key = format!("{}{name}", r.key);
                    upload(&client, &from, &Remote { key: &key, ..r }).await?;
                } else {
                    upload(&client, &from, &r).await?;
                }
            } else {
                let r = remote(&from)
                    .with_context(|| format!("{from} is not a file here, so it names an object"))?;
                download(&client, &r, &to).await?;
            }
        }
        FilesCommand::Rm { target, recursive } => {
            let r = remote(&target)?;
            let keys: Vec<String> = if recursive {
                list_all(&client, &r)
                    .await?
                    .iter()
                    .filter_map(|o| o["key"].as_str().map(str::to_owned))
                    .collect()
            } else if r.key.is_empty() {
                bail!("name the object to delete (APP/BUCKET/KEY), or a prefix with --recursive");
            } else {
                vec![r.key.to_owned()]
            };
            for key in &keys {
                client
                    .send(client.request(Method::DELETE, &object_path(&Remote { key, ..r })))
                    .await?;
                println!("deleted {}/{}/{key}", r.app, r.bucket);
            }
        }
        FilesCommand::Presign {
            target,
            put,
            expires,
        } => {
            let r = remote(&target)?;
            if r.key.is_empty() {
                bail!("name the object: APP/BUCKET/KEY");
            }
            let request = client
                .request(
                    Method::POST,
                    &format!("/v1/apps/{}/buckets/{}/presign", r.app, r.bucket),
                )
                .json(&serde_json::json!({
                    "key": r.key,
                    "method": if put { "PUT" } else { "GET" },
                    "expires_secs": expires.as_secs(),
                }));
            let signed: serde_json::Value = client.send(request).await?.json().await?;
            println!("{}", signed["url"].as_str().unwrap_or_default());
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn upload(client: &Client, from: &str, r: &Remote<'_>) -> anyhow::Result<()> {
    let body = if from == "-" {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes)?;
        reqwest::Body::from(bytes)
    } else {
        let file = tokio::fs::File::open(from)
            .await
            .with_context(|| format!("cannot read {from}"))?;
        reqwest::Body::from(file)
    };
    let response = client
        .send(client.request(Method::PUT, &object_path(r)).body(body))
        .await?;
    let etag = response
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    println!("uploaded {from} to {}/{}/{} {etag}", r.app, r.bucket, r.key);
    Ok(())
}

async fn download(client: &Client, r: &Remote<'_>, to: &str) -> anyhow::Result<()> {
    let mut response = client
        .send(client.request(Method::GET, &object_path(r)))
        .await?;
    let mut out: Box<dyn Write> = if to == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        let path = if Path::new(to).is_dir() {
            Path::new(to).join(r.key.rsplit('/').next().unwrap_or(r.key))
        } else {
            Path::new(to).to_path_buf()
        };
        Box::new(
            std::fs::File::create(&path)
                .with_context(|| format!("cannot write {}", path.display()))?,
        )
    };
    let mut size = 0u64;
    while let Some(chunk) = response.chunk().await? {
        size += chunk.len() as u64;
        out.write_all(&chunk)?;
    }
    out.flush()?;
    if to != "-" {
        println!(
            "downloaded {}/{}/{} to {to} ({})",
            r.app,
            r.bucket,
            r.key,
            crate::table::bytes(size)
        );
    }
    Ok(())
}

pub async fn run_bucket(conn: &Connection, args: BucketArgs) -> anyhow::Result<ExitCode> {
    let client = Client::connect(conn)?;
    match args.command {
        BucketCommand::Ls { app, output } => {
            let listed = client.get_json(&format!("/v1/apps/{app}/buckets")).await?;
            if output == "json" {
                println!("{}", serde_json::to_string_pretty(&listed)?);
                return Ok(ExitCode::SUCCESS);
            }
            let buckets = listed["buckets"].as_array().cloned().unwrap_or_default();
            if buckets.is_empty() {
                println!("app {app} has no buckets");
                return Ok(ExitCode::SUCCESS);
            }
            let mut table = Table::new(&[
                ("BUCKET", Align::Left),
                ("S3 NAME", Align::Left),
                ("DECLARED", Align::Left),
                ("PUBLIC READ", Align::Left),
            ]);
            for b in &buckets {
                table.row(vec![
                    crate::table::text(&b["name"]),
                    crate::table::text(&b["s3_name"]),
                    if b["declared"] == true {
                        "manifest"
                    } else {
                        "S3 API"
                    }
                    .to_owned(),
                    crate::table::text(&b["public_read"]),
                ]);
            }
            table.print();
            println!(
                "{} objects, {}",
                listed["objects"],
                crate::table::bytes(listed["bytes"].as_u64().unwrap_or(0))
            );
        }
        BucketCommand::Rm { app, bucket, force } => {
            let removed: serde_json::Value = client
                .send(client.request(
                    Method::DELETE,
                    &format!(
                        "/v1/apps/{app}/buckets/{bucket}{}",
                        if force { "?force=true" } else { "" }
                    ),
                ))
                .await?
                .json()
                .await?;
            println!(
                "removed bucket {} of {app}",
                removed["bucket"].as_str().unwrap_or(&bucket)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
