//! Deploys that install dependencies: `requirements.txt` and `uv.lock`
//! with uv (or pip), `package-lock.json` with `npm ci`, into a layer kept
//! by what it was built from, so a change of code alone reuses it. A build
//! that fails deploys nothing, and the active version keeps serving.
//!
//! Runs in both isolation modes (CI runs it again with STRATUS_ISOLATION=none).

mod common;

use std::path::Path;
use std::process::Command;

use common::{Server, client, write_app};

/// `stratus deploy DIR`, insisting that it succeeds; returns what it
/// printed to standard error (the build's progress).
fn deploy(server: &Server, dir: &str) -> String {
    let out = server.cli(&["deploy", server.path(dir).to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "deploy {dir} failed:\n{}\n{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

/// Writes `dir`'s `package-lock.json` without installing anything.
fn lock_npm(dir: &Path) {
    let locked = Command::new("npm")
        .args([
            "install",
            "--package-lock-only",
            "--no-audit",
            "--no-fund",
            "--silent",
        ])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        locked.status.success(),
        "npm install --package-lock-only: {locked:?}"
    );
}

fn builds(server: &Server, app: &str) -> Vec<serde_json::Value> {
    let listed: serde_json::Value =
        serde_json::from_str(&server.ok(&["builds", "ls", app, "--output", "json"])).unwrap();
    listed["builds"].as_array().unwrap().clone()
}

fn get(server: &Server, path: &str) -> (u16, String) {
    let response = client()
        .get(format!("{}{path}", server.public))
        .send()
        .unwrap();
    (response.status().as_u16(), response.text().unwrap())
}

const FASTAPI_MANIFEST: &str = "app: fast
functions:
  api:
    runtime: python3
    handler: main.handler
    code: ./src
    http: { path: /* }
";

const FASTAPI_MAIN: &str = r#"import numpy
from fastapi import FastAPI
from mangum import Mangum

app = FastAPI()

@app.get("/sum/{n}")
def total(n: int):
    return {"sum": int(numpy.arange(n).sum()), "numpy": numpy.__file__}

handler = Mangum(app, lifespan="off")
"#;

#[test]
fn python_requirements_install_on_deploy_and_a_code_change_reuses_them() {
    let server = Server::start();
    let app = server.path("fast");
    write_app(
        &app,
        &[
            ("stratus.yaml", FASTAPI_MANIFEST),
            ("src/requirements.txt", "fastapi\nmangum\nnumpy\n"),
            ("src/main.py", FASTAPI_MAIN),
        ],
    );
    let said = deploy(&server, "fast");
    assert!(
        said.contains("==> src (python3): install Python requirements"),
        "{said}"
    );
    // None of them is on the host: the build installed them.
    for module in ["fastapi", "mangum", "numpy"] {
        let on_host = Command::new(common::python())
            .args(["-c", &format!("import {module}")])
            .output()
            .unwrap();
        assert!(
            !on_host.status.success(),
            "{module} is installed on the host, which proves nothing"
        );
    }
    let (status, body) = get(&server, "/fast/sum/5");
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["sum"], 10, "{answer}");
    assert!(
        answer["numpy"]
            .as_str()
            .unwrap()
            .contains(".stratus/python/numpy/"),
        "{answer}"
    );
    // Nothing was written into the code the user deployed.
    assert!(!app.join("src/.stratus").exists());
    let first = builds(&server, "fast");
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0]["status"], "succeeded");
    assert_eq!(first[0]["version"], 1);
    assert_eq!(first[0]["cache_hits"], 0);

    // A change of code alone reuses the layer.
    std::fs::write(
        app.join("src/main.py"),
        FASTAPI_MAIN.replace("\"sum\"", "\"total\""),
    )
    .unwrap();
    let said = deploy(&server, "fast");
    assert!(said.contains(": cached (layer "), "{said}");
    let (_, body) = get(&server, "/fast/sum/4");
    assert!(body.contains("\"total\":6"), "{body}");
    let second = builds(&server, "fast");
    assert_eq!(second.len(), 2);
    assert_eq!(second[0]["version"], 2);
    assert_eq!(second[0]["cache_hits"], 1, "{:?}", second[0]);

    // A requirement that cannot be had fails the deploy with the
    // installer's own words; version 2 keeps serving.
    std::fs::write(
        app.join("src/requirements.txt"),
        "fastapi\nmangum\nnumpy\nno-such-package-stratus-test==1.0\n",
    )
    .unwrap();
    let failed = server.fails(&["deploy", app.to_str().unwrap()]);
    assert!(
        failed.contains("no-such-package-stratus-test")
            && failed.contains("nothing was deployed")
            && failed.contains("the active version keeps serving"),
        "{failed}"
    );
    let (status, body) = get(&server, "/fast/sum/4");
    assert_eq!(status, 200);
    assert!(body.contains("\"total\":6"), "{body}");
    let versions: serde_json::Value =
        serde_json::from_str(&server.ok(&["versions", "fast", "--output", "json"])).unwrap();
    assert_eq!(versions["active"], 2, "{versions}");
    let third = builds(&server, "fast");
    assert_eq!(third[0]["status"], "failed", "{:?}", third[0]);
    assert!(third[0]["version"].is_null());
    let shown = server.ok(&["builds", "show", "fast", third[0]["id"].as_str().unwrap()]);
    assert!(
        shown.contains("failed") && shown.contains("no-such-package-stratus-test"),
        "{shown}"
    );
    let table = server.ok(&["builds", "ls", "fast"]);
    assert_eq!(table.lines().count(), 4, "{table}");
    let missing = server.fails(&["builds", "show", "fast", "20200101-000000-0000"]);
    assert!(missing.contains("has no build"), "{missing}");
}

/// The uv executable beside the interpreter (`pip install uv`) or on PATH.
fn uv() -> String {
    let python = common::python();
    let beside = Path::new(&python).parent().unwrap().join("uv");
    if beside.exists() {
        return beside.display().to_string();
    }
    let found = Command::new("uv").arg("--version").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "uv is needed to lock the test project (python3 -m pip install uv)"
    );
    "uv".to_owned()
}

#[test]
fn a_uv_project_installs_what_its_lock_file_pins_and_nothing_of_the_host_s() {
    let server = Server::start();
    let app = server.path("locked");
    write_app(
        &app,
        &[
            (
                "stratus.yaml",
                "app: locked\nfunctions:\n  f:\n    runtime: python3\n    handler: main.handler\n",
            ),
            (
                "pyproject.toml",
                "[project]\nname = \"locked\"\nversion = \"0.1.0\"\nrequires-python = \">=3.8\"\ndependencies = [\"six==1.16.0\"]\n",
            ),
            (
                "main.py",
                "import importlib.util, six\n\ndef handler(event, context):\n    return {'six': six.__version__, 'at': six.__file__, 'host_pip': importlib.util.find_spec('pip') is not None}\n",
            ),
        ],
    );
    let locked = Command::new(uv())
        .arg("lock")
        .current_dir(&app)
        .output()
        .unwrap();
    assert!(locked.status.success(), "uv lock: {locked:?}");
    let said = deploy(&server, "locked");
    assert!(said.contains("uv.lock"), "{said}");
    let answer = server.invoke("locked/f", "{}");
    assert_eq!(answer["result"]["six"], "1.16.0", "{answer}");
    assert!(
        answer["result"]["at"]
            .as_str()
            .unwrap()
            .contains(".stratus/python/"),
        "{answer}"
    );
    // What the host's interpreter has installed is not the function's:
    // pip is in its site-packages.
    assert_eq!(answer["result"]["host_pip"], false, "{answer}");
}

#[test]
fn node_dependencies_and_a_native_addon_install_from_the_lock_file() {
    let server = Server::start();
    let app = server.path("shop");
    write_app(
        &app,
        &[
            (
                "stratus.yaml",
                "app: shop\nfunctions:\n  api:\n    runtime: nodejs\n    handler: app.handler\n    code: ./api\n    http: { path: /* }\n",
            ),
            (
                "api/package.json",
                r#"{"name": "shop", "version": "1.0.0", "private": true,
                    "dependencies": {"express": "^4.21.0", "serverless-http": "^3.2.0", "bcrypt": "^6.0.0"}}"#,
            ),
            (
                "api/app.js",
                r#"const express = require("express");
const serverless = require("serverless-http");
const bcrypt = require("bcrypt");
const app = express();
app.get("/items/:id", (req, res) =>
  res.json({
    id: req.params.id,
    express: require.resolve("express"),
    // A native addon.
    bcrypt: bcrypt.compareSync(req.params.id, bcrypt.hashSync(req.params.id, 4)),
  }));
module.exports.handler = serverless(app);
"#,
            ),
        ],
    );
    lock_npm(&app.join("api"));
    assert!(!app.join("api/node_modules").exists());
    let said = deploy(&server, "shop");
    assert!(said.contains("npm ci"), "{said}");
    let (status, body) = get(&server, "/shop/items/7");
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["id"], "7");
    assert_eq!(answer["bcrypt"], true, "{answer}");
    assert!(
        answer["express"]
            .as_str()
            .unwrap()
            .contains("node_modules/express/"),
        "{answer}"
    );
    assert_eq!(builds(&server, "shop")[0]["status"], "succeeded");
}

#[test]
fn a_flask_service_runs_under_the_gunicorn_its_requirements_install() {
    let server = Server::start();
    write_app(
        &server.path("svc"),
        &[
            (
                "stratus.yaml",
                r#"app: svc
services:
  web:
    runtime: python3
    code: ./web
    command: ["gunicorn", "-b", "0.0.0.0:$PORT", "app:app"]
"#,
            ),
            ("web/requirements.txt", "flask>=3\ngunicorn>=22\n"),
            (
                "web/app.py",
                r#"import gunicorn
from flask import Flask

app = Flask(__name__)

@app.get("/")
def index():
    return {"served_by": "gunicorn " + gunicorn.__version__, "at": gunicorn.__file__}
"#,
            ),
        ],
    );
    deploy(&server, "svc");
    let (status, body) = get(&server, "/svc/");
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        answer["served_by"]
            .as_str()
            .unwrap()
            .starts_with("gunicorn "),
        "{answer}"
    );
    assert!(
        answer["at"].as_str().unwrap().contains(".stratus/python/"),
        "{answer}"
    );
}

#[test]
fn a_package_manager_the_platform_does_not_run_is_refused_saying_what_to_do() {
    let server = Server::start();
    write_app(
        &server.path("poet"),
        &[
            (
                "stratus.yaml",
                "app: poet\nfunctions:\n  f:\n    runtime: python3\n    handler: main.handler\n",
            ),
            (
                "pyproject.toml",
                "[tool.poetry]\nname = \"poet\"\n[tool.poetry.dependencies]\nsix = \"*\"\n",
            ),
            ("poetry.lock", "# poetry\n"),
            ("main.py", "def handler(event, context):\n    return 1\n"),
        ],
    );
    let failed = server.fails(&["deploy", server.path("poet").to_str().unwrap()]);
    assert!(
        failed.contains("poetry") && failed.contains("nothing was deployed"),
        "{failed}"
    );
    let listed = server.ok(&["ls", "--output", "json"]);
    assert!(!listed.contains("poet"), "{listed}");
}

/// The pids of `sleep 4242`, the slow package's setup.py.
fn sleepers() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            (cmdline == b"sleep\x004242\x00").then_some(pid)
        })
        .collect()
}

#[test]
fn a_build_cut_short_by_a_crash_leaves_nothing_half_made() {
    let mut server = Server::start();
    let app = server.path("slow");
    write_app(
        &app,
        &[
            (
                "stratus.yaml",
                "app: slow\nfunctions:\n  f:\n    runtime: python3\n    handler: main.handler\n",
            ),
            ("requirements.txt", "./slowpkg\n"),
            (
                "slowpkg/setup.py",
                "import subprocess\nsubprocess.run(['sleep', '4242'])\nfrom setuptools import setup\nsetup(name='slowpkg', version='1.0')\n",
            ),
            (
                "main.py",
                "import six\n\ndef handler(event, context):\n    return six.__version__\n",
            ),
        ],
    );
    let mut deploying = Command::new(common::BIN)
        .arg("--data-dir")
        .arg(&server.data_dir)
        .args(["deploy", app.to_str().unwrap()])
        .env("STRATUS_CONFIG_DIR", common::config_dir(&server.data_dir))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The build is in the package's setup.py, sleeping.
    common::eventually(std::time::Duration::from_secs(120), || {
        if sleepers().is_empty() {
            return Err("setup.py has not started".to_owned());
        }
        Ok(())
    });
    assert_eq!(builds(&server, "slow")[0]["status"], "running");
    server.kill();
    let _ = deploying.wait();
    // Nothing of the build outlives the server.
    common::eventually(std::time::Duration::from_secs(15), || {
        match sleepers().len() {
            0 => Ok(()),
            n => Err(format!("{n} build processes outlived the server")),
        }
    });

    server.restart();
    let interrupted = builds(&server, "slow");
    assert_eq!(interrupted[0]["status"], "interrupted", "{interrupted:?}");
    let layers = server.data_dir.join("layers");
    let half_made: Vec<_> = std::fs::read_dir(&layers)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(half_made.is_empty(), "{half_made:?}");
    let listed = server.ok(&["ls", "--output", "json"]);
    assert!(!listed.contains("\"slow\""), "{listed}");

    // The next deploy builds from the start.
    std::fs::write(app.join("requirements.txt"), "six==1.16.0\n").unwrap();
    deploy(&server, "slow");
    assert_eq!(server.invoke("slow/f", "{}")["result"], "1.16.0");
}

/// A custom runtime whose answer comes from a program the deploy compiles.
const SHELL_RUNTIME: &str = r#"#!/bin/sh
set -eu
API="http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime"
while true; do
  HEADERS="$(mktemp)"
  curl -sS -D "$HEADERS" -o /dev/null "$API/invocation/next"
  ID="$(grep -i '^lambda-runtime-aws-request-id:' "$HEADERS" | tr -d '[:space:]' | cut -d: -f2)"
  rm -f "$HEADERS"
  curl -sS -o /dev/null -X POST "$API/invocation/$ID/response" -d "\"$(./bin/greet)\""
done
"#;

fn compiled_app(server: &Server, source: &str, output: &str) {
    write_app(
        &server.path("native"),
        &[
            (
                "stratus.yaml",
                &format!(
                    "app: native\nfunctions:\n  greet:\n    runtime: provided\n    code: ./fn\n    build:\n      command: mkdir -p bin && make\n      output: {output}\n"
                ),
            ),
            ("fn/bootstrap", SHELL_RUNTIME),
            (
                "fn/Makefile",
                "bin/greet: greet.c\n\tcc -O2 -o bin/greet greet.c\n",
            ),
            ("fn/greet.c", source),
        ],
    );
}

/// `build.command` compiles what a `provided` function runs: the outputs
/// it names are laid over the code; a compile error deploys nothing and
/// shows the compiler's message; an output it did not make is named.
#[test]
fn a_build_command_compiles_what_a_custom_runtime_runs() {
    let server = Server::start();
    let greet = |word: &str| {
        format!("#include <stdio.h>\nint main(void) {{ printf(\"{word} from C\"); return 0; }}\n")
    };
    compiled_app(&server, &greet("hello"), "bin/greet");
    let said = deploy(&server, "native");
    assert!(
        said.contains("==> fn (build): mkdir -p bin && make"),
        "{said}"
    );
    assert!(said.contains("cc -O2 -o bin/greet greet.c"), "{said}");
    assert_eq!(
        server.invoke("native/greet", "{}")["result"],
        "hello from C"
    );
    // The uploaded code stays as it was: the binary is the build's.
    assert!(!server.path("native/fn/bin").exists());

    // A compile error: the compiler's words, and the old version serves.
    compiled_app(&server, "int main(void) { return nope; }\n", "bin/greet");
    let failed = server.fails(&["deploy", server.path("native").to_str().unwrap()]);
    assert!(
        failed.contains("nope") && failed.contains("nothing was deployed"),
        "{failed}"
    );
    assert_eq!(
        server.invoke("native/greet", "{}")["result"],
        "hello from C"
    );

    // An output the build did not make.
    compiled_app(&server, &greet("hi"), "bin/other");
    let failed = server.fails(&["deploy", server.path("native").to_str().unwrap()]);
    assert!(
        failed.contains("did not make bin/other, which build.output names"),
        "{failed}"
    );

    compiled_app(&server, &greet("hi"), "bin/greet");
    deploy(&server, "native");
    assert_eq!(server.invoke("native/greet", "{}")["result"], "hi from C");
    let listed = builds(&server, "native");
    assert_eq!(listed.len(), 4, "{listed:?}");

    // A language runtime installs its dependencies instead.
    write_app(
        &server.path("mixed"),
        &[(
            "stratus.yaml",
            "app: mixed\nfunctions:\n  f:\n    runtime: python3\n    handler: main.handler\n    build: { command: make, output: x }\n",
        )],
    );
    let refused = server.fails(&["deploy", server.path("mixed").to_str().unwrap()]);
    assert!(
        refused.contains("`build:` is for code without a language runtime"),
        "{refused}"
    );
}

/// `deploy --build local` installs with this machine's tools before the
/// upload: the server builds nothing (no build is recorded) and the
/// functions import what was installed. `stratus runtimes` names what the
/// server runs; a machine whose interpreter differs is refused.
#[test]
fn a_local_build_installs_before_upload_and_the_server_builds_nothing() {
    let server = Server::start();
    let app = server.path("here");
    write_app(
        &app,
        &[
            (
                "stratus.yaml",
                "app: here\nfunctions:\n  py:\n    runtime: python3\n    handler: main.handler\n    code: ./py\n  js:\n    runtime: nodejs\n    handler: index.handler\n    code: ./js\n",
            ),
            ("py/requirements.txt", "six==1.16.0\n"),
            (
                "py/main.py",
                "import six\n\ndef handler(event, context):\n    return {'six': six.__version__, 'at': six.__file__}\n",
            ),
            // Left out of the upload, as a developer's own would be; the
            // local build's must not be.
            ("py/.stratusignore", ".stratus/\n"),
            (
                "js/package.json",
                r#"{"name": "here", "version": "1.0.0", "private": true, "dependencies": {"ms": "2.1.3"}}"#,
            ),
            (
                "js/index.js",
                "const ms = require('ms');\nexports.handler = async () => ({ day: ms('1d'), at: require.resolve('ms') });\n",
            ),
        ],
    );
    lock_npm(&app.join("js"));

    let runtimes = server.ok(&["runtimes"]);
    assert!(
        runtimes.contains("python3") && runtimes.contains("nodejs") && runtimes.contains("uv"),
        "{runtimes}"
    );

    let out = server.cli(&["deploy", app.to_str().unwrap(), "--build", "local"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("py (python3): install Python requirements with uv, on this machine")
            && said.contains("js (nodejs): npm ci --omit=dev, on this machine"),
        "{said}"
    );
    assert!(
        !said.contains("==> py (python3): install Python requirements with uv\n"),
        "{said}"
    );
    assert!(builds(&server, "here").is_empty(), "the server built");
    let py = server.invoke("here/py", "{}");
    assert_eq!(py["result"]["six"], "1.16.0", "{py}");
    assert!(
        py["result"]["at"]
            .as_str()
            .unwrap()
            .contains(".stratus/python/"),
        "{py}"
    );
    let js = server.invoke("here/js", "{}");
    assert_eq!(js["result"]["day"], 86_400_000, "{js}");
    // The developer's directories are as they were.
    assert!(!app.join("py/.stratus").exists() && !app.join("js/node_modules").exists());

    // Another Node.js here than the server's: refused, nothing deployed.
    let fake = server.path("fake-node");
    // Answers as node answers the server's question: its path, then what it is.
    std::fs::write(&fake, "#!/bin/sh\nprintf '%s\\n\\nv99.0.0 x64\\n' \"$0\"\n").unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(
        app.join("js/index.js"),
        "exports.handler = async () => 'changed';\n",
    )
    .unwrap();
    let out = common::output_with_stdin(
        Command::new(common::BIN)
            .arg("--data-dir")
            .arg(&server.data_dir)
            .args(["deploy", app.to_str().unwrap(), "--build", "local"])
            .env("STRATUS_CONFIG_DIR", common::config_dir(&server.data_dir))
            .env("STRATUS_NODE", &fake),
        "",
    );
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        said.contains("the server runs nodejs as v")
            && said.contains("this machine as v99.0.0 x64"),
        "{said}"
    );
    assert_ne!(server.invoke("here/js", "{}")["result"], "changed");
}

/// A web server in C, built at deploy by a service's `build:` and run as
/// its command.
const C_SERVER: &str = r#"#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(void) {
    int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in at = {0};
    at.sin_family = AF_INET;
    at.sin_port = htons(atoi(getenv("PORT")));
    if (bind(s, (struct sockaddr *)&at, sizeof at) || listen(s, 64)) { perror("listen"); return 1; }
    for (;;) {
        int c = accept(s, 0, 0);
        char request[4096];
        if (c < 0 || read(c, request, sizeof request) <= 0) { if (c >= 0) close(c); continue; }
        const char *answer = "HTTP/1.1 200 OK\r\nContent-Length: 12\r\nConnection: close\r\n\r\nserved by C\n";
        write(c, answer, strlen(answer));
        close(c);
    }
}
"#;

/// A service without a runtime builds its binary with `build:` too; the
/// source stays as uploaded, the binary is the build's.
#[test]
fn a_service_runs_what_its_build_command_compiled() {
    let server = Server::start();
    write_app(
        &server.path("csvc"),
        &[
            (
                "stratus.yaml",
                "app: csvc\nservices:\n  web:\n    code: ./web\n    command: [\"./out/server\"]\n    build:\n      command: mkdir -p out && cc -O2 -o out/server server.c\n      output: out\n",
            ),
            ("web/server.c", C_SERVER),
        ],
    );
    let said = deploy(&server, "csvc");
    assert!(
        said.contains("==> web (build): mkdir -p out && cc"),
        "{said}"
    );
    let (status, body) = get(&server, "/csvc/web/");
    assert_eq!((status, body.as_str()), (200, "served by C\n"));
    assert!(!server.path("csvc/web/out").exists());
}

/// What `command` prints, trimmed.
fn printed(command: &mut Command) -> String {
    let out = command.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Runtime names may carry versions, as Lambda's do; `stratus runtimes`
/// names the server's, and an app that names one the server does not run
/// is refused with the list of those it does.
#[test]
fn versioned_runtime_names_run_on_the_server_s_interpreters_or_are_refused() {
    let server = Server::start();
    let python = printed(
        Command::new(common::python())
            .args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"]),
    );
    let node = printed(Command::new("node").args(["-p", "process.versions.node.split('.')[0]"]));
    let listed = server.ok(&["runtimes"]);
    assert!(
        listed.contains(&format!("python{python}")) && listed.contains(&format!("nodejs{node}")),
        "{listed}"
    );
    let app = |py: &str, js: &str| {
        write_app(
            &server.path("named"),
            &[
                (
                    "stratus.yaml",
                    &format!(
                        "app: named\nfunctions:\n  py:\n    runtime: {py}\n    handler: main.handler\n  js:\n    runtime: {js}\n    handler: index.handler\n"
                    ),
                ),
                (
                    "main.py",
                    "import sys\ndef handler(event, context):\n    return '%d.%d' % sys.version_info[:2]\n",
                ),
                (
                    "index.js",
                    "exports.handler = async () => process.versions.node.split('.')[0];\n",
                ),
            ],
        );
    };
    app("python3.99", &format!("nodejs{node}.x"));
    let refused = server.fails(&["deploy", server.path("named").to_str().unwrap()]);
    assert!(
        refused.contains("function py names python3.99, which this server does not run")
            && refused.contains(&format!(
                "it runs python{python} (python3), nodejs{node} (nodejs), provided"
            ))
            && refused.contains("nothing was deployed"),
        "{refused}"
    );
    app(&format!("python{python}"), &format!("nodejs{node}.x"));
    deploy(&server, "named");
    assert_eq!(server.invoke("named/py", "{}")["result"], python);
    assert_eq!(server.invoke("named/js", "{}")["result"], node);
}

/// Several versions of one language run side by side: each function on
/// the interpreter its runtime names, with dependencies built for that
/// interpreter (a native package), and its subprocesses and services find
/// that interpreter as `python3` and `node`.
#[test]
fn several_versions_of_a_language_run_side_by_side_each_with_its_own_build() {
    let (other, other_path) = common::other_python();
    let node22 = common::registry_node(22);
    let mut server = Server::start_with(&[
        "--runtime",
        &format!("python{other}={}", other_path.display()),
        "--runtime",
        &format!("nodejs22={}", node22.display()),
    ]);
    let default = printed(
        Command::new(common::python())
            .args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"]),
    );
    let listed = server.ok(&["runtimes"]);
    assert!(
        listed.contains(&format!("python{default}"))
            && listed.contains(&format!("python{other}"))
            && listed.contains("nodejs22")
            && listed.contains(&other_path.display().to_string()),
        "{listed}"
    );
    let handler = r#"import subprocess, sys
import msgpack

def handler(event, context):
    sub = subprocess.run(["python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                         capture_output=True, text=True).stdout.strip()
    return {
        "version": "%d.%d" % sys.version_info[:2],
        "subprocess": sub,
        # The C extension, built for this interpreter, else the fallback.
        "native": msgpack.Packer.__module__,
    }
"#;
    let service = r#"import http.server, os, subprocess, sys

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("%d.%d" % sys.version_info[:2]).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

http.server.HTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler).serve_forever()
"#;
    write_app(
        &server.path("side"),
        &[
            (
                "stratus.yaml",
                &format!(
                    "app: side\nfunctions:\n  old:\n    runtime: python3\n    handler: main.handler\n    code: ./py\n  new:\n    runtime: python{other}\n    handler: main.handler\n    code: ./py\n  js20:\n    runtime: nodejs\n    handler: index.handler\n    code: ./js\n  js22:\n    runtime: nodejs22.x\n    handler: index.handler\n    code: ./js\nservices:\n  web:\n    runtime: python{other}\n    code: ./web\n    command: python3 server.py\n"
                ),
            ),
            ("py/requirements.txt", "msgpack==1.1.0\n"),
            ("py/main.py", handler),
            (
                "js/index.js",
                "const { execFileSync } = require('child_process');\nexports.handler = async () => ({ version: process.version, subprocess: execFileSync('node', ['--version']).toString().trim() });\n",
            ),
            ("web/server.py", service),
        ],
    );
    let out = deploy(&server, "side");
    // One layer per interpreter: the same requirements, built twice.
    assert!(
        out.contains("py (python3): ") && out.contains(&format!("py (python{other}): ")),
        "{out}"
    );
    for (function, version) in [("side/old", &default), ("side/new", &other)] {
        let answer = server.invoke(function, "{}")["result"].clone();
        assert_eq!(answer["version"], version.as_str(), "{function}: {answer}");
        assert_eq!(
            answer["subprocess"],
            version.as_str(),
            "{function}: {answer}"
        );
        assert_eq!(
            answer["native"], "msgpack._cmsgpack",
            "{function}: {answer}"
        );
    }
    let js22 = server.invoke("side/js22", "{}")["result"].clone();
    assert!(
        js22["version"]
            .as_str()
            .unwrap_or_default()
            .starts_with("v22."),
        "{js22}"
    );
    assert_eq!(js22["subprocess"], js22["version"], "{js22}");
    let js20 = server.invoke("side/js20", "{}")["result"].clone();
    assert!(
        !js20["version"]
            .as_str()
            .unwrap_or_default()
            .starts_with("v22."),
        "{js20}"
    );
    assert_eq!(js20["subprocess"], js20["version"], "{js20}");
    let (status, body) = get(&server, "/side/");
    assert_eq!((status, body.as_str()), (200, other.as_str()));

    // A restart finds the same interpreters, and the app runs on them.
    server.stop();
    server.restart();
    let answer = server.invoke("side/new", "{}")["result"].clone();
    assert_eq!(answer["version"], other.as_str(), "{answer}");
}

/// The Python runtime gives every function boto3, as Lambda's does,
/// installed once at start; a function's own requirements win.
#[test]
fn python_functions_get_boto3_from_the_runtime_and_their_own_pins_win() {
    let server = Server::start_with(&["--python-packages", "boto3"]);
    write_app(
        &server.path("aws"),
        &[
            (
                "stratus.yaml",
                "app: aws\nfunctions:\n  given:\n    runtime: python3\n    handler: main.handler\n    code: ./given\n  pinned:\n    runtime: python3\n    handler: main.handler\n    code: ./pinned\n",
            ),
            (
                "given/main.py",
                "def handler(event, context):\n    import boto3\n    return {'version': boto3.__version__, 'at': boto3.__file__}\n",
            ),
            (
                "pinned/main.py",
                "def handler(event, context):\n    import boto3\n    return {'version': boto3.__version__, 'at': boto3.__file__}\n",
            ),
            ("pinned/requirements.txt", "boto3==1.35.0\n"),
        ],
    );
    // Installed in the background at start; `stratus runtimes` says when.
    common::eventually(std::time::Duration::from_secs(120), || {
        let listed: serde_json::Value =
            serde_json::from_str(&server.ok(&["runtimes", "--output", "json"])).unwrap();
        match listed["python_packages"]["state"].as_str() {
            Some("ready") => Ok(()),
            Some("installing") => Err("installing".to_owned()),
            other => panic!("boto3 was not installed: {other:?}"),
        }
    });
    let listed = server.ok(&["runtimes"]);
    assert!(
        listed.contains("python packages: boto3 (python3.") && listed.contains(": ready)"),
        "{listed}"
    );
    deploy(&server, "aws");
    let given = server.invoke("aws/given", "{}");
    assert!(
        given["result"]["at"]
            .as_str()
            .unwrap_or_else(|| panic!("{given}"))
            .contains("/platform/boto3/"),
        "{given}"
    );
    assert_ne!(given["result"]["version"], "1.35.0");
    let pinned = server.invoke("aws/pinned", "{}");
    assert_eq!(pinned["result"]["version"], "1.35.0", "{pinned}");
    assert!(
        pinned["result"]["at"]
            .as_str()
            .unwrap()
            .contains(".stratus/python/boto3/"),
        "{pinned}"
    );
}

/// A version that names a runtime version keeps it: a server restarted
/// with another Node.js does not run it on that one, and says why.
#[test]
fn a_named_runtime_version_is_not_changed_under_a_deployed_app() {
    let mut server = Server::start();
    let node = printed(Command::new("node").args(["-p", "process.versions.node.split('.')[0]"]));
    write_app(
        &server.path("kept"),
        &[
            (
                "stratus.yaml",
                &format!(
                    "app: kept\nfunctions:\n  js:\n    runtime: nodejs{node}\n    handler: index.handler\n"
                ),
            ),
            ("index.js", "exports.handler = async () => 'ran';\n"),
        ],
    );
    deploy(&server, "kept");
    assert_eq!(server.invoke("kept/js", "{}")["result"], "ran");
    assert!(server.stop().success());

    // Another Node.js on the PATH of the same data directory's server.
    let fake = server.path("fake-node");
    // Answers as node answers the server's question: its path, then what it is.
    std::fs::write(&fake, "#!/bin/sh\nprintf '%s\\n\\nv99.0.0 x64\\n' \"$0\"\n").unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let log = server.path("other-node.log");
    let mut other = Command::new(common::BIN)
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--python-packages=",
        ])
        .arg("--data-dir")
        .arg(&server.data_dir)
        .env("STRATUS_NODE", &fake)
        .env("STRATUS_CONFIG_DIR", common::config_dir(&server.data_dir))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let said = common::eventually(std::time::Duration::from_secs(30), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("cannot serve an app") {
            Ok(text)
        } else {
            Err(text)
        }
    });
    assert!(
        said.contains(&format!(
            "function js names nodejs{node}, which this server does not run"
        )) && said.contains("nodejs99 (nodejs)"),
        "{said}"
    );
    common::eventually(std::time::Duration::from_secs(30), || {
        if server.data_dir.join("server.json").exists() {
            Ok(())
        } else {
            Err("not up".to_owned())
        }
    });
    let refused = server.cli(&["invoke", "kept/js"]);
    assert!(!refused.status.success(), "{refused:?}");
    let _ = Command::new("kill")
        .args(["-INT", &other.id().to_string()])
        .status();
    let _ = other.wait();
}
