//! The S3 API, driven by clients others wrote: boto3 (PyPI) on
//! `--s3-listen` and on the public listener at `s3.DOMAIN` (path and
//! virtual-host style), and the AWS CLI (`aws s3 cp`, `ls`, `sync`,
//! `presign`). Buckets come from the manifest and from CreateBucket; each
//! app's credential reaches its own buckets only, and functions reach
//! their app's with no configuration.
//!
//! Runs in both isolation modes.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{Server, free_port, output_with_stdin, pip_install, python, write_app};
use serde_json::{Value, json};

fn boto3() -> PathBuf {
    pip_install("boto3", &["boto3"])
}

/// Runs S3 operations with boto3 as its standard input says: `endpoint`,
/// `key`, `secret`, `style` (path or virtual), and `calls`, each an
/// operation of the client with its keyword arguments (`Body` as text).
/// Prints each result (the response with its body read as text, or the
/// error's code and status) as JSON. Hosts under `s3.localhost` resolve
/// to 127.0.0.1, as a name server for the domain would make them.
const CLIENT: &str = r#"
import json, socket, sys, urllib.request
import boto3, botocore.exceptions
from botocore.config import Config

real = socket.getaddrinfo
def resolve(host, *args, **kwargs):
    if isinstance(host, str) and host.endswith("s3.localhost"):
        host = "127.0.0.1"
    return real(host, *args, **kwargs)
socket.getaddrinfo = resolve

