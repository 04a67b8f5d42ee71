//! Lambda's Invoke API on the admin listener, driven by boto3 from PyPI
//! (installed once into `target/test-deps`): AWS credentials made with
//! `stratus keys create APP --aws`, requests signed by botocore's own
//! Signature Version 4, and its answers read by botocore's own parser, so
//! that the status codes, headers and error codes are the ones the SDKs
//! expect. Synchronous invocations (payload, version, log tail, client
//! context, function errors), events, dry runs, qualifiers and ARNs, and
//! refusals: a wrong secret, an unknown key, another app's credential, a
//! revoked one, an unknown function.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{
    Server, client, deploy, eventually, log_records, output_with_stdin, pip_install, python,
    write_app,
};
use serde_json::{Value, json};

fn boto3() -> PathBuf {
    pip_install("boto3", &["boto3"])
}

/// Invokes with boto3 as its standard input says (`endpoint`, `region`,
/// `key`, `secret`, and `invoke`: the keyword arguments of `invoke`, with
/// `client_context` as JSON to encode) and prints the response, or the
/// `ClientError`, as JSON. Retries are off, so each answer is seen as it
/// comes.
const CLIENT: &str = r#"
import base64, json, sys
import boto3, botocore.exceptions
from botocore.config import Config

args = json.load(sys.stdin)
client = boto3.client(
    "lambda",
    endpoint_url=args["endpoint"],
    region_name=args["region"],
    aws_access_key_id=args["key"],
    aws_secret_access_key=args["secret"],
    config=Config(retries={"mode": "standard", "max_attempts": 1}),
)
operation = args.get("operation")
if operation is not None:
    # Another operation of the client, with its keyword arguments.
    try:
        r = getattr(client, operation)(**args["kwargs"])
        r.pop("ResponseMetadata", None)
        out = {"Response": r}
    except botocore.exceptions.ClientError as e:
        out = {
            "Error": e.response["Error"]["Code"],
            "Message": e.response["Error"]["Message"],
            "Status": e.response["ResponseMetadata"]["HTTPStatusCode"],
        }
    print(json.dumps(out, default=str))
    sys.exit(0)
kwargs = args["invoke"]
if "Payload" in kwargs:
    kwargs["Payload"] = kwargs["Payload"].encode()
if "client_context" in kwargs:
    context = json.dumps(kwargs.pop("client_context")).encode()
    kwargs["ClientContext"] = base64.b64encode(context).decode()
try:
    r = client.invoke(**kwargs)
    out = {
        "StatusCode": r["StatusCode"],
        "FunctionError": r.get("FunctionError"),
        "ExecutedVersion": r.get("ExecutedVersion"),
        "Log": base64.b64decode(r["LogResult"]).decode() if "LogResult" in r else None,
        "Payload": r["Payload"].read().decode(),
        "RequestId": r["ResponseMetadata"]["RequestId"],
    }
except botocore.exceptions.ClientError as e:
    out = {
        "Error": e.response["Error"]["Code"],
        "Message": e.response["Error"]["Message"],
        "Status": e.response["ResponseMetadata"]["HTTPStatusCode"],
        "Exception": type(e).__name__,
    }
print(json.dumps(out))
"#;

const MANIFEST: &str = "app: lam\nfunctions:\n  echo:\n    runtime: python3\n    handler: main.echo\n  fail:\n    runtime: python3\n    handler: main.fail\n";

const MAIN_PY: &str = r#"
import json

def echo(event, context):
    print("echo says", json.dumps(event))
    custom = context.client_context.custom if context.client_context else None
    return {"got": event, "function": context.function_name, "custom": custom}

def fail(event, context):
    raise ValueError("no thanks")
"#;

/// An AWS credential: (access key id, secret).
struct Credential {
    key: String,
    secret: String,
}

/// `stratus keys create APP --aws --output json`.
fn create_credential(server: &Server, app: &str) -> Credential {
    let out = server.ok(&["keys", "create", app, "--aws", "--output", "json"]);
    let created: Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("keys create --output json printed no JSON ({e}): {out}"));
    let key = created["access_key_id"].as_str().unwrap().to_owned();
    let secret = created["secret_access_key"].as_str().unwrap().to_owned();
    assert!(
        key.len() == 20
            && key.starts_with("AKST")
            && key
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()),
        "{key}"
    );
    assert_eq!(secret.len(), 40, "{secret}");
    assert_eq!(created["kind"], "aws");
    Credential { key, secret }
}

