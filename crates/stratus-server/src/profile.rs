//! `stratus profile APP/FN`: samples a function's running instances for
//! some seconds with the profiler of its language: py-spy for Python and
//! perf for `provided` when the node has them, and V8's own CPU profiler,
//! which the Node.js runtime starts and stops when asked, for Node.js. The samples become folded
//! stacks (`frame;frame;frame COUNT`), a flame graph (SVG) and the top
//! frames by their own and their total share of the samples.
//!
//! The profilers run on the host, against the instances' host process
//! ids; they read the processes' memory (py-spy) or the kernel's samples
//! (perf) without stopping them. A frozen (idle) instance yields no
//! samples: profile a function while it works.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path as FsPath, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use stratus_manifest::Runtime;

use crate::AppState;
use crate::api::ApiError;

/// Seconds sampled unless asked, and at most.
const DEFAULT_SECONDS: u64 = 10;
const MAX_SECONDS: u64 = 300;
/// Samples a second per process.
const RATE: u32 = 100;
/// Frames listed at most.
const TOP: usize = 20;

#[derive(Debug, Deserialize)]
pub(crate) struct ProfileParams {
    seconds: Option<u64>,
}

/// Folded stacks: the frames from the outermost, and how many samples.
type Folded = HashMap<String, u64>;

/// `POST /v1/apps/{app}/functions/{function}/profile?seconds=N`.
pub(crate) async fn profile(
    State(state): State<Arc<AppState>>,
    Path((app, function)): Path<(String, String)>,
    Query(params): Query<ProfileParams>,
) -> Result<Response, ApiError> {
    let seconds = params.seconds.unwrap_or(DEFAULT_SECONDS);
    if !(1..=MAX_SECONDS).contains(&seconds) {
        return Err(ApiError::bad_request(
            "invalid_seconds",
            format!("profile for 1 to {MAX_SECONDS} seconds"),
        ));
    }
    let Some(pool) = state.scheduler.pool(&app, &function) else {
        return Err(crate::api::invoke_error(
            stratus_scheduler::InvokeError::NoSuchFunction { app, function },
        ));
    };
    let runtime = pool.config.spec.runtime;
    let instances = pool.running_pids();
    drop(pool);
    if instances.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "no_instances",
            format!(
                "no instance of {app}/{function} runs now: invoke it while profiling (or keep one with min_instances)"
            ),
        ));
    }
    let scratch = Scratch::new()?;
    let (profiler, folded) = match runtime {
        Runtime::Python3 => ("py-spy", py_spy(&instances, seconds, scratch.path()).await?),
        Runtime::Provided => ("perf", perf(&instances, seconds, scratch.path()).await?),
        Runtime::Nodejs => {
            let _only = Profiling::only(&app, &function)?;
            ("v8", v8(&instances, seconds).await?)
        }
    };
    let samples: u64 = folded.values().sum();
    let top = top_frames(&folded, TOP);
    let svg = flame_graph(
        &folded,
        &format!("{app}/{function}: {samples} samples over {seconds} s ({profiler})"),
    );
    let mut stacks: Vec<(&String, &u64)> = folded.iter().collect();
    stacks.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    Ok(Json(json!({
        "app": app,
        "function": function,
        "profiler": profiler,
        "seconds": seconds,
        "instances": instances.iter().map(|(id, _)| id).collect::<Vec<_>>(),
        "samples": samples,
        "top": top,
        "folded": stacks.iter().map(|(s, n)| format!("{s} {n}")).collect::<Vec<_>>().join("\n"),
        "svg": svg,
    }))
    .into_response())
}

/// What a profiler could not do, for the caller to read.
fn failed(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "profile_failed", message)
}

