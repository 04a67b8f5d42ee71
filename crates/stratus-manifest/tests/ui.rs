//! Golden tests for what users see: each case is a manifest and the exact
//! rendered result, either the errors as printed or a compact view of the
//! resolved application.

use std::fmt::Write;

/// Parses `input` as `stratus.yaml` and compares the rendered outcome with
/// `expected`. Both are dedented, so cases can be written indented in place.
fn check(input: &str, expected: &str) {
    let input = dedent(input);
    let actual = match stratus_manifest::parse("stratus.yaml", &input) {
        Ok(app) => render(&app),
        Err(errors) => errors.to_string(),
    };
    let expected = dedent(expected);
    assert_eq!(
        actual.trim_end(),
        expected.trim_end(),
        "\n--- input ---\n{input}\n--- actual ---\n{actual}\n--- expected ---\n{expected}\n"
    );
}

/// `app NAME`, then one line per function:
/// `name runtime handler code memory timeout_ms max_instances env`.
fn render(app: &stratus_manifest::AppSpec) -> String {
    let mut out = format!("app {}\n", app.name);
    for f in app.functions.values() {
        let env = if f.env.is_empty() && f.secret_env.is_empty() {
            "-".to_owned()
        } else {
            f.env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .chain(
                    f.secret_env
                        .iter()
                        .map(|(k, v)| format!("{k}=<secret {v}>")),
                )
                .collect::<Vec<_>>()
                .join(",")
        };
        writeln!(
            out,
            "{} {} {} {} {} {} {} {}",
            f.name,
            f.runtime,
            f.handler,
            f.code,
            f.memory_mb,
            f.timeout.as_millis(),
            f.max_instances,
            env
        )
        .unwrap();
        if let Some(http) = &f.http {
            let methods = http.methods_label();
            write!(
                out,
                "  http {} {} auth={:?}",
                http.paths.join(","),
                methods,
                http.auth
            )
            .unwrap();
            if let Some(cors) = &http.cors {
                write!(
                    out,
                    " cors={} credentials={} headers={} max_age={:?}",
                    cors.origins.join(","),
                    cors.credentials,
                    cors.headers.join(","),
                    cors.max_age_secs
                )
                .unwrap();
            }
            if http.streaming {
                out.push_str(" streaming");
            }
            out.push('\n');
        }
        for trigger in &f.events {
            writeln!(out, "  event {trigger:?}").unwrap();
        }
        for (field, to) in [("on_success", &f.on_success), ("on_failure", &f.on_failure)] {
            if let Some(to) = to {
                writeln!(out, "  {field} {to}").unwrap();
            }
        }
    }
    for q in app.queues.values() {
        writeln!(
            out,
            "queue {} visibility={}s retention={}s",
            q.name,
            q.visibility_timeout.as_secs(),
            q.retention.as_secs()
        )
        .unwrap();
    }
    for s in app.services.values() {
        writeln!(
            out,
            "service {} code={} command={:?} port={:?} http={} {} ready={:?}/{} concurrency={} instances={}..{} idle={} memory={} queue={} drain={} access_log={} env={:?}",
            s.name,
            s.code,
            s.command,
            s.port,
            s.http.paths.join(","),
            s.http.methods_label(),
            s.readiness.path,
            s.readiness.timeout.as_secs(),
            s.concurrency,
            s.min_instances,
            s.max_instances,
            s.idle_timeout.as_secs(),
            s.memory_mb,
            s.queue_depth,
            s.drain_grace.as_secs(),
            s.access_log,
            s.env,
        )
        .unwrap();
    }
    out
}

/// Drops the first line if blank, and the indentation common to the rest.
fn dedent(text: &str) -> String {
    let text = text.strip_prefix('\n').unwrap_or(text);
    let indent = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    let mut out = String::new();
    for line in text.lines() {
        out.push_str(line.get(indent..).unwrap_or("").trim_end_matches(' '));
        out.push('\n');
    }
    // A closing quote on its own indented line leaves only whitespace behind.
    out.truncate(out.trim_end().len());
    if !out.is_empty() {
        out.push('\n');
    }
    out
}

// ---- valid manifests --------------------------------------------------------

#[test]
fn full_manifest_with_defaults() {
    check(
        "
        version: 1
        app: hello
        functions:
          greet:
            runtime: python3
            handler: main.handler
            code: ./greet
          api:
            runtime: nodejs
            handler: index.handler
            code: api/
            memory: 512
            timeout: 2m
            max_instances: 3
            env:
              GREETING: hi
          worker:
            runtime: python3
            handler: jobs/run.main
        ",
        "
        app hello
        api nodejs index.handler api 512 120000 3 GREETING=hi
        greet python3 main.handler greet 128 30000 100 -
        worker python3 jobs/run.main . 128 30000 100 -
        ",
    );
}

#[test]
fn provided_defaults_to_bootstrap() {
    check(
        "
        app: hello
        functions:
          native:
            runtime: provided
        ",
        "
        app hello
        native provided bootstrap . 128 30000 100 -
        ",
    );
}

#[test]
fn env_scalars_are_stringified() {
    check(
        "
        app: hello
        functions:
          greet:
            runtime: python3
            handler: main.handler
            timeout: 500ms
            env:
              PORT: 8080
              DEBUG: true
              RATIO: 0.5
              NAME: hi there
              _PRIVATE: x
        ",
        "
        app hello
        greet python3 main.handler . 128 500 100 DEBUG=true,NAME=hi there,PORT=8080,RATIO=0.5,_PRIVATE=x
        ",
    );
}

#[test]
fn env_names_secrets() {
    check(
        "
        app: hello
        functions:
          greet:
            runtime: python3
            handler: main.handler
            env:
              GREETING: hi
              DB_PASSWORD: { secret: db_password }
        ",
        "
        app hello
        greet python3 main.handler . 128 30000 100 GREETING=hi,DB_PASSWORD=<secret db_password>
        ",
    );
}

#[test]
fn a_secret_reference_is_checked() {
    check(
        "
        app: hello
        functions:
          greet:
            runtime: python3
            handler: main.handler
            env:
              A: { secret: 'no spaces' }
        ",
        "
        stratus.yaml:7: functions.greet.env.A: invalid secret name \"no spaces\"
          hint: a secret name has 1 to 64 letters, digits, '_', '-' or '.', starting with a letter or digit
        ",
    );
    check(
        "
        app: hello
        functions:
          greet:
            runtime: python3
            handler: main.handler
            env:
              B: { secrt: x }
        ",
        "
        stratus.yaml:7: functions.greet.env.B.secrt: unknown key `secrt`
          hint: did you mean `secret`?
        ",
    );
}

#[test]
fn flow_style_env() {
    check(
        "
        app: hello
        functions:
          greet: { runtime: nodejs, handler: index.handler, env: { A: b } }
        ",
        "
        app hello
        greet nodejs index.handler . 128 30000 100 A=b
        ",
    );
}

