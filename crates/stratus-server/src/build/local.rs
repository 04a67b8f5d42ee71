//! `stratus deploy --build local`: the installs a server's build runs
//! (the same plans, commands and places), run on the deploying machine
//! into a copy of the code before it is packed, for servers that must not
//! reach the package registries. The server then finds the dependencies
//! in place and builds nothing.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::plan::{self, NODE_LAYER_DIR, PYTHON_LAYER_DIR, Places, Tool};
use super::{Named, Tools};

/// This machine's interpreters and build tools.
pub struct LocalBuilder {
    tools: Tools,
}

impl LocalBuilder {
    /// Finds them as a server would (`STRATUS_PYTHON`, `STRATUS_NODE`,
    /// `STRATUS_UV`, PATH).
    pub async fn discover() -> anyhow::Result<LocalBuilder> {
        let found = crate::runtimes::find_interpreters(&[]).await?;
        let uv = std::env::var_os(crate::config::env::UV).map(PathBuf::from);
        Ok(LocalBuilder {
            tools: Tools::discover(stratus_scheduler::Languages::new(found), uv),
        })
    }

    /// What this machine's interpreter for `runtime` is, in the words of
    /// the server's `GET /v1/runtimes` (`identity`).
    pub fn identity(&self, runtime: Named<'_>) -> Option<&str> {
        self.tools.language(runtime)?.identity.as_deref()
    }

    /// Installs what `code` (a writable copy of a code directory) declares
    /// for `runtime` into it, each command's output on standard error.
    /// Returns what it ran, or `None` when there is nothing to install.
    pub async fn install(&self, code: &Path, runtime: Named<'_>) -> Result<Option<String>, String> {
        let Some(plan) = plan::plan(code, runtime.0, &self.tools.toolchain(runtime))? else {
            return Ok(None);
        };
        let interpreter = self
            .tools
            .language(runtime)
            .map(|l| l.interpreter.executable.clone())
            .ok_or_else(|| format!("this machine has no {}", runtime.0.name_at(runtime.1)))?;
        // uv.lock's export goes beside the copy, not into what is uploaded.
        let exported = code.with_extension("requirements.txt");
        let (python, code_at, target, exported_at) = (
            interpreter.display().to_string(),
            code.display().to_string(),
            code.join(PYTHON_LAYER_DIR).display().to_string(),
            exported.display().to_string(),
        );
        let places = Places {
            code: &code_at,
            target: &target,
            python: &python,
            exported: &exported_at,
            cache: None,
        };
        let mut steps = Vec::new();
        for invocation in plan.invocations(self.tools.uv.is_some(), &places) {
            let missing = |tool: &str| format!("{tool} is not installed on this machine");
            let (program, mut args) = match invocation.tool {
                Tool::Uv => (
                    self.tools.uv.clone().ok_or_else(|| missing("uv"))?,
                    Vec::new(),
                ),
                Tool::Pip => (interpreter.clone(), Vec::new()),
                Tool::Npm | Tool::Pnpm | Tool::Yarn => {
                    let script = self.tools.node_script(invocation.tool, "this machine")?;
                    (interpreter.clone(), vec![script.display().to_string()])
                }
                // Only language runtimes are installed here.
                Tool::Shell => return Ok(None),
            };
            args.extend(invocation.args);
            steps.push((program, args));
        }
        let ran = run_steps(code, &steps).await;
        let _ = std::fs::remove_file(&exported);
        ran?;
        // The place the server's build would have filled, filled: also
        // when nothing was to install, so the server does not try.
        let made = match plan.recipe.layer_dir() {
            NODE_LAYER_DIR => code.join(NODE_LAYER_DIR),
            _ => code.join(PYTHON_LAYER_DIR),
        };
        std::fs::create_dir_all(&made)
            .map_err(|e| format!("cannot make {}: {e}", made.display()))?;
        Ok(Some(plan.recipe.describe().to_owned()))
    }
}

/// Runs each of `steps` in `code`, its output on standard error.
async fn run_steps(code: &Path, steps: &[(PathBuf, Vec<String>)]) -> Result<(), String> {
    for (program, args) in steps {
        eprintln!("$ {} {}", program.display(), args.join(" "));
        let status = tokio::process::Command::new(program)
            .args(args)
            .current_dir(code)
            .env("UV_PYTHON_DOWNLOADS", "never")
            .env("npm_config_update_notifier", "false")
            .env("npm_config_fund", "false")
            .env("npm_config_audit", "false")
            .stdin(Stdio::null())
            .stdout(Stdio::from(std::io::stderr()))
            .status()
            .await
            .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
        if !status.success() {
            return Err(format!("`{}` exited with {status}", program.display()));
        }
    }
    Ok(())
}