/// A directory for the profilers' output, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Scratch, ApiError> {
        let dir =
            std::env::temp_dir().join(format!("stratus-profile-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir(&dir)
            .map_err(|err| failed(format!("cannot make {}: {err}", dir.display())))?;
        Ok(Scratch(dir))
    }

    fn path(&self) -> &FsPath {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A program on the server's PATH.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| FsPath::new(dir).join(name))
        .find(|path| path.is_file())
}

/// An instance's processes: every process in its pid namespace when it
/// has one of its own (a process made from a template is forked into the
/// namespace by the launcher, beside the instance's first process rather
/// than under it), or else `pid` and every process under it.
fn family(pid: u32) -> Vec<u32> {
    let namespace = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/pid")).ok();
    let theirs = namespace(&pid.to_string());
    if theirs.is_some() && theirs != namespace("self") {
        let mut members: Vec<u32> = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
            .filter(|p| namespace(&p.to_string()) == theirs)
            .collect();
        members.sort_unstable();
        return members;
    }
    descendants(pid)
}

/// `pid` and every process under it.
fn descendants(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", all[i]));
        for task in tasks.into_iter().flatten().flatten() {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            all.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
        i += 1;
    }
    all.dedup();
    all
}

fn command_name(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

fn missing(profiler: &str, install: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        "no_profiler",
        format!(
            "{profiler} is not installed on this node; install it ({install}) and profile again"
        ),
    )
}

/// py-spy on each instance's Python processes, at once.
async fn py_spy(
    instances: &[(String, u32)],
    seconds: u64,
    dir: &FsPath,
) -> Result<Folded, ApiError> {
    let py_spy =
        on_path("py-spy").ok_or_else(|| missing("py-spy", "python3 -m pip install py-spy"))?;
    let pids: Vec<u32> = instances
        .iter()
        .flat_map(|(_, pid)| {
            let family = family(*pid);
            let pythons: Vec<u32> = family
                .iter()
                .copied()
                .filter(|p| command_name(*p).starts_with("python"))
                .collect();
            if pythons.is_empty() { family } else { pythons }
        })
        .collect();
    let mut runs = Vec::new();
    for pid in pids {
        let out = dir.join(format!("{pid}.folded"));
        let child = tokio::process::Command::new(&py_spy)
            .args(["record", "--nonblocking", "--format", "raw"])
            .arg("--rate")
            .arg(RATE.to_string())
            .arg("--duration")
            .arg(seconds.to_string())
            .arg("--pid")
            .arg(pid.to_string())
            .arg("--output")
            .arg(&out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|err| failed(format!("cannot run {}: {err}", py_spy.display())))?;
        runs.push((pid, out, child));
    }
    let mut folded = Folded::new();
    let mut errors = Vec::new();
    for (pid, out, child) in runs {
        let done =
            tokio::time::timeout(Duration::from_secs(seconds + 30), child.wait_with_output())
                .await
                .map_err(|_| failed("py-spy did not finish".to_owned()))?
                .map_err(|err| failed(format!("py-spy: {err}")))?;
        match std::fs::read_to_string(&out) {
            Ok(text) => fold_into(&mut folded, &text),
            Err(_) => errors.push(format!(
                "pid {pid}: {}",
                String::from_utf8_lossy(&done.stderr).trim()
            )),
        }
    }
    if folded.is_empty() {
        return Err(failed(format!(
            "py-spy took no samples: {}",
            if errors.is_empty() {
                "the instances were idle (frozen); profile while the function works".to_owned()
            } else {
                errors.join("; ")
            }
        )));
    }
    Ok(folded)
}

/// perf on every instance's processes, then its samples folded.
async fn perf(instances: &[(String, u32)], seconds: u64, dir: &FsPath) -> Result<Folded, ApiError> {
    let perf =
        on_path("perf").ok_or_else(|| missing("perf", "Debian: apt-get install linux-perf"))?;
    let pids: Vec<String> = instances
        .iter()
        .flat_map(|(_, pid)| family(*pid))
        .map(|p| p.to_string())
        .collect();
    let data = dir.join("perf.data");
    let record = tokio::process::Command::new(&perf)
        .args(["record", "-g", "-F"])
        .arg(RATE.to_string())
        .arg("-o")
        .arg(&data)
        .arg("-p")
        .arg(pids.join(","))
        .arg("--")
        .arg("sleep")
        .arg(seconds.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|err| failed(format!("cannot run {}: {err}", perf.display())))?;
    if !data.exists() {
        return Err(failed(format!(
            "perf record failed: {}",
            String::from_utf8_lossy(&record.stderr).trim()
        )));
    }
    let script = tokio::process::Command::new(&perf)
        .args(["script", "-F", "comm,ip,sym", "-i"])
        .arg(&data)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .await
        .map_err(|err| failed(format!("cannot run perf script: {err}")))?;
    let folded = fold_perf_script(&String::from_utf8_lossy(&script.stdout));
    if folded.is_empty() {
        return Err(failed(
            "perf took no samples: the instances were idle (frozen); profile while the function works"
                .to_owned(),
        ));
    }
    Ok(folded)
}

/// How long a Node.js runtime has, once asked to stop, to write its
/// profile: it reads the request between events.
const V8_ANSWER: Duration = Duration::from_secs(10);

/// The functions whose Node.js instances are being profiled: a runtime
/// profiles once at a time, so a second profile of one function waits
/// its turn rather than stopping the first one's.
static PROFILING: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());