// ---- unknown keys -----------------------------------------------------------

#[test]
fn unknown_top_level_key() {
    check(
        "
        app: hello
        functons:
          greet:
            runtime: python3
        ",
        "
        stratus.yaml:2: functons: unknown key `functons`
          hint: did you mean `functions`?
        ",
    );
}

#[test]
fn unknown_function_key() {
    check(
        "
        app: hello
        functions:
          greet:
            runtim: python3
            handler: main.handler
        ",
        "
        stratus.yaml:4: functions.greet.runtim: unknown key `runtim`
          hint: did you mean `runtime`?
        ",
    );
}

#[test]
fn unknown_key_far_from_any_known() {
    check(
        "
        app: hello
        functions:
          greet:
            runtime: python3
            handler: main.handler
            colour: blue
        ",
        "
        stratus.yaml:6: functions.greet.colour: unknown key `colour`
          hint: remove it; see the manifest reference in the README
        ",
    );
}

#[test]
fn function_key_at_top_level() {
    check(
        "
        app: hello
        runtime: python3
        functions:
          greet:
            handler: main.handler
        ",
        "
        stratus.yaml:2: runtime: unknown key `runtime`
          hint: `runtime` is a function setting; indent it under a function's name in `functions:`
        ",
    );
}

#[test]
fn top_level_key_in_function() {
    check(
        "
        app: hello
        functions:
          greet:
            runtime: python3
            handler: main.handler
            version: 1
        ",
        "
        stratus.yaml:6: functions.greet.version: unknown key `version`
          hint: `version` is a top-level key; move `version:` out of the function, with no indentation
        ",
    );
}

#[test]
fn future_top_level_key() {
    check(
        "
        app: hello
        http:
          routes: []
        functions:
          greet:
            runtime: python3
            handler: main.handler
        ",
        "
        stratus.yaml:2: http: unknown key `http`
          hint: `http` is a function setting; indent it under a function's name in `functions:`
        ",
    );
}

// ---- missing keys -----------------------------------------------------------

#[test]
fn missing_app() {
    check(
        "
        functions:
          greet:
            runtime: python3
            handler: main.handler
        ",
        "
        stratus.yaml:1: app: `app` is required
          hint: add `app:` with the application's name, e.g. `app: hello`
        ",
    );
}

#[test]
fn missing_runtime() {
    check(
        "
        app: hello
        functions:
          greet:
            handler: main.handler
        ",
        "
        stratus.yaml:3: functions.greet.runtime: `runtime` is required
          hint: add `runtime:` with one of python3, nodejs, provided
        ",
    );
}

#[test]
fn missing_handler_python() {
    check(
        "
        app: hello
        functions:
          greet:
            runtime: python3
        ",
        "
        stratus.yaml:3: functions.greet.handler: a python3 function needs a handler
          hint: add `handler: main.handler`
        ",
    );
}

#[test]
fn missing_handler_nodejs() {
    check(
        "
        app: hello
        functions:
          greet:
            runtime: nodejs
        ",
        "
        stratus.yaml:3: functions.greet.handler: a nodejs function needs a handler
          hint: add `handler: index.handler`
        ",
    );
}

#[test]
fn no_functions() {
    check(
        "
        app: hello
        functions: {}
        ",
        "
        stratus.yaml:2: functions: the application declares no functions and no services
          hint: add one under `functions:`; `stratus init NAME` writes an example
        ",
    );
}

#[test]
fn functions_left_out() {
    check(
        "
        app: hello
        ",
        "
        stratus.yaml: functions: the application declares no functions and no services
          hint: add one under `functions:`; `stratus init NAME` writes an example
        ",
    );
}

#[test]
fn functions_key_without_value() {
    check(
        "
        app: hello
        functions:
        ",
        "
        stratus.yaml:2: functions: the application declares no functions and no services
          hint: add one under `functions:`; `stratus init NAME` writes an example
        ",
    );
}

// ---- wrong types ------------------------------------------------------------

#[test]
fn memory_wrong_type() {
    check(
        "
        app: hello
        functions:
          greet:
            runtime: python3
            handler: main.handler
            memory: lots
        ",
        "
        stratus.yaml:6: functions.greet.memory: invalid type: string \"lots\"
          hint: a whole number of MiB between 64 and 10240, e.g. `memory: 256`
        ",
    );
}

#[test]
fn timeout_as_bare_number() {
    check(
        "
        app: hello
        functions:
          greet:
            runtime: python3
            handler: main.handler
            timeout: 30
        ",
        "
        stratus.yaml:6: functions.greet.timeout: invalid duration \"30\": time unit needed, for example 30sec or 30ms
          hint: a duration such as `30s`, `2m` or `500ms`, at most 15m
        ",
    );
}

#[test]
fn env_null_value() {
    check(
        "
        app: hello
        functions:
          greet:
            runtime: python3
            handler: main.handler
            env:
              EMPTY:
        ",
        "
        stratus.yaml:7: functions.greet.env.EMPTY: invalid type: null
          hint: an environment value is a string, number or boolean (write `\"\"` for an empty one), or `{ secret: NAME }`
        ",
    );
}

#[test]
fn functions_as_list() {
    check(
        "
        app: hello
        functions:
          - greet
        ",
        "
        stratus.yaml:3: functions: invalid type: sequence
          hint: `functions` maps function names to their settings
        ",
    );
}

#[test]
fn function_given_as_string() {
    check(
        "
        app: hello
        functions:
          greet: python3
        ",
        "
        stratus.yaml:3: functions.greet: invalid type: string \"python3\"
          hint: a function is a mapping of its settings, e.g. `runtime: python3` indented below its name
        ",
    );
}

#[test]
fn negative_memory() {
    check(
        "
        app: hello
        functions:
          greet:
            runtime: python3
            handler: main.handler
            memory: -5
        ",
        "
        stratus.yaml:6: functions.greet.memory: invalid type: integer `-5`
          hint: a whole number of MiB between 64 and 10240, e.g. `memory: 256`
        ",
    );
}

// ---- invalid values ---------------------------------------------------------

#[test]
fn memory_out_of_range() {
    check(
        "
        app: hello
        functions:
          greet:
            runtime: python3
            handler: main.handler
            memory: 32
        ",
        "
        stratus.yaml:6: functions.greet.memory: memory 32 MiB is out of range
          hint: a whole number of MiB between 64 and 10240, e.g. `memory: 256`
        ",
    );
}

#[test]
fn max_instances_out_of_range() {
    check(
        "
        app: hello
        functions:
          greet:
            runtime: python3
            handler: main.handler
            max_instances: 0
        ",
        "
        stratus.yaml:6: functions.greet.max_instances: max_instances 0 is out of range
          hint: a whole number between 1 and 1000
        ",
    );
}