/// A server with app `lam` deployed, a credential of it, and the client script.
fn start() -> (Server, Credential) {
    let server = Server::start();
    write_app(
        &server.path("lam"),
        &[("stratus.yaml", MANIFEST), ("main.py", MAIN_PY)],
    );
    deploy(&server, "lam");
    std::fs::write(server.path("lambda_client.py"), CLIENT).unwrap();
    let credential = create_credential(&server, "lam");
    (server, credential)
}

/// boto3's Lambda client, as one credential in one region sees the server.
struct Lambda<'a> {
    server: &'a Server,
    credential: &'a Credential,
    region: &'a str,
}

impl<'a> Lambda<'a> {
    fn new(server: &'a Server, credential: &'a Credential) -> Lambda<'a> {
        Lambda {
            server,
            credential,
            region: "us-east-1",
        }
    }

    /// Runs the client script with boto3's keyword arguments for `invoke`.
    fn invoke(&self, invoke: Value) -> Value {
        self.run(json!({ "invoke": invoke }))
    }

    /// Calls another operation of boto3's client (`list_functions`, ...).
    fn call(&self, operation: &str, kwargs: Value) -> Value {
        self.run(json!({ "operation": operation, "kwargs": kwargs }))
    }

    fn run(&self, call: Value) -> Value {
        let mut args = json!({
            "endpoint": self.server.admin,
            "region": self.region,
            "key": self.credential.key,
            "secret": self.credential.secret,
        });
        for (k, v) in call.as_object().unwrap() {
            args[k] = v.clone();
        }
        let out = output_with_stdin(
            Command::new(python())
                .arg(self.server.path("lambda_client.py"))
                .env("PYTHONPATH", boto3())
                .env("AWS_CONFIG_FILE", "/dev/null")
                .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
            &args.to_string(),
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "the boto3 client failed: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    }
}

fn payload(answer: &Value) -> Value {
    let text = answer["Payload"]
        .as_str()
        .unwrap_or_else(|| panic!("no Payload: {answer}"));
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {answer}"))
}

#[test]
fn boto3_invokes_a_function_and_reads_its_answer() {
    let (server, credential) = start();
    let lam = Lambda::new(&server, &credential);

    let answer = lam.invoke(json!({
        "FunctionName": "lam.echo",
        "Payload": r#"{"x": [1, "two"]}"#,
        "LogType": "Tail",
        "client_context": { "custom": { "caller": "boto3" } },
    }));
    assert_eq!(answer["StatusCode"], 200, "{answer}");
    assert!(answer["FunctionError"].is_null(), "{answer}");
    assert_eq!(answer["ExecutedVersion"], "1", "{answer}");
    let result = payload(&answer);
    assert_eq!(result["got"], json!({"x": [1, "two"]}), "{answer}");
    assert_eq!(result["function"], "lam.echo");
    assert_eq!(result["custom"], json!({"caller": "boto3"}), "{answer}");
    let log = answer["Log"].as_str().unwrap_or_default();
    assert!(
        log.contains(r#"echo says {"x": [1, "two"]}"#),
        "LogResult: {log:?}"
    );
    // As Lambda's: START, the lines, END and REPORT.
    let id = answer["RequestId"].as_str().unwrap_or_default();
    assert!(
        log.starts_with(&format!("START RequestId: {id} Version: 1\n")),
        "LogResult: {log:?}"
    );
    assert!(log.contains(&format!("END RequestId: {id}\n")), "{log:?}");
    assert!(
        log.contains(&format!("REPORT RequestId: {id}\tDuration: ")),
        "{log:?}"
    );
    assert!(!answer["RequestId"].as_str().unwrap_or_default().is_empty());

    // Without LogType, no log; an empty payload is {}.
    let answer = lam.invoke(json!({ "FunctionName": "lam.echo" }));
    assert_eq!(answer["StatusCode"], 200, "{answer}");
    assert!(answer["Log"].is_null(), "{answer}");
    assert_eq!(payload(&answer)["got"], json!({}));

    // The ARN, in any region, with a qualifier in the name or as a parameter.
    let elsewhere = Lambda {
        region: "eu-west-3",
        ..Lambda::new(&server, &credential)
    };
    for (name, qualifier) in [
        (
            "arn:aws:lambda:eu-west-3:000000000000:function:lam.echo",
            None,
        ),
        (
            "arn:aws:lambda:eu-west-3:000000000000:function:lam.echo:$LATEST",
            None,
        ),
        ("lam.echo", Some("1")),
        ("lam.echo:1", Some("1")),
    ] {
        let mut invoke = json!({ "FunctionName": name, "Payload": "{\"n\": 1}" });
        if let Some(q) = qualifier {
            invoke["Qualifier"] = json!(q);
        }
        let answer = elsewhere.invoke(invoke);
        assert_eq!(answer["StatusCode"], 200, "{name} {qualifier:?}: {answer}");
        assert_eq!(payload(&answer)["got"]["n"], 1, "{answer}");
    }
    let answer = lam.invoke(json!({ "FunctionName": "lam.echo", "Qualifier": "2" }));
    assert_eq!(answer["Error"], "ResourceNotFoundException", "{answer}");

    // A failing function: 200, FunctionError, and the error as the payload.
    let answer = lam.invoke(json!({ "FunctionName": "lam.fail", "Payload": "{}" }));
    assert_eq!(answer["StatusCode"], 200, "{answer}");
    assert_eq!(answer["FunctionError"], "Unhandled", "{answer}");
    let error = payload(&answer);
    assert_eq!(error["errorType"], "ValueError", "{answer}");
    assert_eq!(error["errorMessage"], "no thanks", "{answer}");

    // A dry run checks and runs nothing.
    let answer = lam.invoke(json!({ "FunctionName": "lam.echo", "InvocationType": "DryRun" }));
    assert_eq!(answer["StatusCode"], 204, "{answer}");

    // Refusals with Lambda's error codes, modeled ones as their exceptions.
    let answer = lam.invoke(json!({ "FunctionName": "lam.nope", "Payload": "{}" }));
    assert_eq!(answer["Error"], "ResourceNotFoundException", "{answer}");
    assert_eq!(answer["Exception"], "ResourceNotFoundException", "{answer}");
    assert_eq!(answer["Status"], 404, "{answer}");
    let answer = lam.invoke(json!({ "FunctionName": "lam.echo", "Payload": "not json" }));
    assert_eq!(
        answer["Error"], "InvalidRequestContentException",
        "{answer}"
    );
    assert_eq!(answer["Status"], 400, "{answer}");
}

/// What tools call before they invoke: `ListFunctions`, `GetFunction` and
/// `GetFunctionConfiguration`, for the credential's own app; environment
/// values are never given. Other operations are answered in Lambda's error
/// shape.
#[test]
fn boto3_lists_and_reads_functions_and_is_told_what_is_not_served() {
    let (server, credential) = start();
    write_app(
        &server.path("other"),
        &[(
            "stratus.yaml",
            "app: other\nfunctions:\n  f:\n    runtime: python3\n    handler: main.echo\n    env: { DB_PASSWORD: hunter2 }\n",
        )],
    );
    std::fs::write(server.path("other").join("main.py"), MAIN_PY).unwrap();
    deploy(&server, "other");
    let lam = Lambda::new(&server, &credential);

    let listed = lam.call("list_functions", json!({}));
    let functions = listed["Response"]["Functions"]
        .as_array()
        .unwrap_or_else(|| panic!("{listed}"));
    let names: Vec<&str> = functions
        .iter()
        .filter_map(|f| f["FunctionName"].as_str())
        .collect();
    assert_eq!(names, ["lam.echo", "lam.fail"], "{listed}");
    assert_eq!(functions[0]["Handler"], "main.echo", "{listed}");
    assert_eq!(functions[0]["MemorySize"], 128, "{listed}");
    assert_eq!(
        functions[0]["FunctionArn"], "arn:aws:lambda:us-east-1:000000000000:function:lam.echo",
        "{listed}"
    );
    // Pages, as the SDK's paginator walks them.
    let first = lam.call("list_functions", json!({ "MaxItems": 1 }));
    assert_eq!(first["Response"]["Functions"].as_array().unwrap().len(), 1);
    let marker = first["Response"]["NextMarker"].as_str().unwrap().to_owned();
    let second = lam.call("list_functions", json!({ "MaxItems": 1, "Marker": marker }));
    assert_eq!(
        second["Response"]["Functions"][0]["FunctionName"], "lam.fail",
        "{second}"
    );
    assert!(second["Response"].get("NextMarker").is_none(), "{second}");

    let got = lam.call("get_function", json!({ "FunctionName": "lam.echo" }));
    assert_eq!(
        got["Response"]["Configuration"]["Runtime"], "python3",
        "{got}"
    );
    assert!(
        got["Response"]["Configuration"]["CodeSha256"]
            .as_str()
            .is_some_and(|s| s.len() == 44),
        "{got}"
    );
    let config = lam.call(
        "get_function_configuration",
        json!({ "FunctionName": "arn:aws:lambda:us-east-1:000000000000:function:lam.fail" }),
    );
    assert_eq!(config["Response"]["FunctionName"], "lam.fail", "{config}");

    // Another app's functions: not this credential's.
    let denied = lam.call("get_function", json!({ "FunctionName": "other.f" }));
    assert_eq!(denied["Error"], "AccessDeniedException", "{denied}");
    // The admin sees them, with the environment's names only.
    let admin = client()
        .get(format!("{}/2015-03-31/functions/other.f", server.admin))
        .bearer_auth(&server.token)
        .send()
        .unwrap();
    assert_eq!(admin.status(), 200);
    let text = admin.text().unwrap();
    assert!(text.contains("DB_PASSWORD"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");

    // An operation that is not served: Lambda's error shape, not a bare 401.
    let aliases = lam.call("list_aliases", json!({ "FunctionName": "lam.echo" }));
    assert_eq!(
        aliases["Error"], "UnsupportedOperationException",
        "{aliases}"
    );
    assert_eq!(aliases["Status"], 400, "{aliases}");
    assert!(
        aliases["Message"]
            .as_str()
            .is_some_and(|m| m.contains("ListFunctions")),
        "{aliases}"
    );
}

#[test]
fn boto3_queues_an_event_that_is_then_delivered() {
    let (server, credential) = start();
    let lam = Lambda::new(&server, &credential);
    let answer = lam.invoke(json!({
        "FunctionName": "lam.echo",
        "InvocationType": "Event",
        "Payload": r#"{"marker": "queued-by-boto3"}"#,
    }));
    assert_eq!(answer["StatusCode"], 202, "{answer}");
    assert_eq!(answer["Payload"], "", "{answer}");
    let request_id = answer["RequestId"].as_str().unwrap().to_owned();
    assert!(!request_id.is_empty(), "{answer}");

    eventually(Duration::from_secs(30), || {
        let records = log_records(&server, "lam/echo", &["--request-id", &request_id]);
        records
            .iter()
            .find(|r| {
                r["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("queued-by-boto3"))
            })
            .map(|_| ())
            .ok_or_else(|| format!("no delivery of {request_id} yet: {records:?}"))
    });

    // Larger than the asynchronous limit of 256 KiB.
    let big = format!("{{\"pad\": \"{}\"}}", "x".repeat(300 * 1024));
    let answer = lam
        .invoke(json!({ "FunctionName": "lam.echo", "InvocationType": "Event", "Payload": big }));
    assert_eq!(answer["Error"], "RequestTooLargeException", "{answer}");
    assert_eq!(answer["Status"], 413, "{answer}");
}

#[test]
fn signatures_and_credentials_are_checked() {
    let (server, credential) = start();
    let invoke = || json!({ "FunctionName": "lam.echo", "Payload": "{}" });

    let wrong_secret = Credential {
        key: credential.key.clone(),
        secret: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
    };
    let answer = Lambda::new(&server, &wrong_secret).invoke(invoke());
    assert_eq!(answer["Error"], "InvalidSignatureException", "{answer}");
    assert_eq!(answer["Status"], 403, "{answer}");

    let unknown = Credential {
        key: "AKSTAAAAAAAAAAAAAAAA".into(),
        secret: credential.secret.clone(),
    };
    let answer = Lambda::new(&server, &unknown).invoke(invoke());
    assert_eq!(answer["Error"], "UnrecognizedClientException", "{answer}");
    assert_eq!(answer["Status"], 403, "{answer}");

    // A credential of another app may invoke that app's functions only.
    write_app(
        &server.path("other"),
        &[
            (
                "stratus.yaml",
                "app: other\nfunctions:\n  echo:\n    runtime: python3\n    handler: main.echo\n",
            ),
            ("main.py", MAIN_PY),
        ],
    );
    deploy(&server, "other");
    let other = create_credential(&server, "other");
    let answer = Lambda::new(&server, &other).invoke(invoke());
    assert_eq!(answer["Error"], "AccessDeniedException", "{answer}");
    assert_eq!(answer["Status"], 403, "{answer}");
    let answer = Lambda::new(&server, &other)
        .invoke(json!({ "FunctionName": "other.echo", "Payload": "{}" }));
    assert_eq!(answer["StatusCode"], 200, "{answer}");

    // Listed without secrets, beside app keys; revoked at once.
    server.ok(&["keys", "create", "lam", "--name", "plain"]);
    let listed = server.ok(&["keys", "ls", "lam"]);
    assert!(
        listed.contains(&credential.key) && listed.contains("aws") && listed.contains("plain"),
        "{listed}"
    );
    assert!(!listed.contains(&credential.secret), "{listed}");
    let revoked = server.ok(&["keys", "rm", "lam", &credential.key]);
    assert!(revoked.contains("AWS credential"), "{revoked}");
    let answer = Lambda::new(&server, &credential).invoke(invoke());
    assert_eq!(answer["Error"], "UnrecognizedClientException", "{answer}");

    // The admin token is accepted as a bearer token; no authorization is refused.
    let http = client();
    let url = format!("{}/2015-03-31/functions/lam.echo/invocations", server.admin);
    let response = http
        .post(&url)
        .bearer_auth(&server.token)
        .body(r#"{"a": 1}"#)
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-amz-executed-version"], "1");
    let body: Value = response.json().unwrap();
    assert_eq!(body["got"]["a"], 1);
    let response = http.post(&url).body("{}").send().unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(
        response.headers()["x-amzn-errortype"],
        "MissingAuthenticationTokenException"
    );
    let body: Value = response.json().unwrap();
    assert_eq!(body["Type"], "User", "{body}");
}

/// The data directory is the owner's only, and an AWS secret is stored
/// sealed with the data directory's key: neither the database nor its
/// journal holds it. A secret an earlier version stored in the clear is
/// sealed at the next start, and every credential keeps working.
#[test]
fn secrets_are_sealed_at_rest_in_a_private_data_dir() {
    use std::os::unix::fs::PermissionsExt;
    let (mut server, credential) = start();
    let data_dir = server.data_dir.clone();
    let mode = |name: &str| {
        std::fs::metadata(data_dir.join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(""), 0o700, "the data directory");
    for file in ["stratus.db", "stratus.db-wal", "admin.token", "secrets.key"] {
        assert_eq!(mode(file), 0o600, "{file}");
    }
    let stored = |server: &Server| {
        ["stratus.db", "stratus.db-wal"]
            .iter()
            .flat_map(|f| std::fs::read(server.data_dir.join(f)).unwrap_or_default())
            .collect::<Vec<u8>>()
    };
    let contains = |haystack: &[u8], needle: &str| {
        haystack
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
    };
    assert!(!contains(&stored(&server), &credential.secret));

    // As an earlier version stored it: in the clear.
    server.stop();
    let legacy = Credential {
        key: "AKSTLEGACY0000000001".into(),
        secret: "legacy-secret-stored-in-the-clear-000000".into(),
    };
    let insert = format!(
        "import sqlite3\nc = sqlite3.connect({:?})\nc.execute(\"INSERT INTO aws_credentials (access_key_id, app, name, secret, created_ms) VALUES (?, 'lam', 'old', ?, 0)\", ({:?}, {:?}))\nc.commit()\n",
        server.data_dir.join("stratus.db").to_str().unwrap(),
        legacy.key,
        legacy.secret
    );
    let out = Command::new(python())
        .args(["-c", &insert])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    server.restart();
    assert_eq!(mode("stratus.db"), 0o600);
    for credential in [&credential, &legacy] {
        let answer = Lambda::new(&server, credential).invoke(json!({
            "FunctionName": "lam.echo",
            "Payload": "{}",
        }));
        assert_eq!(answer["StatusCode"], 200, "{answer}");
    }
    // A checkpoint moves the journal into the database file.
    server.stop();
    assert!(
        !contains(&stored(&server), &legacy.secret),
        "sealed at start"
    );
}