args = json.load(sys.stdin)
client = boto3.client(
    "s3",
    endpoint_url=args["endpoint"],
    region_name="us-east-1",
    aws_access_key_id=args["key"],
    aws_secret_access_key=args["secret"],
    config=Config(
        signature_version="s3v4",
        s3={"addressing_style": args.get("style", "path")},
        retries={"mode": "standard", "max_attempts": 1},
    ),
)
def png(width, height):
    import struct, zlib
    rows = b"".join(
        b"\x00" + b"".join(bytes([x * 255 // width, y * 255 // height, 90]) for x in range(width))
        for y in range(height))
    chunk = lambda tag, data: struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))

results = []
for call in args["calls"]:
    op, kwargs = call[0], dict(call[1])
    try:
        if op == "put_png":
            r = client.put_object(Bucket=kwargs["Bucket"], Key=kwargs["Key"],
                                  Body=png(kwargs["Width"], kwargs["Height"]), ContentType="image/png")
            results.append({"ETag": r["ETag"]})
            continue
        if op == "presigned_post":
            import urllib.error
            ct = kwargs.get("ContentType", "text/plain")
            post = client.generate_presigned_post(
                Bucket=kwargs["Bucket"], Key=kwargs["Key"], Fields={"Content-Type": ct},
                Conditions=[{"Content-Type": ct}, ["content-length-range", 1, kwargs["Max"]]],
                ExpiresIn=300)
            fields = post["fields"]
            if kwargs.get("Tamper"):
                fields["key"] = "elsewhere/" + kwargs["Key"]
            b = "----stratus-form"
            body = b"".join(
                f'--{b}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                for k, v in fields.items())
            body += (f'--{b}\r\nContent-Disposition: form-data; name="file"; filename="up.txt"\r\n'
                     f'Content-Type: text/plain\r\n\r\n').encode() + kwargs["Body"].encode() + f"\r\n--{b}--\r\n".encode()
            req = urllib.request.Request(post["url"], data=body, method="POST",
                                         headers={"Content-Type": f"multipart/form-data; boundary={b}"})
            try:
                with urllib.request.urlopen(req) as r:
                    results.append({"Status": r.status, "ETag": r.headers.get("ETag")})
            except urllib.error.HTTPError as e:
                results.append({"Status": e.code, "Body": e.read().decode()})
            continue
        if op == "png_size":
            body = client.get_object(Bucket=kwargs["Bucket"], Key=kwargs["Key"])["Body"].read()
            import struct
            results.append({"Size": list(struct.unpack(">II", body[16:24])), "Png": body[:8] == b"\x89PNG\r\n\x1a\n"})
            continue
        if op == "presigned_get":
            url = client.generate_presigned_url("get_object", Params=kwargs, ExpiresIn=300)
            with urllib.request.urlopen(url) as r:
                results.append({"Status": r.status, "Body": r.read().decode()})
            continue
        if op == "presigned_put":
            body = kwargs.pop("Body").encode()
            url = client.generate_presigned_url("put_object", Params=kwargs, ExpiresIn=300)
            req = urllib.request.Request(url, data=body, method="PUT")
            with urllib.request.urlopen(req) as r:
                results.append({"Status": r.status})
            continue
        if "Body" in kwargs:
            kwargs["Body"] = kwargs["Body"].encode()
        r = getattr(client, op)(**kwargs)
        r.pop("ResponseMetadata", None)
        if "Body" in r:
            r["Body"] = r["Body"].read().decode()
        results.append(r)
    except botocore.exceptions.ClientError as e:
        results.append({
            "Error": e.response["Error"].get("Code"),
            "Status": e.response["ResponseMetadata"]["HTTPStatusCode"],
        })
print(json.dumps(results, default=str))
"#;

/// A function that uses the app's buckets with boto3 as it comes: no
/// endpoint, no credential, no configuration.
const FUNCTION: &str = r#"
import boto3, botocore.exceptions

def handler(event, context):
    s3 = boto3.client("s3")
    s3.put_object(Bucket="shop-uploads", Key="from-function.txt", Body=b"written inside")
    body = s3.get_object(Bucket="shop-uploads", Key="from-function.txt")["Body"].read().decode()
    try:
        s3.list_objects_v2(Bucket=event["other"])
        other = "allowed"
    except botocore.exceptions.ClientError as e:
        other = e.response["Error"]["Code"]
    return {"body": body, "buckets": [b["Name"] for b in s3.list_buckets()["Buckets"]], "other": other}
"#;

const MANIFEST: &str = "app: shop
functions:
  hello:
    runtime: python3
    handler: main.handler
buckets:
  uploads:
    cors: { origins: [\"https://app.example.com\"], methods: [GET, PUT, POST], expose_headers: [etag] }
  media:
    name: shop-media-files
    max_object_size: 1KiB
    public_read: true
";

struct Credential {
    key: String,
    secret: String,
}

fn credential(server: &Server, app: &str) -> Credential {
    let out = server.ok(&["keys", "create", app, "--aws", "--output", "json"]);
    let created: Value = serde_json::from_str(&out).unwrap();
    Credential {
        key: created["access_key_id"].as_str().unwrap().to_owned(),
        secret: created["secret_access_key"].as_str().unwrap().to_owned(),
    }
}

/// The results of `calls`, made with boto3 as `who` at `endpoint`.
fn s3(server: &Server, endpoint: &str, style: &str, who: &Credential, calls: Value) -> Vec<Value> {
    let script = server.path("s3_client.py");
    std::fs::write(&script, CLIENT).unwrap();
    let input = json!({
        "endpoint": endpoint, "style": style, "key": who.key, "secret": who.secret, "calls": calls,
    });
    let mut command = Command::new(python());
    command.arg(&script).env("PYTHONPATH", boto3());
    let out = output_with_stdin(&mut command, &input.to_string());
    assert!(
        out.status.success(),
        "the boto3 client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn start() -> (Server, String) {
    start_with(&[])
}

/// A server whose Python runtime gives functions boto3, once it has.
fn start_with_boto3() -> (Server, String) {
    let (server, endpoint) = start_with(&["--python-packages", "boto3"]);
    common::eventually(std::time::Duration::from_secs(120), || {
        let listed: Value =
            serde_json::from_str(&server.ok(&["runtimes", "--output", "json"])).unwrap();
        match listed["python_packages"]["state"].as_str() {
            Some("ready") => Ok(()),
            other => Err(format!("boto3 is {other:?}")),
        }
    });
    (server, endpoint)
}

fn start_with(extra: &[&str]) -> (Server, String) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec!["--s3-listen", &listen];
    args.extend(extra);
    let server = Server::start_with(&args);
    write_app(
        &server.path("shop"),
        &[("stratus.yaml", MANIFEST), ("main.py", FUNCTION)],
    );
    common::deploy(&server, "shop");
    (server, format!("http://127.0.0.1:{port}"))
}

#[test]
fn boto3_keeps_lists_and_serves_objects_of_an_app_s_buckets() {
    let (server, endpoint) = start();
    let shop = credential(&server, "shop");
    let r = s3(
        &server,
        &endpoint,
        "path",
        &shop,
        json!([
            ["list_buckets", {}],
            ["put_object", {"Bucket": "shop-uploads", "Key": "docs/a b+c.txt", "Body": "hello world",
                            "ContentType": "text/plain", "Metadata": {"owner": "ann"},
                            "CacheControl": "max-age=60"}],
            ["head_object", {"Bucket": "shop-uploads", "Key": "docs/a b+c.txt"}],
            ["get_object", {"Bucket": "shop-uploads", "Key": "docs/a b+c.txt", "Range": "bytes=6-10"}],
            ["put_object", {"Bucket": "shop-uploads", "Key": "docs/é/ü.txt", "Body": "unicode"}],
            ["put_object", {"Bucket": "shop-uploads", "Key": "top.txt", "Body": "top"}],
            ["list_objects_v2", {"Bucket": "shop-uploads", "Delimiter": "/"}],
            ["list_objects_v2", {"Bucket": "shop-uploads", "Prefix": "docs/", "MaxKeys": 1}],
            ["copy_object", {"Bucket": "shop-uploads", "Key": "copy.txt",
                             "CopySource": {"Bucket": "shop-uploads", "Key": "docs/a b+c.txt"}}],
            ["get_object", {"Bucket": "shop-uploads", "Key": "copy.txt"}],
            ["delete_objects", {"Bucket": "shop-uploads",
                                "Delete": {"Objects": [{"Key": "copy.txt"}, {"Key": "top.txt"}]}}],
            ["get_object", {"Bucket": "shop-uploads", "Key": "top.txt"}],
            ["put_object", {"Bucket": "shop-media-files", "Key": "big", "Body": "x".repeat(2000)}],
            ["presigned_put", {"Bucket": "shop-uploads", "Key": "signed.txt", "Body": "by url"}],
            ["presigned_get", {"Bucket": "shop-uploads", "Key": "signed.txt"}],
            ["delete_object", {"Bucket": "shop-uploads", "Key": "signed.txt"}],
            ["head_object", {"Bucket": "shop-uploads", "Key": "signed.txt"}],
            ["get_object", {"Bucket": "no-such-bucket", "Key": "k"}],
        ]),
    );
    let names: Vec<&str> = r[0]["Buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["Name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["shop-media-files", "shop-uploads"], "{}", r[0]);
    let etag = r[1]["ETag"].as_str().unwrap();
    // MD5 of "hello world".
    assert_eq!(etag, "\"5eb63bbbe01eeed093cb22bb8f5acdc3\"");
    assert_eq!(r[2]["ContentLength"], 11);
    assert_eq!(r[2]["ContentType"], "text/plain");
    assert_eq!(r[2]["CacheControl"], "max-age=60");
    assert_eq!(r[2]["Metadata"], json!({"owner": "ann"}));
    assert_eq!(r[3]["Body"], "world");
    assert_eq!(r[3]["ContentRange"], "bytes 6-10/11");
    let top: Vec<&str> = r[6]["Contents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["Key"].as_str().unwrap())
        .collect();
    assert_eq!(top, ["top.txt"], "{}", r[6]);
    assert_eq!(r[6]["CommonPrefixes"], json!([{"Prefix": "docs/"}]));
    // One key a page, in byte order: "a b+c.txt" before "é/ü.txt".
    assert_eq!(r[7]["KeyCount"], 1);
    assert_eq!(r[7]["IsTruncated"], true);
    assert_eq!(r[7]["Contents"][0]["Key"], "docs/a b+c.txt");
    assert_eq!(r[8]["CopyObjectResult"]["ETag"], etag);
    assert_eq!(r[9]["Body"], "hello world");
    assert_eq!(r[10]["Deleted"].as_array().unwrap().len(), 2, "{}", r[10]);
    assert_eq!(r[11]["Error"], "NoSuchKey");
    assert_eq!(
        (r[12]["Error"].as_str(), r[12]["Status"].as_u64()),
        (Some("EntityTooLarge"), Some(400))
    );
    assert_eq!(r[13]["Status"], 200);
    assert_eq!(r[14]["Body"], "by url");
    assert_eq!(r[16]["Status"], 404);
    assert_eq!(r[17]["Error"], "NoSuchBucket");

    // The second page goes on after the first.
    let token = r[7]["NextContinuationToken"].as_str().unwrap().to_owned();
    let next = s3(
        &server,
        &endpoint,
        "path",
        &shop,
        json!([["list_objects_v2", {"Bucket": "shop-uploads", "Prefix": "docs/", "ContinuationToken": token}]]),
    );
    assert_eq!(next[0]["Contents"][0]["Key"], "docs/é/ü.txt", "{}", next[0]);
    assert_eq!(next[0]["IsTruncated"], false);

    // The app is not removed while its buckets hold objects, unless
    // asked to remove them too, bytes and all.
    let refused = server.fails(&["rm", "shop"]);
    assert!(refused.contains("hold objects (shop-uploads)"), "{refused}");
    let files = || {
        walk(&server.data_dir.join("objects"))
            .into_iter()
            .filter(|p| !p.starts_with(server.data_dir.join("objects/tmp")))
            .count()
    };
    assert_eq!(files(), 2);
    server.ok(&["rm", "shop", "--force"]);
    assert_eq!(files(), 0);
    let gone = s3(
        &server,
        &endpoint,
        "path",
        &shop,
        json!([["list_buckets", {}]]),
    );
    assert_eq!(gone[0]["Error"], "InvalidAccessKeyId", "{}", gone[0]);
}

/// The files under `dir`.
fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn buckets_belong_to_one_app_and_are_made_and_removed_through_the_api() {
    let (server, endpoint) = start();
    let shop = credential(&server, "shop");
    write_app(
        &server.path("rival"),
        &[
            (
                "stratus.yaml",
                "app: rival\nfunctions:\n  f:\n    runtime: python3\n    handler: main.handler\n",
            ),
            ("main.py", "def handler(event, context):\n    return 1\n"),
        ],
    );
    common::deploy(&server, "rival");
    let rival = credential(&server, "rival");
    let r = s3(
        &server,
        &endpoint,
        "path",
        &rival,
        json!([
            ["get_object", {"Bucket": "shop-uploads", "Key": "k"}],
            ["put_object", {"Bucket": "shop-uploads", "Key": "k", "Body": "x"}],
            ["create_bucket", {"Bucket": "shop-uploads"}],
            ["create_bucket", {"Bucket": "rival-scratch"}],
            ["create_bucket", {"Bucket": "rival-scratch"}],
            ["create_bucket", {"Bucket": "Bad_Name"}],
            ["head_bucket", {"Bucket": "rival-scratch"}],
            ["put_object", {"Bucket": "rival-scratch", "Key": "k", "Body": "x"}],
            ["delete_bucket", {"Bucket": "rival-scratch"}],
            ["delete_object", {"Bucket": "rival-scratch", "Key": "k"}],
            ["delete_bucket", {"Bucket": "rival-scratch"}],
            ["head_bucket", {"Bucket": "rival-scratch"}],
            ["list_buckets", {}],
        ]),
    );
    assert_eq!(r[0]["Error"], "AccessDenied");
    assert_eq!(r[1]["Error"], "AccessDenied");
    assert_eq!(r[2]["Error"], "BucketAlreadyExists");
    assert!(r[3].get("Error").is_none(), "{}", r[3]);
    assert_eq!(r[4]["Error"], "BucketAlreadyOwnedByYou");
    assert_eq!(r[5]["Status"], 400, "{}", r[5]);
    assert!(r[6].get("Error").is_none(), "{}", r[6]);
    assert_eq!(r[8]["Error"], "BucketNotEmpty");
    assert!(r[10].get("Error").is_none(), "{}", r[10]);
    assert_eq!(r[11]["Status"], 404);
    assert_eq!(r[12]["Buckets"], json!([]));

    // A declared bucket cannot be deleted through the API; the manifest
    // owns it.
    let r = s3(
        &server,
        &endpoint,
        "path",
        &shop,
        json!([["delete_bucket", {"Bucket": "shop-uploads"}]]),
    );
    assert_eq!(r[0]["Error"], "OperationAborted", "{}", r[0]);

    // A deploy of another app that declares a taken name is refused,
    // naming the owner.
    write_app(
        &server.path("rival"),
        &[(
            "stratus.yaml",
            "app: rival\nfunctions:\n  f:\n    runtime: python3\n    handler: main.handler\nbuckets:\n  mine: { name: shop-uploads }\n",
        )],
    );
    let refused = server.fails(&["deploy", server.path("rival").to_str().unwrap()]);
    assert!(refused.contains("belongs to app shop"), "{refused}");

    // A bucket the manifest no longer declares goes when it is empty; one
    // that holds objects stops the deploy.
    s3(
        &server,
        &endpoint,
        "path",
        &shop,
        json!([["put_object", {"Bucket": "shop-uploads", "Key": "k", "Body": "x"}]]),
    );
    let without_media = MANIFEST.replace(
        "  media:\n    name: shop-media-files\n    max_object_size: 1KiB\n    public_read: true\n",
        "",
    );
    write_app(&server.path("shop"), &[("stratus.yaml", &without_media)]);
    common::deploy(&server, "shop");
    let r = s3(
        &server,
        &endpoint,
        "path",
        &shop,
        json!([["head_bucket", {"Bucket": "shop-media-files"}]]),
    );
    assert_eq!(r[0]["Status"], 404, "{}", r[0]);
    let without_any = &MANIFEST[..MANIFEST.find("buckets:").unwrap()];
    write_app(&server.path("shop"), &[("stratus.yaml", without_any)]);
    let refused = server.fails(&["deploy", server.path("shop").to_str().unwrap()]);
    assert!(
        refused.contains("uploads (shop-uploads) holds objects") && refused.contains("--force"),
        "{refused}"
    );
}

#[test]
fn the_public_listener_serves_s3_at_its_own_host_in_both_styles() {
    let (server, _) = start();
    let shop = credential(&server, "shop");
    let port = server.public.rsplit(':').next().unwrap().to_owned();
    let path_style = format!("http://s3.localhost:{port}");
    let r = s3(
        &server,
        &path_style,
        "path",
        &shop,
        json!([
            ["put_object", {"Bucket": "shop-uploads", "Key": "p.txt", "Body": "path style"}],
            ["get_object", {"Bucket": "shop-uploads", "Key": "p.txt"}],
        ]),
    );
    assert_eq!(r[1]["Body"], "path style", "{r:?}");
    let r = s3(
        &server,
        &path_style,
        "virtual",
        &shop,
        json!([
            ["get_object", {"Bucket": "shop-uploads", "Key": "p.txt"}],
            ["list_objects_v2", {"Bucket": "shop-uploads"}],
        ]),
    );
    assert_eq!(r[0]["Body"], "path style", "{r:?}");
    assert_eq!(r[1]["KeyCount"], 1);
}

#[test]
fn the_aws_cli_copies_lists_syncs_and_presigns() {
    let (server, endpoint) = start();
    let shop = credential(&server, "shop");
    let cli = pip_install("awscli", &["awscli"]);
    // Version 1 of the CLI presigns with Signature Version 2 unless told.
    let config = server.path("aws-config");
    std::fs::write(&config, "[default]\ns3 =\n    signature_version = s3v4\n").unwrap();
    let aws = |args: &[&str]| {
        let out = Command::new(python())
            .args(["-m", "awscli"])
            .args(args)
            .args(["--endpoint-url", &endpoint])
            .env("PYTHONPATH", &cli)
            .env("AWS_ACCESS_KEY_ID", &shop.key)
            .env("AWS_SECRET_ACCESS_KEY", &shop.secret)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_CONFIG_FILE", &config)
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "aws {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let file = server.path("note.txt");
    std::fs::write(&file, "a note").unwrap();
    aws(&[
        "s3",
        "cp",
        file.to_str().unwrap(),
        "s3://shop-uploads/notes/note.txt",
    ]);
    let site = server.path("site");
    for (name, text) in [
        ("index.html", "<h1>hi</h1>"),
        ("css/a.css", "a{}"),
        ("css/b.css", "b{}"),
    ] {
        std::fs::create_dir_all(site.join(name).parent().unwrap()).unwrap();
        std::fs::write(site.join(name), text).unwrap();
    }
    aws(&[
        "s3",
        "sync",
        site.to_str().unwrap(),
        "s3://shop-uploads/site",
    ]);
    let listed = aws(&["s3", "ls", "--recursive", "s3://shop-uploads/"]);
    for key in [
        "notes/note.txt",
        "site/index.html",
        "site/css/a.css",
        "site/css/b.css",
    ] {
        assert!(listed.contains(key), "{key} in:\n{listed}");
    }
    // A second sync finds nothing to send.
    let again = aws(&[
        "s3",
        "sync",
        site.to_str().unwrap(),
        "s3://shop-uploads/site",
    ]);
    assert!(!again.contains("upload:"), "{again}");
    let back = server.path("back.txt");
    aws(&[
        "s3",
        "cp",
        "s3://shop-uploads/notes/note.txt",
        back.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "a note");
    let url = aws(&["s3", "presign", "s3://shop-uploads/site/index.html"]);
    let body = common::client().get(url.trim()).send().unwrap();
    assert_eq!(body.status(), 200);
    assert_eq!(body.text().unwrap(), "<h1>hi</h1>");

    // A multipart upload by hand with `aws s3api`.
    let created: Value = serde_json::from_str(&aws(&[
        "s3api",
        "create-multipart-upload",
        "--bucket",
        "shop-uploads",
        "--key",
        "parts.bin",
    ]))
    .unwrap();
    let upload = created["UploadId"].as_str().unwrap();
    let (first, second) = (server.path("p1"), server.path("p2"));
    std::fs::write(&first, vec![1u8; 5 << 20]).unwrap();
    std::fs::write(&second, b"tail").unwrap();
    let mut parts = Vec::new();
    for (n, file) in [(1, &first), (2, &second)] {
        let put: Value = serde_json::from_str(&aws(&[
            "s3api",
            "upload-part",
            "--bucket",
            "shop-uploads",
            "--key",
            "parts.bin",
            "--upload-id",
            upload,
            "--part-number",
            &n.to_string(),
            "--body",
            file.to_str().unwrap(),
        ]))
        .unwrap();
        parts.push(json!({"PartNumber": n, "ETag": put["ETag"]}));
    }
    let listed: Value = serde_json::from_str(&aws(&[
        "s3api",
        "list-parts",
        "--bucket",
        "shop-uploads",
        "--key",
        "parts.bin",
        "--upload-id",
        upload,
    ]))
    .unwrap();
    assert_eq!(listed["Parts"].as_array().unwrap().len(), 2, "{listed}");
    let manifest = server.path("parts.json");
    std::fs::write(&manifest, json!({"Parts": parts}).to_string()).unwrap();
    let done: Value = serde_json::from_str(&aws(&[
        "s3api",
        "complete-multipart-upload",
        "--bucket",
        "shop-uploads",
        "--key",
        "parts.bin",
        "--upload-id",
        upload,
        "--multipart-upload",
        &format!("file://{}", manifest.display()),
    ]))
    .unwrap();
    assert!(done["ETag"].as_str().unwrap().ends_with("-2\""), "{done}");
    let head: Value = serde_json::from_str(&aws(&[
        "s3api",
        "head-object",
        "--bucket",
        "shop-uploads",
        "--key",
        "parts.bin",
    ]))
    .unwrap();
    assert_eq!(head["ContentLength"], (5 << 20) + 4);
}

/// Uploads 100 objects at once with boto3, writing `KEY ETAG` to the
/// file its second argument names as each is acknowledged; with `check`
/// instead, reads every listed object back and prints
/// `{"listed": {KEY: ETAG}, "bad": [KEYS whose bytes are not theirs]}`.
const UPLOADS: &str = r#"
import hashlib, json, sys
from concurrent.futures import ThreadPoolExecutor
import boto3
from botocore.config import Config

endpoint, key, secret, mode, out = sys.argv[1:6]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  aws_access_key_id=key, aws_secret_access_key=secret,
                  config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                                retries={"mode": "standard", "max_attempts": 1},
                                max_pool_connections=100))

def content(i):
    return bytes([i % 251]) * (100_000 + i * 9_000)

if mode == "upload":
    acks = open(out, "a", buffering=1)
    def put(i):
        try:
            r = s3.put_object(Bucket="shop-uploads", Key=f"obj-{i}", Body=content(i))
            acks.write(f"obj-{i} {r['ETag']}\n")
        except Exception:
            pass
    with ThreadPoolExecutor(100) as pool:
        list(pool.map(put, range(100)))
else:
    listed, bad = {}, []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket="shop-uploads"):
        for o in page.get("Contents", []):
            listed[o["Key"]] = o["ETag"]
            i = int(o["Key"].split("-")[1])
            body = s3.get_object(Bucket="shop-uploads", Key=o["Key"])["Body"].read()
            if body != content(i) or f'"{hashlib.md5(body).hexdigest()}"' != o["ETag"]:
                bad.append(o["Key"])
    print(json.dumps({"listed": listed, "bad": bad}))
"#;

#[test]
fn objects_acknowledged_before_a_kill_survive_it_whole_and_no_partial_one_is_listed() {
    let (mut server, endpoint) = start();
    let shop = credential(&server, "shop");
    let script = server.path("uploads.py");
    std::fs::write(&script, UPLOADS).unwrap();
    let acks = server.path("acks.txt");
    let run = |mode: &str| {
        let mut command = Command::new(python());
        command
            .arg(&script)
            .args([&endpoint, &shop.key, &shop.secret, mode])
            .arg(&acks)
            .env("PYTHONPATH", boto3());
        command
    };
    let mut uploads = run("upload").spawn().unwrap();
    common::eventually(std::time::Duration::from_secs(60), || {
        let n = std::fs::read_to_string(&acks)
            .unwrap_or_default()
            .lines()
            .count();
        if n >= 10 {
            Ok(())
        } else {
            Err(format!("{n} acknowledged"))
        }
    });
    server.kill();
    uploads.wait().unwrap();
    let acknowledged: Vec<(String, String)> = std::fs::read_to_string(&acks)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, e) = l.split_once(' ').unwrap();
            (k.to_owned(), e.to_owned())
        })
        .collect();
    assert!(acknowledged.len() < 100, "the kill came after every upload");
    server.restart();
    let out = run("check").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen["bad"], json!([]), "listed objects are whole");
    for (key, etag) in &acknowledged {
        assert_eq!(seen["listed"][key], json!(etag), "{key} was acknowledged");
    }
    // Nothing half written was left behind in place either.
    let tmp = server.data_dir.join("objects/tmp");
    assert_eq!(std::fs::read_dir(tmp).unwrap().count(), 0);
}

