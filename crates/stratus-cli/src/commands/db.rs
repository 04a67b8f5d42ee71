//! `stratus db ls|get|put|rm|query|export|import`: an app's documents,
//! through the admin API. Documents are named `APP/COLLECTION/ID`.

use std::io::{BufRead, Write};
use std::process::ExitCode;

use anyhow::{Context, bail};
use reqwest::Method;
use serde_json::{Value, json};

use crate::client::{Client, Connection};
use crate::table::{Align, Table};

#[derive(Debug, Clone, clap::Args)]
pub struct DbArgs {
    #[command(subcommand)]
    pub command: DbCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum DbCommand {
    /// List an app's collections (APP), or a collection's documents by id
    /// (APP/COLLECTION)
    #[command(visible_alias = "list")]
    Ls {
        target: String,
        /// Documents to list at most
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long, value_parser = ["text", "json"], default_value = "text")]
        output: String,
    },
    /// Print a document (APP/COLLECTION/ID) as JSON
    Get { target: String },
    /// Write a document: APP/COLLECTION/ID replaces (or creates) it,
    /// APP/COLLECTION creates one with a new id. Its fields are a JSON
    /// object, given or read from standard input (`-`, or nothing)
    Put {
        target: String,
        json: Option<String>,
        /// Only if the document is at this version (0: only if it is new)
        #[arg(long)]
        if_version: Option<i64>,
    },
    /// Delete a document (APP/COLLECTION/ID)
    Rm {
        target: String,
        #[arg(long)]
        if_version: Option<i64>,
    },
    /// Query a collection (APP/COLLECTION); prints one document per line
    Query {
        target: String,
        /// A filter: ["FIELD", "OP", VALUE], a list of them, or
        /// {"or": [...]} (OP: == != < <= > >= in contains exists)
        #[arg(long = "where", value_name = "JSON")]
        filter: Option<String>,
        /// Sort keys: FIELD or FIELD:desc, comma-separated
        #[arg(long, value_name = "FIELDS")]
        order_by: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Fields to print, comma-separated
        #[arg(long, value_name = "FIELDS")]
        select: Option<String>,
        /// Scan a large collection that no declared index serves
        #[arg(long)]
        allow_scan: bool,
        /// Print how many documents match instead
        #[arg(long)]
        count: bool,
    },
    /// Write every document of a collection (APP/COLLECTION) as JSON
    /// lines, `{"id": ..., "data": {...}}`, to a file or standard output
    Export {
        target: String,
        /// Where to write; standard output when not given
        file: Option<std::path::PathBuf>,
    },
    /// Write JSON lines (`{"id": ..., "data": {...}}`, as export writes
    /// them, or a bare object, which gets a new id) into a collection
    /// (APP/COLLECTION), replacing documents of the same ids
    Import {
        target: String,
        /// What to read; standard input when not given or `-`
        file: Option<std::path::PathBuf>,
        /// Fire the collection's change triggers for each document
        #[arg(long)]
        triggers: bool,
    },
}

/// `APP`, `APP/COLLECTION` or `APP/COLLECTION/ID`.
struct Target<'a> {
    app: &'a str,
    collection: Option<&'a str>,
    id: Option<&'a str>,
}

fn target(text: &str) -> anyhow::Result<Target<'_>> {
    let mut parts = text.splitn(3, '/');
    let app = parts.next().unwrap_or_default();
    let collection = parts.next().filter(|c| !c.is_empty());
    let id = parts.next().filter(|i| !i.is_empty());
    if app.is_empty() {
        bail!(
            "expected APP, APP/COLLECTION or APP/COLLECTION/ID, e.g. todo/todos/abc, not {text:?}"
        );
    }
    Ok(Target {
        app,
        collection,
        id,
    })
}

fn collection_of<'a>(t: &Target<'a>, text: &str) -> anyhow::Result<&'a str> {
    t.collection
        .with_context(|| format!("expected APP/COLLECTION, e.g. todo/todos, not {text:?}"))
}

fn document_of<'a>(t: &Target<'a>, text: &str) -> anyhow::Result<(&'a str, &'a str)> {
    match (t.collection, t.id) {
        (Some(c), Some(id)) => Ok((c, id)),
        _ => bail!("expected APP/COLLECTION/ID, e.g. todo/todos/abc, not {text:?}"),
    }
}