#[test]
fn bad_timeout_string() {
    check(
        "
        app: hello
        functions:
          greet:
            runtime: python3
            handler: main.handler
            timeout: 30 seconds please
        ",
        "
        stratus.yaml:6: functions.greet.timeout: invalid duration \"30 seconds please\": expected number at 11
          hint: a duration such as `30s`, `2m` or `500ms`, at most 15m
        ",
    );
}

#[test]
fn timeout_over_limit() {
    check(
        "
        app: hello
        functions:
          greet:
            runtime: python3
            handler: main.handler
            timeout: 20m
        ",
        "
        stratus.yaml:6: functions.greet.timeout: timeout 20m is out of range
          hint: a timeout is more than 0 and at most 15m
        ",
    );
}

#[test]
fn zero_timeout() {
    check(
        "
        app: hello
        functions:
          greet:
            runtime: python3
            handler: main.handler
            timeout: 0s
        ",
        "
        stratus.yaml:6: functions.greet.timeout: timeout 0s is out of range
          hint: a timeout is more than 0 and at most 15m
        ",
    );
}

#[test]
fn bad_app_name() {
    check(
        "
        app: Hello_World
        functions:
          greet:
            runtime: python3
            handler: main.handler
        ",
        "
        stratus.yaml:1: app: invalid application name \"Hello_World\"
          hint: use lowercase letters, digits and '-', starting with a letter, at most 40 characters
        ",
    );
}

#[test]
fn bad_function_name() {
    check(
        "
        app: hello
        functions:
          Greet_Me:
            runtime: python3
            handler: main.handler
        ",
        "
        stratus.yaml:3: functions.Greet_Me: invalid function name \"Greet_Me\"
          hint: use lowercase letters, digits and '-', starting with a letter, at most 40 characters
        ",
    );
}

