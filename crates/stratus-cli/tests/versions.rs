//! Every version an app was deployed as, and going back to one at once.

mod common;

use common::{Server, write_app};

fn app(server: &Server, value: &str) {
    write_app(
        &server.path("back"),
        &[
            (
                "stratus.yaml",
                &format!(
                    "app: back\nfunctions:\n  f:\n    runtime: python3\n    handler: main.handler\n    env:\n      V: \"{value}\"\n"
                ),
            ),
            (
                "main.py",
                "import os\ndef handler(event, context):\n    return os.environ['V']\n",
            ),
        ],
    );
    server.ok(&["deploy", server.path("back").to_str().unwrap()]);
}

fn listed(server: &Server) -> serde_json::Value {
    serde_json::from_str(&server.ok(&["versions", "back", "--output", "json"])).unwrap()
}

#[test]
fn an_earlier_version_serves_again_at_once_and_the_next_deploy_comes_after() {
    let server = Server::start();
    app(&server, "one");
    let first = server.fails(&["rollback", "back"]);
    assert!(first.contains("is app back's first"), "{first}");
    app(&server, "two");
    assert_eq!(server.invoke("back/f", "{}")["result"], "two");

    let versions = listed(&server);
    assert_eq!(versions["active"], 2);
    let rows = versions["versions"].as_array().unwrap();
    assert_eq!(
        rows.iter()
            .map(|v| v["version"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [2, 1]
    );
    assert!(
        rows.iter()
            .all(|v| v["source"].as_str().unwrap().starts_with("upload .@")),
        "{versions}"
    );
    let table = server.ok(&["versions", "back"]);
    assert!(
        table.contains("active") && table.contains("upload"),
        "{table}"
    );

    // Back to the one before, without a deploy.
    let said = server.ok(&["rollback", "back"]);
    assert!(said.contains("back runs version 1 again"), "{said}");
    assert_eq!(server.invoke("back/f", "{}")["result"], "one");
    assert_eq!(listed(&server)["active"], 1);
    // Forward again, by number.
    server.ok(&["rollback", "back", "2"]);
    assert_eq!(server.invoke("back/f", "{}")["result"], "two");
    let missing = server.cli(&["rollback", "back", "9"]);
    assert_eq!(missing.status.code(), Some(3), "{missing:?}");
    assert!(String::from_utf8_lossy(&missing.stderr).contains("has no version 9"));

    // After a rollback, a deploy numbers after the newest.
    server.ok(&["rollback", "back", "1"]);
    app(&server, "three");
    assert_eq!(listed(&server)["active"], 3);
    assert_eq!(server.invoke("back/f", "{}")["result"], "three");
}

/// The code of versions past `--keep-versions` goes (after
/// `--package-grace`); going back to one of those is refused, saying so,
/// and a kept one still serves again at once.
#[test]
fn the_code_of_versions_no_longer_kept_goes() {
    let server = Server::start_with(&["--keep-versions", "2", "--package-grace", "0s"]);
    for value in ["one", "two", "three", "four"] {
        write_app(
            &server.path("back"),
            &[
                (
                    "stratus.yaml",
                    "app: back\nfunctions:\n  f:\n    runtime: python3\n    handler: main.handler\n",
                ),
                (
                    "main.py",
                    &format!("def handler(event, context):\n    return '{value}'\n"),
                ),
            ],
        );
        server.ok(&["deploy", server.path("back").to_str().unwrap()]);
    }
    // Versions 4 and 3 keep their code.
    common::eventually(std::time::Duration::from_secs(10), || {
        let kept = std::fs::read_dir(server.data_dir.join("code"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().len() == 64)
            .count();
        match kept {
            2 => Ok(()),
            n => Err(format!("{n} packages unpacked")),
        }
    });
    let refused = server.fails(&["rollback", "back", "1"]);
    assert!(
        refused.contains("cannot be made active again; deploy it anew"),
        "{refused}"
    );
    assert_eq!(server.invoke("back/f", "{}")["result"], "four");
    server.ok(&["rollback", "back", "3"]);
    assert_eq!(server.invoke("back/f", "{}")["result"], "three");
    assert_eq!(
        listed(&server)["versions"].as_array().unwrap().len(),
        4,
        "every version stays listed"
    );
}

/// `git` in `dir`, as a person would run it.
fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The server fetches a commit of a repository, deploys the app in a
/// directory of it, and records the commit; a ref or path that is not
/// there is refused with git's own words, and nothing is deployed.
#[test]
fn an_app_deploys_from_git_and_its_version_names_the_commit() {
    let server = Server::start();
    let repo = server.path("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    let commit = |value: &str, message: &str| {
        write_app(
            &repo.join("apps/hello"),
            &[
                (
                    "stratus.yaml",
                    "app: fromgit\nfunctions:\n  f:\n    runtime: python3\n    handler: main.handler\n",
                ),
                (
                    "main.py",
                    &format!("def handler(event, context):\n    return '{value}'\n"),
                ),
            ],
        );
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-q", "-m", message]);
        git(&repo, &["rev-parse", "HEAD"])
    };
    let first = commit("one", "The first one");
    let url = format!("file://{}", repo.display());
    let deploy = |extra: &[&str]| {
        let mut args = vec!["deploy", "--git", url.as_str(), "--path", "apps/hello"];
        args.extend_from_slice(extra);
        server.cli(&args)
    };
    let out = deploy(&[]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(server.invoke("fromgit/f", "{}")["result"], "one");
    commit("two", "The second one");
    assert!(deploy(&["--ref", "main"]).status.success());
    assert_eq!(server.invoke("fromgit/f", "{}")["result"], "two");

    let versions: serde_json::Value =
        serde_json::from_str(&server.ok(&["versions", "fromgit", "--output", "json"])).unwrap();
    let sources: Vec<&str> = versions["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["source"].as_str().unwrap())
        .collect();
    assert_eq!(sources[0].split(' ').next(), Some("git"), "{sources:?}");
    assert!(sources[0].ends_with("The second one"), "{sources:?}");
    assert_eq!(
        sources[1],
        format!("git {} The first one", &first[..12]),
        "{sources:?}"
    );

    // A ref that is not there, a path that holds no app.
    let out = deploy(&["--ref", "no-such-branch"]);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("fetching no-such-branch") && said.contains("nothing was deployed"),
        "{said}"
    );
    let out = server.cli(&["deploy", "--git", &url, "--path", "apps"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
    assert_eq!(server.invoke("fromgit/f", "{}")["result"], "two");
}

/// The HMAC-SHA256 of `body` with `key`, hex, as a git host signs a
/// webhook (`openssl`, as a script would).
fn hmac_hex(key: &str, body: &str) -> String {
    let out = common::output_with_stdin(
        std::process::Command::new("openssl").args(["dgst", "-sha256", "-hmac", key]),
        body,
    );
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    text.rsplit("= ").next().unwrap().trim().to_owned()
}

/// A push to the repository, told through the app's webhook on the public
/// listener with GitHub's signature, deploys the pushed branch; a wrong
/// signature is refused, a ping answered, another branch ignored, and the
/// webhook's secret is never listed.
#[test]
fn a_signed_push_webhook_deploys_the_pushed_branch() {
    let server = Server::start();
    let repo = server.path("hooked");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    let commit = |value: &str| {
        write_app(
            &repo,
            &[
                (
                    "stratus.yaml",
                    "app: hooked\nfunctions:\n  f:\n    runtime: python3\n    handler: main.handler\n",
                ),
                (
                    "main.py",
                    &format!("def handler(event, context):\n    return '{value}'\n"),
                ),
            ],
        );
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-q", "-m", value]);
        git(&repo, &["rev-parse", "HEAD"])
    };
    let first = commit("one");
    let url = format!("file://{}", repo.display());
    let made: serde_json::Value = serde_json::from_str(&server.ok(&[
        "git", "webhook", "hooked", "--url", &url, "--ref", "main", "--output", "json",
    ]))
    .unwrap();
    let hook = made["url"].as_str().unwrap().to_owned();
    assert_eq!(
        hook,
        format!("{}/hooked/_stratus/webhooks/git", server.public)
    );
    let secret = made["secret"].as_str().unwrap().to_owned();
    let post = |event: &str, body: &str, signature: &str| {
        let response = common::client()
            .post(&hook)
            .header("content-type", "application/json")
            .header("x-github-event", event)
            .header("x-hub-signature-256", format!("sha256={signature}"))
            .body(body.to_owned())
            .send()
            .unwrap();
        let status = response.status().as_u16();
        (status, response.text().unwrap())
    };
    let push = |reference: &str, after: &str| {
        format!(
            r#"{{"ref":"{reference}","after":"{after}","deleted":false,"repository":{{"clone_url":"https://example.com/x.git"}}}}"#
        )
    };

    let body = push("refs/heads/main", &first);
    let (status, said) = post("push", &body, &hmac_hex("not the secret", &body));
    assert_eq!(status, 401, "{said}");
    assert!(said.contains("X-Hub-Signature-256"), "{said}");
    let (status, _) = post("ping", "{}", &hmac_hex(&secret, "{}"));
    assert_eq!(status, 200);
    let other = push("refs/heads/feature", &first);
    let (status, said) = post("push", &other, &hmac_hex(&secret, &other));
    assert_eq!(status, 202);
    assert!(said.contains("nothing to deploy"), "{said}");
    assert!(server.fails(&["invoke", "hooked/f"]).contains("hooked"));

    let (status, said) = post("push", &body, &hmac_hex(&secret, &body));
    assert_eq!(status, 202, "{said}");
    common::eventually(std::time::Duration::from_secs(30), || {
        let out = server.cli(&["invoke", "hooked/f"]);
        match String::from_utf8_lossy(&out.stdout).trim() {
            "\"one\"" => Ok(()),
            other => Err(format!("hooked/f answers {other:?}")),
        }
    });
    let second = commit("two");
    let body = push("refs/heads/main", &second);
    assert_eq!(post("push", &body, &hmac_hex(&secret, &body)).0, 202);
    common::eventually(std::time::Duration::from_secs(30), || {
        let out = server.cli(&["invoke", "hooked/f"]);
        match String::from_utf8_lossy(&out.stdout).trim() {
            "\"two\"" => Ok(()),
            other => Err(format!("hooked/f answers {other:?}")),
        }
    });
    let versions: serde_json::Value =
        serde_json::from_str(&server.ok(&["versions", "hooked", "--output", "json"])).unwrap();
    assert!(
        versions["versions"][0]["source"]
            .as_str()
            .unwrap()
            .starts_with(&format!("git {}", &second[..12])),
        "{versions}"
    );
    // The secret is the platform's, not one of the app's.
    let listed = server.ok(&["secret", "ls", "hooked", "--output", "json"]);
    assert!(
        !listed.contains("webhook") && !listed.contains(&secret),
        "{listed}"
    );

    server.ok(&["git", "webhook", "hooked", "--rm"]);
    let (status, _) = post("push", &body, &hmac_hex(&secret, &body));
    assert_eq!(status, 404);
}

/// `git push` to the app's remote on the server deploys main, the build's
/// output coming back as `remote:` lines, and records the commit; a push
/// whose deploy fails is refused with the reason, the branch and the
/// active version stay; a wrong token is refused.
#[test]
fn a_push_to_the_app_s_git_remote_deploys_it_or_is_refused() {
    let server = Server::start();
    let repo = server.path("pushed");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    let commit = |manifest: &str, value: &str| {
        write_app(
            &repo,
            &[
                ("stratus.yaml", manifest),
                (
                    "main.py",
                    &format!("def handler(event, context):\n    return '{value}'\n"),
                ),
                ("requirements.txt", "six==1.16.0\n"),
            ],
        );
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-q", "-m", &format!("answer {value}")]);
        git(&repo, &["rev-parse", "HEAD"])
    };
    let manifest =
        "app: pushed\nfunctions:\n  f:\n    runtime: python3\n    handler: main.handler\n";
    let first = commit(manifest, "one");
    let remote = server.ok(&["git", "remote", "pushed", "--with-token"]);
    let remote = remote.trim();
    assert!(remote.ends_with("/v1/apps/pushed/git"), "{remote}");
    let push = |url: &str| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(&repo)
            .args(["push", url, "main"])
            .env("GIT_TERMINAL_PROMPT", "0")
            .output()
            .unwrap()
    };

    let out = push(remote);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("remote: ==> . (python3): install Python requirements")
            && said.contains("remote: deployed pushed version 1"),
        "{said}"
    );
    assert_eq!(server.invoke("pushed/f", "{}")["result"], "one");
    let versions: serde_json::Value =
        serde_json::from_str(&server.ok(&["versions", "pushed", "--output", "json"])).unwrap();
    assert_eq!(
        versions["versions"][0]["source"],
        format!("git {} answer one", &first[..12]),
        "{versions}"
    );

    // A broken manifest: refused, with the manifest's error.
    commit("app: pushed\nfunctions:\n  f:\n    runtime: cobol\n", "two");
    let out = push(remote);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("remote:")
            && said.contains("unknown runtime")
            && said.contains("pre-receive hook declined"),
        "{said}"
    );
    assert_eq!(server.invoke("pushed/f", "{}")["result"], "one");

    // A fixed one goes in on top.
    commit(manifest, "three");
    let out = push(remote);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(server.invoke("pushed/f", "{}")["result"], "three");

    let wrong = remote.replace(&server.token, &"x".repeat(40));
    let out = push(&wrong);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Authentication failed"),
        "{out:?}"
    );
}
