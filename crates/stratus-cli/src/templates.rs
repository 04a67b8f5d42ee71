//! Starter applications written by `stratus init`.

/// A file of a template.
pub struct File {
    pub path: &'static str,
    pub content: String,
    pub executable: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Template {
    Python,
    Nodejs,
    Provided,
}

impl Template {
    pub fn name(self) -> &'static str {
        match self {
            Template::Python => "python",
            Template::Nodejs => "nodejs",
            Template::Provided => "provided",
        }
    }

    pub fn files(self, app: &str) -> Vec<File> {
        let manifest = |runtime: &str, handler: &str| File {
            path: "stratus.yaml",
            content: format!(
                "app: {app}\nfunctions:\n  greet:\n    runtime: {runtime}\n{handler}    code: ./greet\n    memory: 128\n    timeout: 30s\n    env:\n      GREETING: Hello\n"
            ),
            executable: false,
        };
        let file = |path, content: &str, executable| File {
            path,
            content: content.to_owned(),
            executable,
        };
        match self {
            Template::Python => vec![
                manifest("python3", "    handler: main.handler\n"),
                file("greet/main.py", PYTHON, false),
                file(
                    "greet/requirements.txt",
                    "# The function's packages, one per line as pip takes them (e.g. requests>=2);\n# `stratus deploy` installs them.\n",
                    false,
                ),
            ],
            Template::Nodejs => vec![
                manifest("nodejs", "    handler: index.handler\n"),
                file("greet/index.js", NODE, false),
            ],
            Template::Provided => vec![
                manifest("provided", ""),
                file("greet/bootstrap", PROVIDED, true),
            ],
        }
    }
}

const PYTHON: &str = r#"import os


def handler(event, context):
    name = event.get("name", "world") if isinstance(event, dict) else "world"
    print(f"greeting {name}")
    return {"message": f"{os.environ.get('GREETING', 'Hello')}, {name}!", "request_id": context.aws_request_id}
"#;

const NODE: &str = r#"exports.handler = async (event, context) => {
  const name = (event && event.name) || "world";
  console.log(`greeting ${name}`);
  return { message: `${process.env.GREETING || "Hello"}, ${name}!`, requestId: context.awsRequestId };
};
"#;

const PROVIDED: &str = r#"#!/bin/sh
# A custom runtime: any executable that speaks the Lambda Runtime API.
set -eu
API="http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime"
while true; do
  HEADERS="$(mktemp)"
  EVENT="$(curl -sS -D "$HEADERS" "$API/invocation/next")"
  REQUEST_ID="$(grep -i '^lambda-runtime-aws-request-id:' "$HEADERS" | tr -d '[:space:]' | cut -d: -f2)"
  rm -f "$HEADERS"
  echo "received $EVENT"
  curl -sS -o /dev/null -X POST "$API/invocation/$REQUEST_ID/response" \
    -d "{\"message\":\"${GREETING:-Hello} from a shell runtime\",\"event\":$EVENT}"
done
"#;