#[test]
fn runtime_alias_python() {
    check(
        "
        app: hello
        functions:
          greet:
            runtime: python
            handler: main.handler
        ",
        "
        stratus.yaml:4: functions.greet.runtime: unknown runtime \"python\"
          hint: did you mean `python3`? runtimes are python3, nodejs, provided, or with a version: python3.12, nodejs22 (`stratus runtimes` lists the server's)
        ",
    );
}

#[test]
fn runtime_alias_node() {
    check(
        "
        app: hello
        functions:
          greet:
            runtime: node
            handler: index.handler
        ",
        "
        stratus.yaml:4: functions.greet.runtime: unknown runtime \"node\"
          hint: did you mean `nodejs`? runtimes are python3, nodejs, provided, or with a version: python3.12, nodejs22 (`stratus runtimes` lists the server's)
        ",
    );
}

#[test]
fn runtime_versions_are_named_as_lambda_names_them() {
    check(
        "
        app: hello
        functions:
          greet:
            runtime: python3.12
            handler: main.handler
          api:
            runtime: nodejs20.x
            handler: index.handler
          web:
            runtime: nodejs22
            handler: index.handler
          odd:
            runtime: python3.twelve
            handler: main.handler
        ",
        "
        stratus.yaml:13: functions.odd.runtime: unknown runtime \"python3.twelve\"
          hint: did you mean `python3`? runtimes are python3, nodejs, provided, or with a version: python3.12, nodejs22 (`stratus runtimes` lists the server's)
        ",
    );
}

#[test]
fn runtime_unknown_without_alias() {
    check(
        "
        app: hello
        functions:
          greet:
            runtime: cobol
        ",
        "
        stratus.yaml:4: functions.greet.runtime: unknown runtime \"cobol\"
          hint: runtimes are python3, nodejs, provided, or with a version: python3.12, nodejs22 (`stratus runtimes` lists the server's)
        ",
    );
}

#[test]
fn malformed_handler() {
    check(
        "
        app: hello
        functions:
          greet:
            runtime: python3
            handler: main
          api:
            runtime: nodejs
            handler: ../index.handler
        ",
        "
        stratus.yaml:5: functions.greet.handler: handler \"main\" is not of the form `module.function`
          hint: for example `handler: main.handler`
        stratus.yaml:8: functions.api.handler: handler \"../index.handler\" is not of the form `file.export`
          hint: for example `handler: index.handler`
        ",
    );
}

#[test]
fn code_path_escaping() {
    check(
        "
        app: hello
        functions:
          greet:
            runtime: python3
            handler: main.handler
            code: ../x
        ",
        "
        stratus.yaml:6: functions.greet.code: code path \"../x\" leaves the application directory
          hint: give a directory inside the application, relative to stratus.yaml, e.g. `code: ./greet`
        ",
    );
}

#[test]
fn code_path_absolute() {
    check(
        "
        app: hello
        functions:
          greet:
            runtime: python3
            handler: main.handler
            code: /srv/greet
        ",
        "
        stratus.yaml:6: functions.greet.code: code path \"/srv/greet\" is absolute
          hint: give a directory inside the application, relative to stratus.yaml, e.g. `code: ./greet`
        ",
    );
}

#[test]
fn invalid_env_name() {
    check(
        "
        app: hello
        functions:
          greet:
            runtime: python3
            handler: main.handler
            env:
              MY-VAR: x
              1ST: y
        ",
        "
        stratus.yaml:7: functions.greet.env.MY-VAR: invalid environment variable name \"MY-VAR\"
          hint: use letters, digits and '_', not starting with a digit
        stratus.yaml:8: functions.greet.env.1ST: invalid environment variable name \"1ST\"
          hint: use letters, digits and '_', not starting with a digit
        ",
    );
}

#[test]
fn an_environment_over_the_limit_is_refused_where_it_is_declared() {
    let big = "x".repeat(40 * 1024);
    check(
        &format!(
            "
            app: hello
            functions:
              greet:
                runtime: python3
                handler: main.handler
                env:
                  A: {big}
                  B: {big}
            services:
              web:
                command: [web]
                http: {{ path: /* }}
                env:
                  C: {big}
            "
        ),
        "
        stratus.yaml:6: functions.greet.env: the environment is 81922 bytes, more than the limit of 65536 (names and values together)
          hint: keep large values in files of the code directory and read them at start
        ",
    );
}

#[test]
fn a_manifest_too_large_or_nested_too_deep_is_refused_before_parsing() {
    let deep = format!(
        "app: hello\nfunctions: {}{}\n",
        "[".repeat(70_000),
        "]".repeat(70_000)
    );
    let started = std::time::Instant::now();
    let errors = stratus_manifest::parse("stratus.yaml", &deep).unwrap_err();
    assert_eq!(
        errors.to_string(),
        "stratus.yaml:2: collections are nested more than 32 deep\n  hint: flatten the structure; no setting needs this depth"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(1));

    let large = format!("app: hello\n# {}\n", "x".repeat(1024 * 1024));
    let errors = stratus_manifest::parse("stratus.yaml", &large).unwrap_err();
    assert!(errors.to_string().contains("more than 1048576"), "{errors}");

    // Brackets in comments do not count; a little real nesting is fine.
    check(
        "
        app: hello   # [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[
        functions:
          greet: { runtime: python3, handler: main.handler, env: { A: '[x]' } }
        ",
        "
        app hello
        greet python3 main.handler . 128 30000 100 A=[x]
        ",
    );
}

#[test]
fn reserved_env_name() {
    check(
        "
        app: hello
        functions:
          greet:
            runtime: python3
            handler: main.handler
            env:
              _HANDLER: other.handler
        ",
        "
        stratus.yaml:7: functions.greet.env._HANDLER: _HANDLER is set by the platform and cannot be overridden
          hint: remove it or choose another name
        ",
    );
}

#[test]
fn unsupported_version() {
    check(
        "
        version: 2
        app: hello
        functions:
          greet:
            runtime: python3
            handler: main.handler
        ",
        "
        stratus.yaml:1: version: manifest version 2 is not supported
          hint: this stratus reads manifest version 1; write `version: 1` or leave it out
        ",
    );
}

// ---- broken documents -------------------------------------------------------

#[test]
fn empty_document() {
    check(
        "",
        "
        stratus.yaml: the manifest is empty
          hint: start from `stratus init NAME --template python`
        ",
    );
}

#[test]
fn comments_only_document() {
    check(
        "
        # todo: write the manifest
        ",
        "
        stratus.yaml: the manifest is empty
          hint: start from `stratus init NAME --template python`
        ",
    );
}

#[test]
fn yaml_syntax_error() {
    check(
        "
        app: hello
        functions:
          greet:
            runtime: python3
           handler: main.handler
        ",
        "
        stratus.yaml:5: did not find expected key, while parsing a block mapping
          hint: this is not valid YAML; check the indentation and quoting on this line and the one before
        ",
    );
}

#[test]
fn unclosed_quote() {
    check(
        "
        app: \"hello
        functions: {}
        ",
        "
        stratus.yaml:1: found unexpected end of stream, while scanning a quoted scalar
          hint: this is not valid YAML; check the indentation and quoting on this line and the one before
        ",
    );
}

#[test]
fn duplicate_key() {
    check(
        "
        app: hello
        functions:
          greet:
            runtime: python3
            handler: main.handler
            runtime: nodejs
        ",
        "
        stratus.yaml:6: functions.greet.runtime: duplicate key `runtime`
          hint: each key may appear only once; remove or rename one of them
        ",
    );
}

#[test]
fn duplicate_function() {
    check(
        "
        app: hello
        functions:
          greet:
            runtime: python3
            handler: main.handler
          greet:
            runtime: nodejs
            handler: index.handler
        ",
        "
        stratus.yaml:6: functions.greet: duplicate key `greet`
          hint: each key may appear only once; remove or rename one of them
        ",
    );
}

#[test]
fn not_a_mapping() {
    check(
        "
        - app: hello
        ",
        "
        stratus.yaml:1: invalid type: sequence
          hint: a manifest is a mapping with `app:` and `functions:` keys
        ",
    );
}

#[test]
fn duplicate_top_level_key() {
    check(
        "
        app: hello
        functions:
          greet:
            runtime: python3
            handler: main.handler
        app: other
        ",
        "
        stratus.yaml:6: app: duplicate key `app`
          hint: each key may appear only once; remove or rename one of them
        ",
    );
}

#[test]
fn duplicate_env_name() {
    check(
        "
        app: hello
        functions:
          greet:
            runtime: python3
            handler: main.handler
            env:
              GREETING: hi
              GREETING: hello
        ",
        "
        stratus.yaml:8: functions.greet.env.GREETING: duplicate key `GREETING`
          hint: each key may appear only once; remove or rename one of them
        ",
    );
}

#[test]
fn duplicate_env_name_flow_style() {
    check(
        "
        app: hello
        functions:
          greet:
            runtime: python3
            handler: main.handler
            env: { A: 1, A: 2 }
        ",
        "
        stratus.yaml:6: functions.greet.env.A: duplicate key `A`
          hint: each key may appear only once; remove or rename one of them
        ",
    );
}

#[test]
fn tab_indentation() {
    check(
        "
        app: hello
        functions:
        \tgreet: {}
        ",
        "
        stratus.yaml:3: found character that cannot start any token, while scanning for the next token
          hint: indent with spaces; YAML does not allow tabs
        ",
    );
}

#[test]
fn unclosed_flow_mapping() {
    check(
        "
        app: hello
        functions: { greet: { runtime: python3, handler: main.handler }
        ",
        "
        stratus.yaml:2: did not find expected ',' or '}', while parsing a flow mapping
          hint: this is not valid YAML; check the indentation and quoting on this line and the one before
        ",
    );
}

#[test]
fn two_documents() {
    check(
        "
        ---
        app: hello
        functions: {}
        ---
        app: other
        ",
        "
        stratus.yaml:4: the manifest holds more than one YAML document
          hint: keep one document: remove this `---` and what follows, or merge it into the first
        ",
    );
}

// ---- many mistakes at once --------------------------------------------------

#[test]
fn several_errors_sorted_by_line() {
    check(
        "
        version: 3
        app: Hello
        functions:
          zeta:
            runtime: python
            handler: main.handler
            memory: 99999
          alpha:
            runtime: nodejs
            timeout: 1h
            code: /abs
            env:
              _HANDLER: x
        ",
        "
        stratus.yaml:1: version: manifest version 3 is not supported
          hint: this stratus reads manifest version 1; write `version: 1` or leave it out
        stratus.yaml:2: app: invalid application name \"Hello\"
          hint: use lowercase letters, digits and '-', starting with a letter, at most 40 characters
        stratus.yaml:5: functions.zeta.runtime: unknown runtime \"python\"
          hint: did you mean `python3`? runtimes are python3, nodejs, provided, or with a version: python3.12, nodejs22 (`stratus runtimes` lists the server's)
        stratus.yaml:7: functions.zeta.memory: memory 99999 MiB is out of range
          hint: a whole number of MiB between 64 and 10240, e.g. `memory: 256`
        stratus.yaml:8: functions.alpha.handler: a nodejs function needs a handler
          hint: add `handler: index.handler`
        stratus.yaml:10: functions.alpha.timeout: timeout 1h is out of range
          hint: a timeout is more than 0 and at most 15m
        stratus.yaml:11: functions.alpha.code: code path \"/abs\" is absolute
          hint: give a directory inside the application, relative to stratus.yaml, e.g. `code: ./greet`
        stratus.yaml:13: functions.alpha.env._HANDLER: _HANDLER is set by the platform and cannot be overridden
          hint: remove it or choose another name
        ",
    );
}

#[test]
fn warm_pool_settings() {
    let app = stratus_manifest::parse(
        "stratus.yaml",
        "app: hello\nfunctions:\n  greet:\n    runtime: python3\n    handler: main.handler\n    min_instances: 2\n    keep_alive: 5m\n",
    )
    .unwrap();
    let greet = &app.functions["greet"];
    assert_eq!(greet.min_instances, 2);
    assert_eq!(greet.keep_alive, Some(std::time::Duration::from_secs(300)));
    assert_eq!(greet.max_instances, 100);
}

#[test]
fn min_instances_above_max() {
    check(
        "
        app: hello
        functions:
          greet:
            runtime: python3
            handler: main.handler
            max_instances: 2
            min_instances: 3
        ",
        "
        stratus.yaml:7: functions.greet.min_instances: min_instances 3 is more than max_instances 2
          hint: a whole number of instances kept warm, at most max_instances
        ",
    );
}

#[test]
fn keep_alive_out_of_range_and_malformed() {
    check(
        "
        app: hello
        functions:
          greet:
            runtime: python3
            handler: main.handler
            keep_alive: 2d
          other:
            runtime: python3
            handler: main.handler
            keep_alive: soon
        ",
        "
        stratus.yaml:6: functions.greet.keep_alive: keep_alive 2days is out of range
          hint: a duration such as `10m` or `30s`, between 1s and 24h
        stratus.yaml:10: functions.other.keep_alive: invalid duration \"soon\": expected number at 0
          hint: a duration such as `10m` or `30s`, between 1s and 24h
        ",
    );
}

#[test]
fn network_modes() {
    let app = stratus_manifest::parse(
        "stratus.yaml",
        "app: hello\nfunctions:\n  a:\n    runtime: python3\n    handler: m.h\n    network: none\n  b:\n    runtime: python3\n    handler: m.h\n",
    )
    .unwrap();
    assert_eq!(app.functions["a"].network, stratus_manifest::Network::None);
    assert_eq!(
        app.functions["b"].network,
        stratus_manifest::Network::Outbound
    );
    check(
        "
        app: hello
        functions:
          greet:
            runtime: python3
            handler: main.handler
            network: private
        ",
        "
        stratus.yaml:6: functions.greet.network: unknown network mode \"private\"
          hint: `outbound` (the default: may connect out), `none` (loopback and the Runtime API only), or `{ outbound: [HOST:PORT, ...], loopback: false }` (only there)
        ",
    );
}

// ---- http ---------------------------------------------------------------------

#[test]
fn http_routes_methods_auth_and_cors() {
    check(
        "
        app: shop
        functions:
          api:
            runtime: nodejs
            handler: index.handler
            http:
              path: /api/*
              methods: [get, POST]
              auth: key
              cors: { origins: [\"https://example.com\"], credentials: true, headers: [X-Trace], max_age: 10m }
          pets:
            runtime: python3
            handler: main.handler
            http:
              path: [/pets, \"/pets/{id}\"]
              streaming: true
          home:
            runtime: python3
            handler: main.handler
            http: { path: /api, methods: ANY }
        ",
        "
        app shop
        api nodejs index.handler . 128 30000 100 -
          http /api/* GET,POST auth=Key cors=https://example.com credentials=true headers=x-trace max_age=Some(600)
        home python3 main.handler . 128 30000 100 -
          http /api ANY auth=None
        pets python3 main.handler . 128 30000 100 -
          http /pets,/pets/{id} ANY auth=None streaming
        ",
    );
}

#[test]
fn overlapping_routes_are_refused_naming_both() {
    check(
        "
        app: shop
        functions:
          a:
            runtime: python3
            handler: main.handler
            http: { path: \"/users/{id}\", methods: [GET] }
          b:
            runtime: python3
            handler: main.handler
            http:
              path: \"/users/{name}\"
        ",
        "
        stratus.yaml:11: functions.b.http.path: routes /users/{id} (GET) of function a and /users/{name} (any method) of function b overlap: both match the same requests; change one of them
          hint: give each route a distinct path or distinct methods
        ",
    );
}

#[test]
fn bad_http_settings_are_each_reported() {
    check(
        "
        app: shop
        functions:
          a:
            runtime: python3
            handler: main.handler
            http:
              path: api/
              methods: [GET, FETCH]
              auth: token
              cors:
                origins: [\"*\", example.com]
                credentials: true
          b:
            runtime: python3
            handler: main.handler
            http: { methods: [GET] }
        ",
        r#"
        stratus.yaml:7: functions.a.http.path: route "api/": must start with /
          hint: a route such as `/hello`, `/users/{id}` or `/api/*`, or a list of them
        stratus.yaml:8: functions.a.http.methods: unknown HTTP method "FETCH"
          hint: a list of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, or `ANY`
        stratus.yaml:9: functions.a.http.auth: unknown auth mode "token"
          hint: `none` (anyone) or `key` (callers present an app key from `stratus keys create`)
        stratus.yaml:11: functions.a.http.cors.origins: "example.com" is not an origin
          hint: a list of origins such as `https://example.com`, or `*` for any
        stratus.yaml:12: functions.a.http.cors.credentials: browsers refuse credentials with the origin `*`
          hint: list the origins that may send credentials, or set `credentials: false`
        stratus.yaml:16: functions.b.http.path: `http:` needs at least one route
          hint: add `path: /api/*` (or a list of paths) under `http:`
        "#,
    );
}

#[test]
fn unknown_http_key_gets_a_suggestion() {
    check(
        "
        app: shop
        functions:
          a:
            runtime: python3
            handler: main.handler
            http:
              paths: /x
        ",
        "
        stratus.yaml:7: functions.a.http.paths: unknown key `paths`
          hint: did you mean `path`?
        ",
    );
}

#[test]
fn services_with_defaults_and_settings() {
    check(
        r#"
        app: shop
        services:
          web:
            code: ./web
            command: ["python3", "-m", "gunicorn", "-b", "0.0.0.0:$PORT", "app:app"]
            http: { path: /* }
            readiness: { path: /healthz, timeout: 20s }
            concurrency: 50
            min_instances: 1
            max_instances: 4
            idle_timeout: 2m
            memory: 256
            queue_depth: 10
            drain_grace: 5s
            access_log: false
            env: { MODE: prod }
          scf:
            code: ./scf
            http: { path: /scf/*, methods: [GET] }
          sh:
            command: node server.js
            http: { path: /sh }
        "#,
        r#"
        app shop
        service scf code=scf command=None port=None http=/scf/* GET ready=None/30 concurrency=100 instances=0..10 idle=300 memory=512 queue=1000 drain=30 access_log=true env={}
        service sh code=. command=Some(Shell("node server.js")) port=None http=/sh ANY ready=None/30 concurrency=100 instances=0..10 idle=300 memory=512 queue=1000 drain=30 access_log=true env={}
        service web code=web command=Some(Exec(["python3", "-m", "gunicorn", "-b", "0.0.0.0:$PORT", "app:app"])) port=None http=/* ANY ready=Some("/healthz")/20 concurrency=50 instances=1..4 idle=120 memory=256 queue=10 drain=5 access_log=false env={"MODE": "prod"}
        "#,
    );
}

#[test]
fn unknown_service_key_gets_a_suggestion() {
    check(
        "
        app: shop
        functions:
          web:
            runtime: python3
            handler: main.handler
        services:
          web:
            command: []
            port: 0
            readiness: { path: healthz }
            concurrency: 0
            min_instances: 3
            max_instances: 2
            drain_grace: soon
            env: { PORT: 1 }
          api:
            http: { path: /* }
            portt: 1
        ",
        "
        stratus.yaml:18: services.api.portt: unknown key `portt`
          hint: did you mean `port`?
        ",
    );
}

#[test]
fn service_values_are_checked() {
    check(
        r#"
        app: shop
        functions:
          web:
            runtime: python3
            handler: main.handler
            http: { path: /api/* }
        services:
          web:
            command: []
            port: 0
            readiness: { path: healthz }
            concurrency: 0
            min_instances: 3
            max_instances: 2
            drain_grace: soon
            env: { PORT: 1 }
          site:
            command: node server.js
            http: { path: "/api/*" }
        "#,
        r#"
        stratus.yaml:8: services.web: web is both a function and a service
          hint: functions and services share one set of names; rename one
        stratus.yaml:9: services.web.command: the command is empty
          hint: name a program and its arguments, e.g. `command: ["node", "server.js"]`
        stratus.yaml:10: services.web.port: port 0 is not a port
          hint: leave `port` out to have the platform choose one and pass it as $PORT
        stratus.yaml:11: services.web.readiness.path: "healthz" is not a path
          hint: a path starts with `/`, e.g. `path: /healthz`
        stratus.yaml:12: services.web.concurrency: concurrency 0 is out of range
          hint: requests in flight per instance, from 1 to 10000
        stratus.yaml:13: services.web.min_instances: min_instances 3 is more than max_instances 2
          hint: a whole number of instances kept warm, at most max_instances
        stratus.yaml:15: services.web.drain_grace: invalid duration "soon": expected number at 0
          hint: for example `30s`, `5m` or `1h`
        stratus.yaml:16: services.web.env.PORT: PORT is set by the platform
          hint: set `port:` on the service instead
        stratus.yaml:19: services.site.http.path: routes /api/* (any method) of function web and /api/* (any method) of service site overlap: both match the same requests; change one of them
          hint: give each route a distinct path or distinct methods
        "#,
    );
}

#[test]
fn event_settings_are_checked() {
    check(
        "
        app: shop
        functions:
          a:
            runtime: python3
            handler: main.handler
            retries: 11
            max_event_age: 10s
          b:
            runtime: python3
            handler: main.handler
            retries: 0
            max_event_age: 2h
            retires: 1
        ",
        "
        stratus.yaml:13: functions.b.retires: unknown key `retires`
          hint: did you mean `retries`?
        ",
    );
    check(
        "
        app: shop
        functions:
          a:
            runtime: python3
            handler: main.handler
            retries: 11
            max_event_age: 10s
        ",
        "
        stratus.yaml:6: functions.a.retries: retries 11 is out of range
          hint: further attempts after a failed one, from 0 to 10
        stratus.yaml:7: functions.a.max_event_age: 10s is out of range
          hint: give a duration from 1m to 6h
        ",
    );
}

#[test]
fn destinations_name_other_functions() {
    check(
        "
        app: shop
        functions:
          orders:
            runtime: python3
            handler: main.handler
            on_success: notfy
            on_failure: orders
          notify:
            runtime: python3
            handler: main.handler
        ",
        "
        stratus.yaml:6: functions.orders.on_success: there is no function or queue \"notfy\" in this app
          hint: did you mean `notify`?
        stratus.yaml:7: functions.orders.on_failure: function orders cannot be its own destination
          hint: a destination is another function of the app; chaining a function to itself would never end
        ",
    );
}

#[test]
fn triggers_and_queues_with_defaults_and_settings() {
    check(
        "
        app: shop
        functions:
          nightly:
            runtime: python3
            handler: jobs.nightly
            events:
              - schedule: \"0 3 * * *\"
                timezone: Asia/Shanghai
                catch_up: once
              - schedule: rate(5 minutes)
          orders:
            runtime: python3
            handler: main.handler
            on_failure: failed
            events:
              - queue: orders
                batch_size: 25
                batch_window: 2s
              - cloudevents:
                  type: [com.example.order.*, com.example.refund]
        queues:
          orders: { visibility_timeout: 1m }
          failed:
        ",
        "
        app shop
        nightly python3 jobs.nightly . 128 30000 100 -
          event Schedule(ScheduleTrigger { expression: \"0 3 * * *\", timezone: \"Asia/Shanghai\", catch_up: Once, format: CloudEvents })
          event Schedule(ScheduleTrigger { expression: \"rate(5 minutes)\", timezone: \"UTC\", catch_up: Skip, format: CloudEvents })
        orders python3 main.handler . 128 30000 100 -
          event Queue(QueueTrigger { queue: \"orders\", batch_size: 25, batch_window: 2s, format: CloudEvents })
          event CloudEvents(CloudEventsTrigger { types: [\"com.example.order.*\", \"com.example.refund\"], sources: [] })
          on_failure failed
        queue failed visibility=30s retention=345600s
        queue orders visibility=60s retention=345600s
        ",
    );
}

#[test]
fn schedule_triggers_are_checked() {
    check(
        "
        app: shop
        functions:
          a:
            runtime: python3
            handler: main.handler
            events:
              - schedule: \"@daily\"
              - shedule: \"@daily\"
        ",
        "
        stratus.yaml:8: functions.a.events.1.shedule: unknown key `shedule`
          hint: did you mean `schedule`?
        ",
    );
    check(
        "
        app: shop
        functions:
          a:
            runtime: python3
            handler: main.handler
            events:
              - schedule: 5m
              - schedule: \"0 3 * * *\"
                timezone: Mars/Olympus
              - schedule: \"61 * * * *\"
                catch_up: always
              - schedule: \"@daily\"
                batch_size: 3
              - {}
              - { schedule: \"@daily\", queue: q }
        ",
        "
        stratus.yaml:7: functions.a.events.0.schedule: \"5m\" has 1 fields; a cron expression has five: minute hour day-of-month month day-of-week, such as \"0 3 * * *\" (03:00 every day); or seven, with seconds first and the year last (Tencent SCF's form); or AWS's cron(minute hour day-of-month month day-of-week year); or write rate(5 minutes)
          hint: five cron fields such as `\"0 3 * * *\"`, or `rate(5 minutes)`
        stratus.yaml:9: functions.a.events.1.timezone: unknown time zone \"Mars/Olympus\"
          hint: an IANA time zone such as `Asia/Shanghai` or `UTC` (the default)
        stratus.yaml:10: functions.a.events.2.schedule: minute field \"61\": 61 is outside 0-59
          hint: five cron fields such as `\"0 3 * * *\"`, or `rate(5 minutes)`
        stratus.yaml:11: functions.a.events.2.catch_up: unknown catch-up policy \"always\"
          hint: `skip` (the default: missed slots do not run) or `once` (the latest runs once)
        stratus.yaml:13: functions.a.events.3.batch_size: `batch_size` does not apply to a schedule trigger
          hint: `batch_size` is a setting of `queue` triggers; remove it
        stratus.yaml:14: functions.a.events.4: this trigger names no source
          hint: give each entry of `events:` one of `schedule:`, `queue:`, `cloudevents:`, `logs:`, `storage:` or `database:`; list several entries for several sources
        stratus.yaml:15: functions.a.events.5: this trigger names schedule and queue sources
          hint: give each entry of `events:` one of `schedule:`, `queue:`, `cloudevents:`, `logs:`, `storage:` or `database:`; list several entries for several sources
        ",
    );
}

#[test]
fn queue_triggers_are_checked() {
    check(
        "
        app: shop
        functions:
          a:
            runtime: python3
            handler: main.handler
            timeout: 2m
            events:
              - queue: orders
          b:
            runtime: python3
            handler: main.handler
            on_success: order
            events:
              - queue: ordres
              - queue: orders
        queues:
          orders: {}
          Bad_Name: { retention: 30d }
          other:
        ",
        "
        stratus.yaml:12: functions.b.on_success: there is no function or queue \"order\" in this app
          hint: did you mean `orders`?
        stratus.yaml:14: functions.b.events.0.queue: there is no queue \"ordres\" in this app
          hint: did you mean `orders`?
        stratus.yaml:15: functions.b.events.1.queue: queue orders already has a consumer, function a
          hint: a queue has one consumer; declare a queue for each function that should see the messages
        stratus.yaml:17: queues.orders.visibility_timeout: the visibility timeout 30s is shorter than the timeout 2m of its consumer, function a
          hint: a batch would be delivered again while it is still being handled; raise `visibility_timeout` or lower the function's `timeout`
        stratus.yaml:18: queues.Bad_Name: invalid queue name \"Bad_Name\"
          hint: use lowercase letters, digits and '-', starting with a letter, at most 40 characters
        stratus.yaml:18: queues.Bad_Name.retention: 30d is out of range
          hint: give a duration from 1m to 14days
        ",
    );
    check(
        "
        app: shop
        functions:
          a:
            runtime: python3
            handler: main.handler
            events:
              - queue: orders
                batch_size: 0
                batch_window: 10m
        queues:
          orders: {}
        ",
        "
        stratus.yaml:8: functions.a.events.0.batch_size: batch_size 0 is out of range
          hint: a whole number of messages from 1 to 100 (default 10)
        stratus.yaml:9: functions.a.events.0.batch_window: 10m is out of range
          hint: give a duration from 0s to 5m
        ",
    );
}

#[test]
fn log_triggers_and_alerts_are_checked() {
    check(
        "
        app: shop
        functions:
          a:
            runtime: python3
            handler: main.handler
            events:
              - logs: { pattern: ERROR, from: [b] }
          b:
            runtime: python3
            handler: main.handler
            events:
              - logs: { pattern: ERROR, from: [b, c] }
          c:
            runtime: python3
            handler: main.handler
            events:
              - logs: { pattern: ERROR }
                batch_size: 500
        alerts:
          slow:
            metric: p99_duration
            function: a
            above: 250
            actions:
              - invoke: a
              - queue: none
        ",
        "
        stratus.yaml:12: functions.b.events.0.logs.from: b would receive its own lines
          hint: name the other functions and services whose lines it reads
        stratus.yaml:12: functions.b.events.0.logs.from: the app has no function or service \"c\"
          hint: its others: a
        stratus.yaml:18: functions.c.events.0.batch_size: batch_size 500 is out of range
          hint: a whole number of messages from 1 to 100 (default 10)
        stratus.yaml:26: alerts.slow.actions.1: the app declares no queue \"none\"
          hint: name one of its `queues:`
        ",
    );
}

#[test]
fn network_allowlists() {
    let app = stratus_manifest::parse(
        "stratus.yaml",
        "app: hello
functions:
  a:
    runtime: python3
    handler: m.h
    network: { outbound: [\"API.example.com.:443\", \"10.0.0.1:5432\", \"[2001:db8::1]:80\", \"*.s3.example.com:443\", \"10.0.0.1:5432\"] }
  b:
    runtime: python3
    handler: m.h
    network: { loopback: true }
services:
  web:
    command: [./server]
    network:
      outbound: [\"db.internal:5432\"]
      loopback: true
",
    )
    .unwrap();
    let dest = |host: &str, port| stratus_manifest::Destination {
        host: host.into(),
        port,
    };
    assert_eq!(
        app.functions["a"].network,
        stratus_manifest::Network::Limited(stratus_manifest::Egress {
            to: Some(vec![
                dest("*.s3.example.com", 443),
                dest("10.0.0.1", 5432),
                dest("2001:db8::1", 80),
                dest("api.example.com", 443),
            ]),
            loopback: false,
        })
    );
    assert_eq!(
        app.functions["b"].network,
        stratus_manifest::Network::Limited(stratus_manifest::Egress {
            to: None,
            loopback: true,
        })
    );
    assert_eq!(
        app.services["web"].network,
        stratus_manifest::Network::Limited(stratus_manifest::Egress {
            to: Some(vec![dest("db.internal", 5432)]),
            loopback: true,
        })
    );
    check(
        "
        app: hello
        functions:
          greet:
            runtime: python3
            handler: main.handler
            network: { outbound: [\"example.com\", \"example.com:0\", \"2001:db8::1:80\", \"exa mple.com:80\"] }
        services:
          web:
            command: [./server]
            network: none
        ",
        "
        stratus.yaml:6: functions.greet.network.outbound: \"example.com\": no port: add `:PORT`
          hint: `HOST:PORT`: an IP address (`[::1]:80` for IPv6), a DNS name, or `*.example.com`, and a port, e.g. `api.example.com:443`
        stratus.yaml:6: functions.greet.network.outbound: \"example.com:0\": \"0\" is not a port between 1 and 65535
          hint: `HOST:PORT`: an IP address (`[::1]:80` for IPv6), a DNS name, or `*.example.com`, and a port, e.g. `api.example.com:443`
        stratus.yaml:6: functions.greet.network.outbound: \"2001:db8::1:80\": an IPv6 address goes in brackets, e.g. `[2001:db8::1]:443`
          hint: `HOST:PORT`: an IP address (`[::1]:80` for IPv6), a DNS name, or `*.example.com`, and a port, e.g. `api.example.com:443`
        stratus.yaml:6: functions.greet.network.outbound: \"exa mple.com:80\": \"exa mple.com\" is not an IP address or a DNS name
          hint: `HOST:PORT`: an IP address (`[::1]:80` for IPv6), a DNS name, or `*.example.com`, and a port, e.g. `api.example.com:443`
        stratus.yaml:10: services.web.network: a service cannot have `network: none`: the gateway reaches it over the host's loopback
          hint: leave it out, or narrow where it may connect: `network: { outbound: [HOST:PORT, ...] }`
        ",
    );
}

#[test]
fn build_commands_are_checked() {
    check(
        "
        app: native
        functions:
          a:
            runtime: provided
            code: ./bin
            build: { command: make, output: [bootstrap] }
          b:
            runtime: provided
            code: ./bin
            build: { command: make all, output: bootstrap }
          c:
            runtime: provided
            code: ./other
            build: { output: [x, ../up] }
          d:
            runtime: nodejs
            handler: index.handler
            code: ./other
        ",
        r#"
        stratus.yaml:6: functions.a.build: code directory "bin" is built differently by functions.b
          hint: a code directory is built once: give them the same `build:`, or each its own directory
        stratus.yaml:14: functions.c.build.command: the build has no command
          hint: name the command that builds the code, e.g. `command: make` or `command: go build -o bootstrap .`
        stratus.yaml:14: functions.c.build.output: "../up" is not a path inside the code directory
          hint: give paths relative to the code directory, without `..` (e.g. `target/release/app`)
        "#,
    );
}

#[test]
fn bucket_names_and_settings_are_checked() {
    check(
        "
        app: a-rather-long-app-name-for-its-buckets
        functions:
          f:
            runtime: python3
            handler: main.handler
        buckets:
          uploads-of-every-day-and-night: {}
          media: { name: Bad_Name }
          docs: { cors: { origins: [\"app.example.com\"] } }
          big: { max_object_size: 6TiB }
        ",
        r#"
        stratus.yaml:7: buckets.uploads-of-every-day-and-night.name: "a-rather-long-app-name-for-its-buckets-uploads-of-every-day-and-night" is 69 characters; a bucket name has 3 to 63
          hint: the S3 name is APP-BUCKET unless `name:` gives one; give a shorter `buckets.uploads-of-every-day-and-night.name`
        stratus.yaml:8: buckets.media.name: "Bad_Name" has characters other than lower-case letters, digits, `.` and `-`
          hint: S3 bucket names are 3 to 63 lower-case letters, digits, `.` and `-`
        stratus.yaml:9: buckets.docs.cors.origins: "app.example.com" is not an origin
          hint: a list of origins such as `https://example.com`, or `*` for any
        stratus.yaml:10: buckets.big.max_object_size: out of range
          hint: give a size from 1 byte to 5TiB, such as `100MiB` or `5GiB`
        "#,
    );
}

#[test]
fn a_storage_trigger_names_a_bucket_of_the_app() {
    check(
        "
        app: pics
        buckets:
          uploads: {}
        functions:
          thumb:
            runtime: python3
            handler: main.handler
            events:
              - storage: { bucket: upload, on: created }
        ",
        r#"
        stratus.yaml:9: functions.thumb.events.0.storage.bucket: there is no bucket "upload" in this app
          hint: did you mean `uploads`?
        "#,
    );
    check(
        "
        app: pics
        buckets:
          uploads: {}
        functions:
          thumb:
            runtime: python3
            handler: main.handler
            events:
              - storage: { bucket: uploads, on: [created, moved] }
        ",
        r#"
        stratus.yaml:9: functions.thumb.events.0.storage.on: unknown change "moved"
          hint: objects are `created` (put, copied or uploaded in parts) or `deleted`
        "#,
    );
}

#[test]
fn collections_check_their_indexes_and_rules() {
    check(
        "
        app: todo
        functions:
          f:
            runtime: python3
            handler: main.handler
        collections:
          todos:
            indexes:
              - { fields: [owner, created_at] }
              - { fields: [owner, created_at] }
              - { fields: [tags, owner], multi: true }
              - { fields: [\"$where\"] }
            rules:
              read: \"auth.uid == doc.owner &&\"
              write: \"user.id == doc.owner\"
          9lives: {}
        ",
        r#"
        stratus.yaml:10: collections.todos.indexes.1: this index is declared twice
          hint: remove one of them
        stratus.yaml:11: collections.todos.indexes.2.multi: a multi index has one field, an array
          hint: give `fields: [tags]` with `multi: true`, or drop `multi`
        stratus.yaml:12: collections.todos.indexes.3.fields: field path "$where": names starting with `$` are reserved
          hint: name fields by their dotted paths, such as `address.city`
        stratus.yaml:14: collections.todos.rules.read: rule "auth.uid == doc.owner &&": column 25: expected an expression, found the end of the rule
          hint: rules are expressions such as `auth != null && auth.uid == doc.owner`; the README's "Security rules" section lists what they may use
        stratus.yaml:15: collections.todos.rules.write: rule "user.id == doc.owner": column 1: unknown name `user`; this rule can use auth, doc, request
          hint: rules are expressions such as `auth != null && auth.uid == doc.owner`; the README's "Security rules" section lists what they may use
        stratus.yaml:16: collections.9lives: "9lives" is not a collection name: start with a letter, then use letters, digits, `_` and `-`
          hint: rename the collection, such as `todos` or `user_profiles`
        "#,
    );
}

#[test]
fn a_database_trigger_names_a_collection_of_the_app() {
    check(
        "
        app: todo
        collections:
          todos: {}
        functions:
          count:
            runtime: python3
            handler: main.handler
            events:
              - database: { collection: todo, on: [created, renamed] }
        ",
        r#"
        stratus.yaml:9: functions.count.events.0.database.on: unknown change "renamed"
          hint: documents are `created`, `updated` or `deleted`
        "#,
    );
    check(
        "
        app: todo
        collections:
          todos: {}
        functions:
          count:
            runtime: python3
            handler: main.handler
            events:
              - database: { collection: todo }
        ",
        r#"
        stratus.yaml:9: functions.count.events.0.database.collection: there is no collection "todo" in this app
          hint: did you mean `todos`?
        "#,
    );
}

#[test]
fn routes_may_not_use_the_platform_s_own_paths() {
    check(
        "
        app: site
        functions:
          page:
            runtime: python3
            handler: main.handler
            http: { path: [/, /_stratus/sdk.js] }
        ",
        r#"
        stratus.yaml:6: functions.page.http.path: /_stratus/sdk.js is under /_stratus/, which the platform serves on every app's host (its client SDK and API)
          hint: choose a path outside /_stratus/
        "#,
    );
}
