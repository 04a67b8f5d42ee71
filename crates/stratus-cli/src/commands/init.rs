//! `stratus init NAME --template python|nodejs|provided`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};

use crate::templates::Template;

#[derive(Debug, Clone, clap::Args)]
pub struct InitArgs {
    /// Directory to create; its last component is the application's name
    pub name: PathBuf,
    /// Which starter function to write
    #[arg(long, value_enum, default_value_t = Template::Python)]
    pub template: Template,
    /// `json` prints what was done as one object
    #[arg(long, value_parser = ["text", "json"], default_value = "text")]
    pub output: String,
}

pub fn run(args: InitArgs) -> anyhow::Result<ExitCode> {
    let app = args
        .name
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_owned();
    if !stratus_manifest::is_valid_name(&app) {
        bail!(
            "{app:?} is not a valid application name: use lowercase letters, digits and '-', starting with a letter, at most 40 characters"
        );
    }
    if args.name.exists() && std::fs::read_dir(&args.name)?.next().is_some() {
        bail!(
            "{} already exists and is not empty; choose another name",
            args.name.display()
        );
    }
    for file in args.template.files(&app) {
        let path = args.name.join(file.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, &file.content)
            .with_context(|| format!("cannot write {}", path.display()))?;
        if file.executable {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    let dir = args.name.display();
    if args.output == "json" {
        println!(
            "{}",
            serde_json::json!({
                "created": args.name,
                "app": app,
                "template": args.template.name(),
            })
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("created {dir} ({} template)", args.template.name());
    println!("next:");
    println!("  stratus deploy {dir}");
    println!("  stratus invoke {app}/greet --data '{{\"name\":\"Ada\"}}'");
    println!("  stratus logs {app}/greet");
    Ok(ExitCode::SUCCESS)
}
