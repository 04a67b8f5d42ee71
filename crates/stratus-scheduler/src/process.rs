//! What an instance's process is: program, arguments, the Lambda
//! environment, and under isolation the filesystem view it gets.
//!
//! Under namespaces a function sees the Lambda layout: its code at
//! `/var/task`, the runtime at `/var/runtime`, and the interpreter at its
//! host path; without isolation the same process runs on host paths.

use std::path::{Path, PathBuf};

use stratus_manifest::Runtime;
use stratus_sandbox::{Isolation, Mount, ProcessSpec};

use crate::pool::FunctionConfig;
use crate::scheduler::Settings;

const TASK_ROOT: &str = "/var/task";
const RUNTIME_DIR: &str = "/var/runtime";
const SYSTEM_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

pub(crate) fn spec(
    s: &Settings,
    isolation: Isolation,
    config: &FunctionConfig,
    runtime_api: &str,
    instance_id: &str,
) -> ProcessSpec {
    let function = &config.spec;
    let isolated = isolation == Isolation::Namespaces;
    let (bootstrap, interpreter) = match function.runtime {
        Runtime::Python3 => (Some(&s.runtimes.python_bootstrap), Some(&s.python)),
        Runtime::Nodejs => (Some(&s.runtimes.node_bootstrap), Some(&s.node)),
        Runtime::Provided => (None, None),
    };
    let host_runtime_dir = bootstrap.and_then(|b| b.parent()).map(Path::to_path_buf);
    let (task_root, runtime_dir) = if isolated {
        (
            PathBuf::from(TASK_ROOT),
            host_runtime_dir
                .as_ref()
                .map(|_| PathBuf::from(RUNTIME_DIR)),
        )
    } else {
        (config.code_dir.clone(), host_runtime_dir.clone())
    };
    let bootstrap_path = |b: &Path| match &runtime_dir {
        Some(dir) => dir.join(b.file_name().unwrap_or_default()),
        None => b.to_path_buf(),
    };
    let (program, args) = match (function.runtime, bootstrap, interpreter) {
        (Runtime::Python3, Some(b), Some(i)) => (
            i.executable.clone(),
            // -S: no site start-up hooks (.pth files), which can cost
            // tens of milliseconds; the bootstrap still puts site-packages
            // on sys.path.
            vec![
                "-u".to_owned(),
                "-S".to_owned(),
                bootstrap_path(b).display().to_string(),
            ],
        ),
        (Runtime::Nodejs, Some(b), Some(i)) => (
            i.executable.clone(),
            vec![bootstrap_path(b).display().to_string()],
        ),
        _ => (task_root.join("bootstrap"), Vec::new()),
    };

    let mut mounts = Vec::new();
    let mut path = if isolated {
        SYSTEM_PATH.to_owned()
    } else {
        s.host_path.clone()
    };
    if isolated {
        mounts.push(Mount {
            host: config.code_dir.clone(),
            sandbox: task_root.clone(),
        });
        if let (Some(host), Some(sandbox)) = (&host_runtime_dir, &runtime_dir) {
            mounts.push(Mount {
                host: host.clone(),
                sandbox: sandbox.clone(),
            });
        }
        // Every interpreter install outside the system directories, so that
        // custom runtimes can use them as well as the built-in ones.
        for prefix in [&s.python.prefix, &s.node.prefix].into_iter().flatten() {
            mounts.push(Mount {
                host: prefix.clone(),
                sandbox: prefix.clone(),
            });
        }
        for i in [&s.python, &s.node] {
            if let Some(dir) = i.executable.parent() {
                path = format!("{}:{path}", dir.display());
            }
        }
    }

    let mut env = s.base_env.clone();
    env.push(("PATH".to_owned(), path));
    let lambda = [
        ("AWS_LAMBDA_RUNTIME_API", runtime_api.to_owned()),
        ("_HANDLER", function.handler.clone()),
        ("LAMBDA_TASK_ROOT", task_root.display().to_string()),
        (
            "LAMBDA_RUNTIME_DIR",
            runtime_dir
                .as_ref()
                .unwrap_or(&task_root)
                .display()
                .to_string(),
        ),
        ("AWS_LAMBDA_FUNCTION_NAME", config.qualified_name()),
        ("AWS_LAMBDA_FUNCTION_VERSION", config.version.to_string()),
        (
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
            function.memory_mb.to_string(),
        ),
        (
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/stratus/{}/{}", config.app, function.name),
        ),
        ("AWS_LAMBDA_LOG_STREAM_NAME", instance_id.to_owned()),
        ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".to_owned()),
        ("AWS_EXECUTION_ENV", format!("stratus_{}", function.runtime)),
        ("AWS_REGION", s.region.clone()),
        ("AWS_DEFAULT_REGION", s.region.clone()),
    ];
    env.extend(lambda.into_iter().map(|(k, v)| (k.to_owned(), v)));
    env.extend(function.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    ProcessSpec {
        program,
        args,
        cwd: task_root,
        env,
        mounts,
        tmp_mb: s.tmp_mb,
        pids_max: s.pids_max,
        private_network: isolated && function.network == stratus_manifest::Network::None,
        memory_mb: function.memory_mb,
    }
}