struct Profiling((String, String));

impl Profiling {
    fn only(app: &str, function: &str) -> Result<Profiling, ApiError> {
        let key = (app.to_owned(), function.to_owned());
        let mut running = PROFILING.lock().unwrap_or_else(|e| e.into_inner());
        if running.contains(&key) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "profile_running",
                format!("{app}/{function} is being profiled already; profile again when it ends"),
            ));
        }
        running.push(key.clone());
        Ok(Profiling(key))
    }
}

impl Drop for Profiling {
    fn drop(&mut self) {
        let mut running = PROFILING.lock().unwrap_or_else(|e| e.into_inner());
        running.retain(|key| *key != self.0);
    }
}

/// V8's CPU profiler in each instance's Node.js runtime: SIGUSR2 starts
/// it, another SIGUSR2 stops it, and the runtime writes its samples as
/// folded stacks to `/tmp/stratus-profile-PID.folded` in its own view of
/// the file system (PID as the runtime sees itself), read here through
/// `/proc/PID/root`.
async fn v8(instances: &[(String, u32)], seconds: u64) -> Result<Folded, ApiError> {
    let runtimes: Vec<(u32, PathBuf)> = instances
        .iter()
        .flat_map(|(_, pid)| family(*pid))
        .filter(|pid| node_runtime(*pid))
        .filter_map(|pid| Some((pid, v8_output(pid)?)))
        .collect();
    if runtimes.is_empty() {
        return Err(failed(
            "no Node.js runtime of the function's instances is ready to profile (still starting?); profile again",
        ));
    }
    let mut asked = Vec::new();
    for (pid, out) in runtimes {
        let _ = std::fs::remove_file(&out);
        if stratus_sandbox::send_sigusr2(pid).is_ok() {
            asked.push((pid, out));
        }
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    for (pid, _) in &asked {
        let _ = stratus_sandbox::send_sigusr2(*pid);
    }
    let deadline = tokio::time::Instant::now() + V8_ANSWER;
    let mut folded = Folded::new();
    let mut silent = Vec::new();
    for (pid, out) in asked {
        loop {
            if let Ok(text) = std::fs::read_to_string(&out) {
                let _ = std::fs::remove_file(&out);
                fold_into(&mut folded, &text);
                break;
            }
            if tokio::time::Instant::now() >= deadline
                || !FsPath::new(&format!("/proc/{pid}")).exists()
            {
                silent.push(pid);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    if folded.is_empty() {
        return Err(failed(if silent.is_empty() {
            "V8 took no samples: the instances were idle (frozen); profile while the function works"
                .to_owned()
        } else {
            format!(
                "the Node.js runtimes (pids {silent:?}) wrote no profile within {} s of the request to stop: a handler busy in one synchronous call reads the request only when it returns; profile again",
                V8_ANSWER.as_secs()
            )
        }));
    }
    Ok(folded)
}

/// Whether `pid` is a Node.js runtime that handles the profile request
/// (SIGUSR2 among the signals it catches): a process still starting, or
/// one of the function's own, would die of it.
fn node_runtime(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let caught = status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .unwrap_or(0);
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let bootstrap = cmdline
        .split(|b| *b == 0)
        .nth(1)
        .is_some_and(|arg| arg.ends_with(b"bootstrap.js"));
    bootstrap && caught & (1 << (SIGUSR2 - 1)) != 0
}

/// SIGUSR2 on Linux.
const SIGUSR2: u32 = 12;

/// Where the runtime `pid` writes its profile, seen from here.
fn v8_output(pid: u32) -> Option<PathBuf> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let own = status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_whitespace()
        .last()?
        .to_owned();
    Some(PathBuf::from(format!(
        "/proc/{pid}/root/tmp/stratus-profile-{own}.folded"
    )))
}

/// Adds folded lines (`a;b;c 12`) to `folded`.
fn fold_into(folded: &mut Folded, text: &str) {
    for line in text.lines() {
        if let Some((stack, count)) = line.rsplit_once(' ')
            && let Ok(count) = count.trim().parse::<u64>()
        {
            *folded.entry(stack.to_owned()).or_default() += count;
        }
    }
}

/// `perf script` output (a header line per sample, then its frames from
/// the innermost, then a blank line) as folded stacks, the command first.
fn fold_perf_script(text: &str) -> Folded {
    let mut folded = Folded::new();
    let mut command: Option<String> = None;
    let mut frames: Vec<String> = Vec::new();
    let mut flush = |command: &mut Option<String>, frames: &mut Vec<String>| {
        if let Some(command) = command.take() {
            let mut stack = vec![command];
            stack.extend(frames.drain(..).rev());
            *folded.entry(stack.join(";")).or_default() += 1;
        }
        frames.clear();
    };
    for line in text.lines() {
        if line.trim().is_empty() {
            flush(&mut command, &mut frames);
        } else if line.starts_with(char::is_whitespace) {
            // `    55d4c3 hot_loop+0x1c (/var/task/bootstrap)`
            let mut parts = line.split_whitespace();
            let _ip = parts.next();
            let symbol = parts.next().unwrap_or("[unknown]");
            let symbol = symbol.split("+0x").next().unwrap_or(symbol);
            frames.push(symbol.replace(';', ":"));
        } else {
            flush(&mut command, &mut frames);
            command = Some(line.split_whitespace().next().unwrap_or("?").to_owned());
        }
    }
    flush(&mut command, &mut frames);
    folded
}

/// The frames with the most samples of their own (where the time went),
/// with their share of the samples on their own and below them.
fn top_frames(folded: &Folded, n: usize) -> Vec<serde_json::Value> {
    let total: u64 = folded.values().sum();
    let mut own: HashMap<&str, u64> = HashMap::new();
    let mut under: HashMap<&str, u64> = HashMap::new();
    for (stack, count) in folded {
        let frames: Vec<&str> = stack.split(';').collect();
        if let Some(leaf) = frames.last() {
            *own.entry(leaf).or_default() += count;
        }
        let mut seen: Vec<&str> = Vec::with_capacity(frames.len());
        for frame in frames {
            if !seen.contains(&frame) {
                seen.push(frame);
                *under.entry(frame).or_default() += count;
            }
        }
    }
    let mut frames: Vec<(&str, u64, u64)> = under
        .iter()
        .map(|(frame, total)| (*frame, own.get(frame).copied().unwrap_or(0), *total))
        .collect();
    frames.sort_by(|a, b| b.1.cmp(&a.1).then(b.2.cmp(&a.2)).then(a.0.cmp(b.0)));
    let pct = |n: u64| (n as f64 * 1000.0 / total.max(1) as f64).round() / 10.0;
    frames
        .into_iter()
        .take(n)
        .map(|(frame, own, total)| {
            json!({ "frame": frame, "self_pct": pct(own), "total_pct": pct(total), "samples": own })
        })
        .collect()
}

/// A flame graph: each frame a box as wide as its share of the samples,
/// on top of its caller; hover for the frame and its share.
fn flame_graph(folded: &Folded, title: &str) -> String {
    #[derive(Default)]
    struct Node {
        value: u64,
        children: BTreeMap<String, Node>,
    }
    let mut root = Node::default();
    for (stack, count) in folded {
        root.value += count;
        let mut node = &mut root;
        for frame in stack.split(';') {
            node = node.children.entry(frame.to_owned()).or_default();
            node.value += count;
        }
    }
    fn depth(node: &Node) -> usize {
        1 + node.children.values().map(depth).max().unwrap_or(0)
    }
    const WIDTH: f64 = 1200.0;
    const ROW: f64 = 16.0;
    let rows = depth(&root);
    let height = rows as f64 * ROW + 40.0;
    let total = root.value.max(1) as f64;
    let mut out = format!(
        r##"<?xml version="1.0" standalone="no"?>
<svg version="1.1" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" xmlns="http://www.w3.org/2000/svg">
<rect x="0" y="0" width="100%" height="100%" fill="#fbfbf6"/>
<text x="{x}" y="20" font-size="15" font-family="Verdana" text-anchor="middle">{title}</text>
"##,
        x = WIDTH / 2.0,
        title = escape(title)
    );
    fn draw(
        out: &mut String,
        name: &str,
        node: &Node,
        x: f64,
        level: usize,
        total: f64,
        height: f64,
    ) {
        let width = node.value as f64 / total * WIDTH;
        if width < 0.1 {
            return;
        }
        let y = height - (level as f64 + 1.0) * ROW - 4.0;
        let hash = name.bytes().fold(2166136261u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(16777619)
        });
        let (r, g, b) = (205 + hash % 50, 80 + (hash >> 8) % 140, (hash >> 16) % 60);
        let share = node.value as f64 / total * 100.0;
        let label: String = if width > 24.0 {
            let fits = ((width - 6.0) / 7.0) as usize;
            if name.chars().count() > fits {
                let cut: String = name.chars().take(fits.saturating_sub(2)).collect();
                format!("{cut}..")
            } else {
                name.to_owned()
            }
        } else {
            String::new()
        };
        out.push_str(&format!(
            "<g><title>{} ({} samples, {share:.1}%)</title><rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{h}\" fill=\"rgb({r},{g},{b})\" rx=\"2\"/><text x=\"{tx:.1}\" y=\"{ty:.1}\" font-size=\"12\" font-family=\"Verdana\">{}</text></g>\n",
            escape(name),
            node.value,
            escape(&label),
            w = (width - 0.5).max(0.1),
            h = ROW - 1.0,
            tx = x + 3.0,
            ty = y + ROW - 4.0,
        ));
        let mut offset = x;
        for (child, below) in &node.children {
            draw(out, child, below, offset, level + 1, total, height);
            offset += below.value as f64 / total * WIDTH;
        }
    }
    draw(&mut out, "all", &root, 0.0, 0, total, height);
    out.push_str("</svg>\n");
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folded(lines: &str) -> Folded {
        let mut folded = Folded::new();
        fold_into(&mut folded, lines);
        folded
    }

    #[test]
    fn top_frames_rank_by_their_own_samples() {
        let f =
            folded("main;handler;spin 80\nmain;handler;io 15\nmain;idle 5\nmain;handler;spin 20\n");
        let top = top_frames(&f, 3);
        assert_eq!(top[0]["frame"], "spin");
        assert_eq!(top[0]["self_pct"], 83.3);
        assert_eq!(top[0]["total_pct"], 83.3);
        assert_eq!(top[1]["frame"], "io");
        let main = top_frames(&f, 10)
            .into_iter()
            .find(|t| t["frame"] == "main")
            .unwrap();
        assert_eq!(
            (main["self_pct"].clone(), main["total_pct"].clone()),
            (json!(0.0), json!(100.0))
        );
    }

    #[test]
    fn perf_script_samples_fold_outermost_first() {
        let text = "bootstrap 12 [001] 1.0: cpu-clock:\n\t    55d4c3 spin+0x1c (/var/task/bootstrap)\n\t    55d4d0 main+0x40 (/var/task/bootstrap)\n\t    7f0000 __libc_start_main+0x80 (/lib/libc.so.6)\n\nbootstrap 12 [001] 1.1: cpu-clock:\n\t    55d4c3 spin+0x1c (/var/task/bootstrap)\n\t    55d4d0 main+0x40 (/var/task/bootstrap)\n\t    7f0000 __libc_start_main+0x80 (/lib/libc.so.6)\n";
        let f = fold_perf_script(text);
        assert_eq!(f.get("bootstrap;__libc_start_main;main;spin"), Some(&2));
    }

    #[test]
    fn the_flame_graph_has_a_box_per_frame_and_escapes_names() {
        let f = folded("main;handler (app.py:3);a<b> 3\nmain;other 1\n");
        let svg = flame_graph(&f, "t & t");
        assert!(svg.starts_with("<?xml"));
        assert!(
            svg.contains("<title>a&lt;b&gt; (3 samples, 75.0%)</title>"),
            "{svg}"
        );
        assert!(svg.contains("<title>all (4 samples, 100.0%)</title>"));
        assert!(svg.contains("t &amp; t"));
        assert_eq!(svg.matches("<rect ").count(), 1 + 5);
        assert!(svg.trim_end().ends_with("</svg>"));
    }
}
