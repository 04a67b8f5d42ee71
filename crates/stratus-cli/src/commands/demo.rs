//! `stratus demo`: the server with the demo application deployed.

use std::os::unix::fs::PermissionsExt;
use std::process::ExitCode;

use anyhow::Context;

use stratus_sandbox::launcher::LauncherHandle;

use super::server::ServerArgs;
use crate::client::{Client, Connection};
use crate::demo_app;

pub async fn run(
    conn: &Connection,
    args: ServerArgs,
    launcher: LauncherHandle,
) -> anyhow::Result<ExitCode> {
    let launcher = super::server::connect(&args, launcher)?;
    let mut config = args.config(conn);
    let (public, admin) = match stratus_server::bind(&config).await {
        Ok(listeners) => listeners,
        Err(err) => {
            eprintln!("note: {err:#}; using free ports instead");
            config.listen.set_port(0);
            config.admin_listen.set_port(0);
            stratus_server::bind(&config).await?
        }
    };
    let (server, info) = super::server::spawn(&config, launcher, public, admin).await?;

    let data_dir = config.data_dir.canonicalize()?;
    let source = data_dir.join("demo");
    write_demo(&source)?;
    let token = std::fs::read_to_string(data_dir.join(stratus_server::TOKEN_FILE))?;
    let client = Client::new(info.admin.clone(), token.trim().to_owned());
    let deployed = super::deploy::deploy_dir(&client, &source, &Default::default()).await?;
    println!(
        "stratus is running: admin {}  public {}  data {}",
        info.admin,
        info.public,
        data_dir.display()
    );
    println!(
        "deployed {} version {} from examples/demo ({})\n",
        deployed.app,
        deployed.version,
        deployed.contents()
    );
    for (function, event) in demo_app::CALLS {
        let invoked =
            super::invoke::invoke(&client, &deployed.app, function, (*event).to_owned(), false)
                .await?;
        println!(
            "$ stratus invoke demo/{function} --data '{event}'\n{}\n  ({}, {:.1} ms{})\n",
            serde_json::to_string(&invoked.body)?,
            if invoked.cold { "cold" } else { "warm" },
            invoked.duration_ms,
            invoked
                .init_ms
                .map(|i| format!(", init {i:.1} ms"))
                .unwrap_or_default(),
        );
    }
    let url = format!("{}/{}{}", info.public, deployed.app, demo_app::HTTP_PATH);
    let response = reqwest::get(&url).await?;
    println!(
        "$ curl {url}\n{} {}\n",
        response.status().as_u16(),
        response.text().await?
    );
    let url = format!("{}/{}{}", info.public, deployed.app, demo_app::SERVICE_PATH);
    let response = reqwest::get(&url).await?;
    println!(
        "$ curl {url}\n{} {}\n",
        response.status().as_u16(),
        response.text().await?
    );
    let data_flag = if config.data_dir.as_os_str() == stratus_server::config::DEFAULT_DATA_DIR {
        String::new()
    } else {
        format!(" --data-dir {}", config.data_dir.display())
    };
    println!(
        "try next, in another terminal (`cargo run --release --` or the built `target/release/stratus`):"
    );
    println!("  stratus{data_flag} invoke demo/greet --data '{{\"name\":\"Grace\"}}' --log");
    println!("  stratus{data_flag} logs demo/greet");
    println!(
        "  curl -H 'Host: demo.localhost' {}/hello/Grace",
        info.public
    );
    println!(
        "  stratus{data_flag} init hello --template python && stratus{data_flag} deploy hello/"
    );
    println!("  stratus{data_flag} ls");
    println!("  stratus{data_flag} status demo");
    println!("press Ctrl-C to stop");
    server.await??;
    Ok(ExitCode::SUCCESS)
}

fn write_demo(dir: &std::path::Path) -> anyhow::Result<()> {
    for (path, content, executable) in demo_app::FILES {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, content)
            .with_context(|| format!("cannot write {}", path.display()))?;
        let mode = if *executable { 0o755 } else { 0o644 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}