/// The server's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn a_gigabyte_goes_up_and_down_in_flat_memory() {
    let (server, endpoint) = start();
    let shop = credential(&server, "shop");
    let pid = server.pid();
    // Up through a presigned URL (the body unsigned, streamed by curl),
    // down with a plain GET of another.
    let file = server.path("big.bin");
    let size: u64 = 1 << 30;
    {
        let f = std::fs::File::create(&file).unwrap();
        f.set_len(size).unwrap();
    }
    let urls = Command::new(python())
        .arg("-c")
        .arg(
            "import sys, boto3\nfrom botocore.config import Config\n\
             s3 = boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1', aws_access_key_id=sys.argv[2], aws_secret_access_key=sys.argv[3], config=Config(signature_version='s3v4', s3={'addressing_style': 'path'}))\n\
             print(s3.generate_presigned_url('put_object', Params={'Bucket': 'shop-uploads', 'Key': 'big.bin'}, ExpiresIn=600))\n\
             print(s3.generate_presigned_url('get_object', Params={'Bucket': 'shop-uploads', 'Key': 'big.bin'}, ExpiresIn=600))",
        )
        .args([&endpoint, &shop.key, &shop.secret])
        .env("PYTHONPATH", boto3())
        .output()
        .unwrap();
    let urls = String::from_utf8(urls.stdout).unwrap();
    let (put, get) = urls.trim().split_once('\n').unwrap();
    let before = rss_kib(pid);
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(before));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak.fetch_max(rss_kib(pid), std::sync::atomic::Ordering::Relaxed);
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        })
    };
    let up = Command::new("curl")
        .args(["-sS", "-f", "-X", "PUT", "-T"])
        .arg(&file)
        .arg(put)
        .output()
        .unwrap();
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let down = Command::new("curl")
        .args(["-sS", "-f", "-o", "/dev/null", "-w", "%{size_download}"])
        .arg(get)
        .output()
        .unwrap();
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    sampler.join().unwrap();
    assert_eq!(String::from_utf8_lossy(&down.stdout), size.to_string());
    let grown = peak
        .load(std::sync::atomic::Ordering::Relaxed)
        .saturating_sub(before);
    assert!(grown < 64 * 1024, "the server's memory grew by {grown} KiB");
}