/// A path segment, percent-encoded.
fn segment(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn base(app: &str) -> String {
    format!("/v1/apps/{app}/db")
}

async fn post_json(client: &Client, path: &str, body: &Value) -> anyhow::Result<Value> {
    let response = client
        .send(client.request(Method::POST, path).json(body))
        .await?;
    Ok(response.json().await?)
}

/// A JSON argument, or standard input when it is `-` or not given.
fn json_input(given: Option<String>) -> anyhow::Result<Value> {
    let text = match given.as_deref() {
        None | Some("-") => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
            text
        }
        Some(text) => text.to_owned(),
    };
    serde_json::from_str(&text)
        .context("the document is not JSON: give an object such as '{\"title\": \"milk\"}'")
}

/// `a,b:desc` as an order.
fn order_by(text: &str) -> Value {
    Value::Array(
        text.split(',')
            .filter(|f| !f.is_empty())
            .map(|field| match field.rsplit_once(':') {
                Some((field, dir)) => json!([field, dir]),
                None => json!(field),
            })
            .collect(),
    )
}

pub async fn run(conn: &Connection, args: DbArgs) -> anyhow::Result<ExitCode> {
    let client = Client::connect(conn)?;
    match args.command {
        DbCommand::Ls {
            target: text,
            limit,
            output,
        } => {
            let t = target(&text)?;
            let Some(collection) = t.collection else {
                return list_collections(&client, t.app, &output).await;
            };
            let page = client
                .send(
                    client
                        .request(Method::GET, &format!("{}/{collection}", base(t.app)))
                        .query(&[("limit", limit)]),
                )
                .await?
                .json::<Value>()
                .await?;
            let documents = page["documents"].as_array().cloned().unwrap_or_default();
            if output == "json" {
                println!("{}", serde_json::to_string_pretty(&documents)?);
                return Ok(ExitCode::SUCCESS);
            }
            if documents.is_empty() {
                println!("no documents in {text}");
                return Ok(ExitCode::SUCCESS);
            }
            let mut table = Table::new(&[
                ("ID", Align::Left),
                ("VERSION", Align::Right),
                ("UPDATED", Align::Left),
                ("DATA", Align::Left),
            ]);
            for d in &documents {
                let mut data = d["data"].to_string();
                if data.chars().count() > 100 {
                    data = data.chars().take(97).collect::<String>() + "...";
                }
                table.row(vec![
                    crate::table::text(&d["id"]),
                    crate::table::text(&d["version"]),
                    crate::table::time(&d["updated_ms"]),
                    data,
                ]);
            }
            table.print();
            if page["next"].is_string() {
                println!("(more: raise --limit, or use `stratus db export`)");
            }
        }
        DbCommand::Get { target: text } => {
            let t = target(&text)?;
            let (collection, id) = document_of(&t, &text)?;
            let doc = client
                .get_json(&format!("{}/{collection}/{}", base(t.app), segment(id)))
                .await?;
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        DbCommand::Put {
            target: text,
            json,
            if_version,
        } => {
            let t = target(&text)?;
            let collection = collection_of(&t, &text)?;
            let data = json_input(json)?;
            let doc = match t.id {
                Some(id) => {
                    let mut request = client
                        .request(
                            Method::PUT,
                            &format!("{}/{collection}/{}", base(t.app), segment(id)),
                        )
                        .json(&data);
                    if let Some(v) = if_version {
                        request = request.query(&[("if_version", v)]);
                    }
                    client.send(request).await?.json::<Value>().await?
                }
                None => {
                    if if_version.is_some() {
                        bail!("--if-version needs the document's id: APP/COLLECTION/ID");
                    }
                    post_json(&client, &format!("{}/{collection}", base(t.app)), &data).await?
                }
            };
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        DbCommand::Rm {
            target: text,
            if_version,
        } => {
            let t = target(&text)?;
            let (collection, id) = document_of(&t, &text)?;
            let mut request = client.request(
                Method::DELETE,
                &format!("{}/{collection}/{}", base(t.app), segment(id)),
            );
            if let Some(v) = if_version {
                request = request.query(&[("if_version", v)]);
            }
            let answer: Value = client.send(request).await?.json().await?;
            if answer["deleted"] == true {
                println!("deleted {text}");
            } else {
                println!("{text} was not there");
            }
        }
        DbCommand::Query {
            target: text,
            filter,
            order_by: order,
            limit,
            select,
            allow_scan,
            count,
        } => {
            let t = target(&text)?;
            let collection = collection_of(&t, &text)?;
            let filter: Value = match filter {
                Some(f) => serde_json::from_str(&f)
                    .context("--where is not JSON: give e.g. '[\"done\", \"==\", false]'")?,
                None => Value::Null,
            };
            if count {
                let answer = post_json(
                    &client,
                    &format!("{}/{collection}/_count", base(t.app)),
                    &json!({ "where": filter, "allow_scan": allow_scan }),
                )
                .await?;
                println!("{}", answer["count"]);
                return Ok(ExitCode::SUCCESS);
            }
            let request = json!({
                "where": filter,
                "order_by": order.as_deref().map(order_by),
                "limit": limit,
                "select": select.map(|s| s.split(',').map(str::to_owned).collect::<Vec<_>>()),
                "allow_scan": allow_scan,
            });
            let page = post_json(
                &client,
                &format!("{}/{collection}/_query", base(t.app)),
                &request,
            )
            .await?;
            let mut out = std::io::stdout().lock();
            for d in page["documents"].as_array().into_iter().flatten() {
                writeln!(out, "{d}")?;
            }
        }
        DbCommand::Export { target: text, file } => {
            let t = target(&text)?;
            let collection = collection_of(&t, &text)?;
            let mut out: Box<dyn Write> = match &file {
                Some(path) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(path)
                        .with_context(|| format!("cannot write {}", path.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            let mut after: Option<String> = None;
            let mut written = 0u64;
            loop {
                let page = post_json(
                    &client,
                    &format!("{}/{collection}/_query", base(t.app)),
                    &json!({ "limit": 1000, "after": after }),
                )
                .await?;
                for d in page["documents"].as_array().into_iter().flatten() {
                    writeln!(out, "{}", json!({ "id": d["id"], "data": d["data"] }))?;
                    written += 1;
                }
                match page["next"].as_str() {
                    Some(next) => after = Some(next.to_owned()),
                    None => break,
                }
            }
            out.flush()?;
            if let Some(path) = file {
                eprintln!("exported {written} documents to {}", path.display());
            }
        }
        DbCommand::Import {
            target: text,
            file,
            triggers,
        } => {
            let t = target(&text)?;
            let collection = collection_of(&t, &text)?;
            let input: Box<dyn BufRead> = match file.as_deref() {
                Some(path) if path != std::path::Path::new("-") => {
                    Box::new(std::io::BufReader::new(
                        std::fs::File::open(path)
                            .with_context(|| format!("cannot read {}", path.display()))?,
                    ))
                }
                _ => Box::new(std::io::stdin().lock()),
            };
            let path = format!("{}/_transaction?triggers={triggers}", base(t.app));
            let mut batch = Vec::new();
            let mut imported = 0u64;
            for (n, line) in input.lines().enumerate() {
                let line = line?;
                if line.trim().is_empty() {
                    continue;
                }
                let value: Value = serde_json::from_str(&line)
                    .with_context(|| format!("line {} is not JSON", n + 1))?;
                let write = match (&value["id"], &value["data"]) {
                    (Value::String(id), data @ Value::Object(_)) => {
                        json!({ "op": "set", "collection": collection, "id": id, "data": data })
                    }
                    _ if value.is_object() => {
                        json!({ "op": "create", "collection": collection, "data": value })
                    }
                    _ => bail!(
                        "line {} is neither {{\"id\": ..., \"data\": {{...}}}} nor a document's fields",
                        n + 1
                    ),
                };
                batch.push(write);
                if batch.len() == IMPORT_BATCH {
                    post_json(&client, &path, &json!({ "writes": batch }))
                        .await
                        .with_context(|| format!("importing the lines up to {}", n + 1))?;
                    imported += batch.len() as u64;
                    batch.clear();
                }
            }
            if !batch.is_empty() {
                post_json(&client, &path, &json!({ "writes": batch })).await?;
                imported += batch.len() as u64;
            }
            println!("imported {imported} documents into {text}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Documents written in one transaction of an import.
const IMPORT_BATCH: usize = 500;

async fn list_collections(client: &Client, app: &str, output: &str) -> anyhow::Result<ExitCode> {
    let listed = client.get_json(&base(app)).await?;
    if output == "json" {
        println!("{}", serde_json::to_string_pretty(&listed)?);
        return Ok(ExitCode::SUCCESS);
    }
    let collections = listed["collections"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if collections.is_empty() {
        println!("app {app} has no collections");
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(&[
        ("COLLECTION", Align::Left),
        ("DOCUMENTS", Align::Right),
        ("SIZE", Align::Right),
        ("DECLARED", Align::Left),
    ]);
    for c in &collections {
        table.row(vec![
            crate::table::text(&c["name"]),
            crate::table::text(&c["documents"]),
            crate::table::bytes(c["bytes"].as_u64().unwrap_or(0)),
            if c["declared"] == true { "yes" } else { "no" }.to_owned(),
        ]);
    }
    table.print();
    Ok(ExitCode::SUCCESS)
}