/// Multipart uploads with boto3: its transfer manager's `upload_file`,
/// then each call by hand, printing what each step gave as JSON.
const MULTIPART: &str = r#"
import hashlib, json, os, sys
import boto3, botocore.exceptions
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

endpoint, key, secret, work = sys.argv[1:5]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  aws_access_key_id=key, aws_secret_access_key=secret,
                  config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                                retries={"mode": "standard", "max_attempts": 1}))
MiB = 1 << 20
out = {}
big = os.path.join(work, "big.bin")
with open(big, "wb") as f:
    for i in range(12):
        f.write(bytes([i]) * MiB)
s3.upload_file(big, "shop-uploads", "big.bin",
               Config=TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB))
head = s3.head_object(Bucket="shop-uploads", Key="big.bin")
out["upload_file"] = {"etag": head["ETag"], "size": head["ContentLength"]}
back = os.path.join(work, "back.bin")
s3.download_file("shop-uploads", "big.bin", back)
out["same_bytes"] = open(big, "rb").read() == open(back, "rb").read()

# By hand: two parts (one copied from big.bin), listed, completed.
up = s3.create_multipart_upload(Bucket="shop-uploads", Key="joined.bin", ContentType="application/x-joined")
uid = up["UploadId"]
p1 = s3.upload_part(Bucket="shop-uploads", Key="joined.bin", UploadId=uid, PartNumber=1, Body=b"a" * (5 * MiB))
p2 = s3.upload_part_copy(Bucket="shop-uploads", Key="joined.bin", UploadId=uid, PartNumber=2,
                         CopySource={"Bucket": "shop-uploads", "Key": "big.bin"}, CopySourceRange="bytes=0-9")
out["parts"] = [(p["PartNumber"], p["Size"]) for p in s3.list_parts(Bucket="shop-uploads", Key="joined.bin", UploadId=uid)["Parts"]]
out["uploads"] = [u["Key"] for u in s3.list_multipart_uploads(Bucket="shop-uploads").get("Uploads", [])]
etags = [p1["ETag"], p2["CopyPartResult"]["ETag"]]
done = s3.complete_multipart_upload(Bucket="shop-uploads", Key="joined.bin", UploadId=uid,
    MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etags[0]}, {"PartNumber": 2, "ETag": etags[1]}]})
md5s = b"".join(bytes.fromhex(e.strip('"')) for e in etags)
out["joined_etag"] = done["ETag"]
out["expected_etag"] = '"%s-2"' % hashlib.md5(md5s).hexdigest()
got = s3.get_object(Bucket="shop-uploads", Key="joined.bin")
body = got["Body"].read()
out["joined"] = {"size": len(body), "tail": body[-10:].hex(), "type": got["ContentType"]}
out["uploads_after"] = [u["Key"] for u in s3.list_multipart_uploads(Bucket="shop-uploads").get("Uploads", [])]

def error(f):
    try:
        f()
        return None
    except botocore.exceptions.ClientError as e:
        return e.response["Error"]["Code"]

# A small first part; a part never uploaded; an aborted upload.
small = s3.create_multipart_upload(Bucket="shop-uploads", Key="small.bin")["UploadId"]
a = s3.upload_part(Bucket="shop-uploads", Key="small.bin", UploadId=small, PartNumber=1, Body=b"x")["ETag"]
b = s3.upload_part(Bucket="shop-uploads", Key="small.bin", UploadId=small, PartNumber=2, Body=b"y")["ETag"]
out["too_small"] = error(lambda: s3.complete_multipart_upload(Bucket="shop-uploads", Key="small.bin", UploadId=small,
    MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": a}, {"PartNumber": 2, "ETag": b}]}))
out["missing_part"] = error(lambda: s3.complete_multipart_upload(Bucket="shop-uploads", Key="small.bin", UploadId=small,
    MultipartUpload={"Parts": [{"PartNumber": 3, "ETag": a}]}))
s3.abort_multipart_upload(Bucket="shop-uploads", Key="small.bin", UploadId=small)
out["after_abort"] = error(lambda: s3.upload_part(Bucket="shop-uploads", Key="small.bin", UploadId=small, PartNumber=1, Body=b"x"))
print(json.dumps(out))
"#;

#[test]
fn multipart_uploads_from_boto3_and_the_aws_cli() {
    let (server, endpoint) = start();
    let shop = credential(&server, "shop");
    let script = server.path("multipart.py");
    std::fs::write(&script, MULTIPART).unwrap();
    let out = Command::new(python())
        .arg(&script)
        .args([&endpoint, &shop.key, &shop.secret])
        .arg(server.path(""))
        .env("PYTHONPATH", boto3())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["upload_file"]["size"], 12 << 20, "{r}");
    assert!(
        r["upload_file"]["etag"].as_str().unwrap().ends_with("-3\""),
        "{r}"
    );
    assert_eq!(r["same_bytes"], true);
    assert_eq!(r["parts"], json!([[1, 5 << 20], [2, 10]]));
    assert_eq!(r["uploads"], json!(["joined.bin"]));
    assert_eq!(r["joined_etag"], r["expected_etag"]);
    assert_eq!(
        r["joined"],
        json!({"size": (5 << 20) + 10, "tail": "00000000000000000000", "type": "application/x-joined"})
    );
    assert_eq!(r["uploads_after"], json!([]));
    assert_eq!(r["too_small"], "EntityTooSmall");
    assert_eq!(r["missing_part"], "InvalidPart");
    assert_eq!(r["after_abort"], "NoSuchUpload");

    // The AWS CLI sends a file above its 8 MiB threshold in parts.
    let cli = pip_install("awscli", &["awscli"]);
    let big = server.path("cli.bin");
    std::fs::write(&big, vec![7u8; 20 << 20]).unwrap();
    let back = server.path("cli-back.bin");
    for (from, to) in [
        (
            big.to_str().unwrap().to_owned(),
            "s3://shop-uploads/cli.bin".to_owned(),
        ),
        (
            "s3://shop-uploads/cli.bin".to_owned(),
            back.to_str().unwrap().to_owned(),
        ),
    ] {
        let out = Command::new(python())
            .args([
                "-m",
                "awscli",
                "s3",
                "cp",
                &from,
                &to,
                "--endpoint-url",
                &endpoint,
            ])
            .env("PYTHONPATH", &cli)
            .env("AWS_ACCESS_KEY_ID", &shop.key)
            .env("AWS_SECRET_ACCESS_KEY", &shop.secret)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(std::fs::read(&back).unwrap(), vec![7u8; 20 << 20]);
    // Nothing is left of the parts but the objects' own files.
    let files = walk(&server.data_dir.join("objects"));
    assert_eq!(files.len(), 3, "{files:?}");
}

#[test]
fn a_function_uses_its_app_s_buckets_with_boto3_unconfigured() {
    let (server, endpoint) = start_with_boto3();
    // Another app's bucket, which the function must not reach.
    write_app(
        &server.path("rival"),
        &[
            (
                "stratus.yaml",
                "app: rival\nfunctions:\n  f:\n    runtime: python3\n    handler: main.handler\nbuckets:\n  secret: {}\n",
            ),
            ("main.py", "def handler(event, context):\n    return 1\n"),
        ],
    );
    common::deploy(&server, "rival");
    let out = server.ok(&[
        "invoke",
        "shop/hello",
        "--data",
        r#"{"other": "rival-secret"}"#,
    ]);
    let result: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(result["body"], "written inside", "{result}");
    assert_eq!(
        result["buckets"],
        json!(["shop-media-files", "shop-uploads"])
    );
    assert_eq!(result["other"], "AccessDenied");
    // What the function wrote is the app's, seen from outside too.
    let shop = credential(&server, "shop");
    let r = s3(
        &server,
        &endpoint,
        "path",
        &shop,
        json!([["get_object", {"Bucket": "shop-uploads", "Key": "from-function.txt"}]]),
    );
    assert_eq!(r[0]["Body"], "written inside");
}

/// Makes a thumbnail of each PNG put under `images/`, with Pillow, into
/// `thumbs/`.
const THUMBNAILER: &str = r#"
import io, urllib.parse
import boto3
from PIL import Image

s3 = boto3.client("s3")

def handler(event, context):
    record = event["data"]
    bucket = record["s3"]["bucket"]["name"]
    key = urllib.parse.unquote_plus(record["s3"]["object"]["key"])
    image = Image.open(io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read()))
    image.thumbnail((32, 32))
    out = io.BytesIO()
    image.save(out, "PNG")
    s3.put_object(Bucket=bucket, Key="thumbs/" + key.split("/", 1)[1], Body=out.getvalue(),
                  ContentType="image/png")
    print("thumbnailed", key, event["type"], image.size)
"#;

/// Keeps each S3 notification of a deletion it is given, as it came.
const AUDITOR: &str = r#"
import json
import boto3

def handler(event, context):
    record = event["Records"][0]
    key = record["s3"]["object"]["key"]
    boto3.client("s3").put_object(Bucket=record["s3"]["bucket"]["name"],
                                  Key="audit/" + key.replace("/", "_"), Body=json.dumps(event))
"#;

#[test]
fn storage_triggers_thumbnail_uploads_with_pillow_and_see_deletions() {
    let (server, endpoint) = start_with_boto3();
    write_app(
        &server.path("pics"),
        &[
            (
                "stratus.yaml",
                "app: pics
buckets:
  uploads: {}
functions:
  thumb:
    runtime: python3
    handler: main.handler
    code: ./thumb
    timeout: 60s
    events:
      - storage: { bucket: uploads, on: [created], prefix: images/, suffix: .png }
  audit:
    runtime: python3
    handler: main.handler
    code: ./audit
    events:
      - storage: { bucket: uploads, on: deleted, prefix: images/ }
        format: s3
",
            ),
            ("thumb/main.py", THUMBNAILER),
            ("thumb/requirements.txt", "pillow\n"),
            ("audit/main.py", AUDITOR),
        ],
    );
    common::deploy(&server, "pics");
    let pics = credential(&server, "pics");
    let s3_at = |calls: Value| s3(&server, &endpoint, "path", &pics, calls);
    let r = s3_at(json!([
        ["put_png", {"Bucket": "pics-uploads", "Key": "images/big cat.png", "Width": 200, "Height": 100}],
        ["put_object", {"Bucket": "pics-uploads", "Key": "images/notes.txt", "Body": "not an image"}],
    ]));
    assert!(r[0].get("Error").is_none(), "{r:?}");
    let thumb = common::eventually(std::time::Duration::from_secs(60), || {
        let r =
            s3_at(json!([["png_size", {"Bucket": "pics-uploads", "Key": "thumbs/big cat.png"}]]));
        if r[0].get("Error").is_some() {
            Err(format!("no thumbnail yet: {}", r[0]))
        } else {
            Ok(r[0].clone())
        }
    });
    assert_eq!(thumb, json!({"Size": [32, 16], "Png": true}));
    // The text file and the thumbnail itself matched no trigger: the
    // thumbnailer ran once.
    let lines = common::log_records(&server, "pics/thumb", &[]);
    let ran: Vec<&Value> = lines
        .iter()
        .filter(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("thumbnailed"))
        })
        .collect();
    assert_eq!(ran.len(), 1, "{lines:?}");
    assert!(
        ran[0]["message"]
            .as_str()
            .unwrap()
            .contains("images/big cat.png stratus.storage.object.created (32, 16)"),
        "{}",
        ran[0]
    );

    // A deletion reaches the auditor as S3's own notification.
    s3_at(json!([["delete_object", {"Bucket": "pics-uploads", "Key": "images/big cat.png"}]]));
    let audit = common::eventually(std::time::Duration::from_secs(60), || {
        let r = s3_at(
            json!([["get_object", {"Bucket": "pics-uploads", "Key": "audit/images_big+cat.png"}]]),
        );
        r[0]["Body"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("no audit yet: {}", r[0]))
    });
    let notification: Value = serde_json::from_str(&audit).unwrap();
    let record = &notification["Records"][0];
    assert_eq!(
        record["eventName"], "ObjectRemoved:Delete",
        "{notification}"
    );
    assert_eq!(record["s3"]["bucket"]["name"], "pics-uploads");
    assert_eq!(record["s3"]["object"]["key"], "images/big+cat.png");
    assert!(record["s3"]["object"]["sequencer"].as_str().is_some());
}

#[test]
fn stratus_files_copies_lists_presigns_and_removes() {
    let (server, _) = start();
    let note = server.path("note.txt");
    std::fs::write(&note, "a note").unwrap();
    let out = server.ok(&[
        "files",
        "cp",
        note.to_str().unwrap(),
        "shop/uploads/docs/a.txt",
    ]);
    assert!(out.starts_with("uploaded"), "{out}");
    // A key ending in `/` takes the file's name.
    server.ok(&["files", "cp", note.to_str().unwrap(), "shop/uploads/docs/"]);
    let listed = server.ok(&["files", "ls", "shop/uploads"]);
    assert!(
        listed.contains("docs/a.txt") && listed.contains("docs/note.txt"),
        "{listed}"
    );
    let json: Value = serde_json::from_str(&server.ok(&[
        "files",
        "ls",
        "shop/uploads/docs/n",
        "--output",
        "json",
    ]))
    .unwrap();
    assert_eq!(json.as_array().unwrap().len(), 1, "{json}");
    assert_eq!(json[0]["size"], 6);
    let back = server.path("back.txt");
    server.ok(&[
        "files",
        "cp",
        "shop/uploads/docs/a.txt",
        back.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "a note");
    let url = server.ok(&[
        "files",
        "presign",
        "shop/uploads/docs/a.txt",
        "--expires",
        "10m",
    ]);
    let got = common::client().get(url.trim()).send().unwrap();
    assert_eq!(got.status(), 200, "{url}");
    assert_eq!(got.text().unwrap(), "a note");
    let put = server.ok(&["files", "presign", "shop/uploads/docs/b.txt", "--put"]);
    let sent = common::client()
        .put(put.trim())
        .body("by url")
        .send()
        .unwrap();
    assert_eq!(sent.status(), 200);
    assert_eq!(
        server.ok(&["files", "cp", "shop/uploads/docs/b.txt", "-"]),
        "by url"
    );
    let missing = server.fails(&["files", "ls", "shop/nope"]);
    assert!(
        missing.contains("no bucket \"nope\"") && missing.contains("uploads"),
        "{missing}"
    );

    server.ok(&["files", "rm", "shop/uploads/docs/a.txt"]);
    let buckets = server.ok(&["bucket", "ls", "shop"]);
    assert!(
        buckets.contains("shop-uploads") && buckets.contains("2 objects"),
        "{buckets}"
    );
    let refused = server.fails(&["bucket", "rm", "shop", "uploads"]);
    assert!(refused.contains("--force"), "{refused}");
    server.ok(&["bucket", "rm", "shop", "uploads", "--force"]);
    assert_eq!(walk(&server.data_dir.join("objects")).len(), 0);
    // Still declared: the next deploy makes it again, empty.
    common::deploy(&server, "shop");
    let again = server.ok(&["files", "ls", "shop/uploads"]);
    assert!(again.contains("no objects"), "{again}");
}

/// The AWS SDK for JavaScript v3 as its users write it: PutObject,
/// GetObject, ListObjectsV2, a presigned URL, and `@aws-sdk/lib-storage`'s
/// `Upload` of a large body in parts.
const JS_CLIENT: &str = r#"
const { S3Client, PutObjectCommand, GetObjectCommand, ListObjectsV2Command, HeadObjectCommand } = require("@aws-sdk/client-s3");
const { Upload } = require("@aws-sdk/lib-storage");
const [endpoint, accessKeyId, secretAccessKey] = process.argv.slice(2);
const s3 = new S3Client({ endpoint, region: "us-east-1", forcePathStyle: true,
                          credentials: { accessKeyId, secretAccessKey } });
(async () => {
  const out = {};
  await s3.send(new PutObjectCommand({ Bucket: "shop-uploads", Key: "js/hello.txt", Body: "hello from js",
                                       ContentType: "text/plain" }));
  const got = await s3.send(new GetObjectCommand({ Bucket: "shop-uploads", Key: "js/hello.txt" }));
  out.body = await got.Body.transformToString();
  out.type = got.ContentType;
  const big = Buffer.alloc(12 * 1024 * 1024, 7);
  const upload = new Upload({ client: s3, params: { Bucket: "shop-uploads", Key: "js/big.bin", Body: big },
                              partSize: 5 * 1024 * 1024, queueSize: 2 });
  const done = await upload.done();
  out.etag = done.ETag;
  const head = await s3.send(new HeadObjectCommand({ Bucket: "shop-uploads", Key: "js/big.bin" }));
  out.size = head.ContentLength;
  const listed = await s3.send(new ListObjectsV2Command({ Bucket: "shop-uploads", Prefix: "js/" }));
  out.keys = listed.Contents.map((c) => c.Key);
  console.log(JSON.stringify(out));
})().catch((err) => { console.error(err); process.exit(1); });
"#;

#[test]
fn the_aws_sdk_for_javascript_puts_gets_lists_and_uploads_in_parts() {
    let (server, endpoint) = start();
    let shop = credential(&server, "shop");
    let modules = common::npm_install(
        "aws-sdk-s3",
        &["@aws-sdk/client-s3", "@aws-sdk/lib-storage"],
    );
    let script = server.path("s3.js");
    std::fs::write(&script, JS_CLIENT).unwrap();
    let out = Command::new("node")
        .arg(&script)
        .args([&endpoint, &shop.key, &shop.secret])
        .env("NODE_PATH", &modules)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["body"], "hello from js");
    assert_eq!(r["type"], "text/plain");
    assert!(r["etag"].as_str().unwrap().ends_with("-3\""), "{r}");
    assert_eq!(r["size"], 12 << 20);
    assert_eq!(r["keys"], json!(["js/big.bin", "js/hello.txt"]));
}

#[test]
fn browsers_upload_with_a_form_policy_and_across_origins_as_cors_allows() {
    let (server, endpoint) = start();
    let shop = credential(&server, "shop");
    let r = s3(
        &server,
        &endpoint,
        "path",
        &shop,
        json!([
            ["presigned_post", {"Bucket": "shop-uploads", "Key": "posts/${filename}", "Body": "from a form", "Max": 100}],
            ["get_object", {"Bucket": "shop-uploads", "Key": "posts/up.txt"}],
            ["presigned_post", {"Bucket": "shop-uploads", "Key": "posts/${filename}", "Body": "far too long", "Max": 5}],
            ["presigned_post", {"Bucket": "shop-uploads", "Key": "posts/${filename}", "Body": "x", "Max": 5, "Tamper": true}],
        ]),
    );
    assert_eq!(r[0]["Status"], 204, "{r:?}");
    assert_eq!(r[1]["Body"], "from a form");
    assert_eq!(r[1]["ContentType"], "text/plain");
    assert_eq!(r[2]["Status"], 400);
    assert!(
        r[2]["Body"].as_str().unwrap().contains("EntityTooLarge"),
        "{}",
        r[2]
    );
    assert_eq!(r[3]["Status"], 403);
    assert!(
        r[3]["Body"]
            .as_str()
            .unwrap()
            .contains("policy condition failed"),
        "{}",
        r[3]
    );

    // A preflight from an allowed origin, and from another.
    let http = common::client();
    let preflight = |origin: &str, method: &str| {
        http.request(
            reqwest::Method::OPTIONS,
            format!("{endpoint}/shop-uploads/posts/up.txt"),
        )
        .header("origin", origin)
        .header("access-control-request-method", method)
        .header("access-control-request-headers", "content-type")
        .send()
        .unwrap()
    };
    let allowed = preflight("https://app.example.com", "PUT");
    assert_eq!(allowed.status(), 200);
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert!(
        allowed.headers()["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("PUT")
    );
    assert_eq!(preflight("https://evil.example.com", "PUT").status(), 403);
    assert_eq!(preflight("https://app.example.com", "DELETE").status(), 403);
    // The actual request's answer carries what the page may read.
    let got = http
        .get(format!("{endpoint}/shop-uploads/posts/up.txt"))
        .header("origin", "https://app.example.com")
        .send()
        .unwrap();
    // Unsigned and the bucket is not public: refused, but readable by the
    // page that asked, as S3 answers.
    assert_eq!(got.status(), 403);
    assert_eq!(
        got.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(got.headers()["access-control-expose-headers"], "etag");
    // A bucket without `cors:` answers no preflight.
    let media = http
        .request(
            reqwest::Method::OPTIONS,
            format!("{endpoint}/shop-media-files/k"),
        )
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "GET")
        .send()
        .unwrap();
    assert_eq!(media.status(), 403);
}

#[test]
fn lifecycle_expires_old_objects_under_its_prefix_and_usage_is_reported() {
    let (server, endpoint) = start_with(&["--lifecycle-interval", "1s"]);
    write_app(
        &server.path("temp"),
        &[
            (
                "stratus.yaml",
                "app: temp\nfunctions:\n  f:\n    runtime: python3\n    handler: main.handler\nbuckets:\n  scratch:\n    lifecycle: { expire_after: 2s, prefix: tmp/ }\n",
            ),
            ("main.py", "def handler(event, context):\n    return 1\n"),
        ],
    );
    common::deploy(&server, "temp");
    let temp = credential(&server, "temp");
    let r = s3(
        &server,
        &endpoint,
        "path",
        &temp,
        json!([
            ["put_object", {"Bucket": "temp-scratch", "Key": "tmp/old.txt", "Body": "goes"}],
            ["put_object", {"Bucket": "temp-scratch", "Key": "keep/this.txt", "Body": "stays"}],
        ]),
    );
    assert!(r.iter().all(|r| r.get("Error").is_none()), "{r:?}");
    common::eventually(std::time::Duration::from_secs(30), || {
        let r = s3(
            &server,
            &endpoint,
            "path",
            &temp,
            json!([["list_objects_v2", {"Bucket": "temp-scratch"}]]),
        );
        let keys: Vec<&str> = r[0]["Contents"]
            .as_array()
            .map(|c| c.iter().filter_map(|o| o["Key"].as_str()).collect())
            .unwrap_or_default();
        if keys == ["keep/this.txt"] {
            Ok(())
        } else {
            Err(format!("still {keys:?}"))
        }
    });
    let status = server.ok(&["status"]);
    assert!(
        status.contains("temp: 1 buckets, 1 objects, 5 B"),
        "{status}"
    );
    let metrics = common::client()
        .get(format!("{}/metrics", server.admin))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("stratus_storage_objects{app=\"temp\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("stratus_storage_bytes{app=\"temp\"} 5"),
        "{metrics}"
    );
}

#[test]
fn a_public_bucket_is_read_by_anyone_and_written_by_its_app_only() {
    let (server, endpoint) = start();
    let shop = credential(&server, "shop");
    let r = s3(
        &server,
        &endpoint,
        "path",
        &shop,
        json!([
            ["put_object", {"Bucket": "shop-media-files", "Key": "a/1.txt", "Body": "one"}],
            ["put_object", {"Bucket": "shop-media-files", "Key": "a/2.txt", "Body": "two"}],
            ["put_object", {"Bucket": "shop-media-files", "Key": "b/3.txt", "Body": "three"}],
            ["put_object", {"Bucket": "shop-media-files", "Key": "c.txt", "Body": "four"}],
            ["list_objects", {"Bucket": "shop-media-files", "Delimiter": "/", "MaxKeys": 1}],
        ]),
    );
    // ListObjects (version 1) pages past a common prefix by its NextMarker.
    assert_eq!(
        r[4]["CommonPrefixes"],
        json!([{"Prefix": "a/"}]),
        "{}",
        r[4]
    );
    assert_eq!(r[4]["NextMarker"], "a/");
    let next = s3(
        &server,
        &endpoint,
        "path",
        &shop,
        json!([["list_objects", {"Bucket": "shop-media-files", "Delimiter": "/", "Marker": "a/"}]]),
    );
    assert_eq!(
        next[0]["CommonPrefixes"],
        json!([{"Prefix": "b/"}]),
        "{}",
        next[0]
    );
    assert_eq!(next[0]["Contents"][0]["Key"], "c.txt");

    let http = common::client();
    let unsigned = http
        .get(format!("{endpoint}/shop-media-files/a/1.txt"))
        .send()
        .unwrap();
    assert_eq!(unsigned.status(), 200);
    assert_eq!(unsigned.text().unwrap(), "one");
    let put = http
        .put(format!("{endpoint}/shop-media-files/a/1.txt"))
        .body("overwritten")
        .send()
        .unwrap();
    assert_eq!(put.status(), 403);
    write_app(
        &server.path("rival"),
        &[
            (
                "stratus.yaml",
                "app: rival\nfunctions:\n  f:\n    runtime: python3\n    handler: main.handler\n",
            ),
            ("main.py", "def handler(event, context):\n    return 1\n"),
        ],
    );
    common::deploy(&server, "rival");
    let rival = credential(&server, "rival");
    let r = s3(
        &server,
        &endpoint,
        "path",
        &rival,
        json!([
            ["get_object", {"Bucket": "shop-media-files", "Key": "a/2.txt"}],
            ["put_object", {"Bucket": "shop-media-files", "Key": "a/2.txt", "Body": "mine"}],
            ["get_object", {"Bucket": "shop-uploads", "Key": "a/2.txt"}],
        ]),
    );
    assert_eq!(r[0]["Body"], "two");
    assert_eq!(r[1]["Error"], "AccessDenied");
    assert_eq!(r[2]["Error"], "AccessDenied");
}

#[test]
fn objects_kept_in_another_s3_service_are_served_the_same() {
    // The service: another node's S3 API, a bucket of its own app.
    let (backend, backend_endpoint) = start();
    let owner = credential(&backend, "shop");
    // The secret percent-encoded, as a URL's user information takes it.
    let url = format!(
        "http://{}:{}@{}/shop-uploads/node-a",
        owner.key,
        owner.secret.replace('/', "%2F").replace('+', "%2B"),
        backend_endpoint.trim_start_matches("http://")
    );
    let (server, endpoint) = start_with(&["--objects-s3", &url]);
    let shop = credential(&server, "shop");
    let script = server.path("multipart.py");
    std::fs::write(&script, MULTIPART).unwrap();
    let out = Command::new(python())
        .arg(&script)
        .args([&endpoint, &shop.key, &shop.secret])
        .arg(server.path(""))
        .env("PYTHONPATH", boto3())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["same_bytes"], true, "{r}");
    assert_eq!(r["joined_etag"], r["expected_etag"]);
    assert_eq!(r["after_abort"], "NoSuchUpload");
    let ranged = s3(
        &server,
        &endpoint,
        "path",
        &shop,
        json!([["get_object", {"Bucket": "shop-uploads", "Key": "joined.bin", "Range": "bytes=-10"}]]),
    );
    assert_eq!(ranged[0]["ContentLength"], 10, "{}", ranged[0]);
    // The bytes are the service's: none here, one blob there per object
    // (parts and aborted uploads gone).
    assert_eq!(
        walk(&server.data_dir.join("objects")),
        Vec::<PathBuf>::new()
    );
    let blobs = |who: &Credential| {
        let r = s3(
            &backend,
            &backend_endpoint,
            "path",
            who,
            json!([["list_objects_v2", {"Bucket": "shop-uploads", "Prefix": "node-a/"}]]),
        );
        r[0]["KeyCount"].as_u64().unwrap()
    };
    assert_eq!(blobs(&owner), 2);
    s3(
        &server,
        &endpoint,
        "path",
        &shop,
        json!([["delete_object", {"Bucket": "shop-uploads", "Key": "big.bin"}]]),
    );
    assert_eq!(blobs(&owner), 1);
}

#[test]
fn a_node_function_uses_its_app_s_buckets_with_the_aws_sdk_unconfigured() {
    let (server, _) = start();
    write_app(
        &server.path("shopjs"),
        &[
            (
                "stratus.yaml",
                "app: shopjs\nbuckets:\n  data: {}\nfunctions:\n  f:\n    runtime: nodejs\n    handler: index.handler\n    timeout: 60s\n",
            ),
            (
                "package.json",
                r#"{"dependencies": {"@aws-sdk/client-s3": "^3"}}"#,
            ),
            (
                "index.js",
                r#"const { S3Client, PutObjectCommand, GetObjectCommand } = require("@aws-sdk/client-s3");
const s3 = new S3Client({});
exports.handler = async () => {
  await s3.send(new PutObjectCommand({ Bucket: "shopjs-data", Key: "k.txt", Body: "from node" }));
  const got = await s3.send(new GetObjectCommand({ Bucket: "shopjs-data", Key: "k.txt" }));
  return { body: await got.Body.transformToString() };
};
"#,
            ),
        ],
    );
    common::deploy(&server, "shopjs");
    let out = server.ok(&["invoke", "shopjs/f"]);
    let result: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(result["body"], "from node", "{result}");
}
