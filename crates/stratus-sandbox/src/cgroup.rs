//! Resource limits through cgroups, v1 or v2, as the host offers them:
//! memory (the function's `memory`, no swap beyond it), a pids limit, and
//! a CPU weight proportional to memory as Lambda does. Every instance gets
//! its own group under one group per launcher, nested in the server's own
//! groups so that the server's limits bound its instances too.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug)]
enum Backend {
    /// Per-controller hierarchies (v1), each `None` where unavailable.
    V1 {
        memory: Option<PathBuf>,
        pids: Option<PathBuf>,
        cpu: Option<PathBuf>,
    },
    /// The unified hierarchy (v2).
    V2 {
        base: PathBuf,
    },
    Off,
}

#[derive(Debug)]
pub(crate) struct Cgroups {
    backend: Backend,
    /// What is enforced, for start-up messages.
    pub summary: String,
    /// The launcher's cgroup v2 group, where the network guard attaches,
    /// when instances are to get a group in it. With v1 controllers it is
    /// a group of its own in the v2 hierarchy, where there is one.
    guard: Option<PathBuf>,
}

/// The groups of one instance.
#[derive(Debug)]
pub(crate) struct InstanceGroup {
    dirs: Vec<PathBuf>,
    /// The file that counts OOM kills, and the key of the count.
    oom: Option<PathBuf>,
    /// The groups that hold the memory limit and the CPU weight.
    memory: Option<PathBuf>,
    cpu: Option<PathBuf>,
    v2: bool,
    /// The cgroup id of the instance's v2 group, for the network guard.
    pub net_id: Option<u64>,
    /// The instance's v2 `cgroup.freeze`, where it has a v2 group.
    pub freezer: Option<PathBuf>,
}

impl Cgroups {
    /// Finds the hierarchies this process may create groups in.
    pub fn detect(launcher_pid: u32) -> Cgroups {
        let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let name = format!("stratus-{launcher_pid}");
        let v1 = |controller: &str| -> Option<PathBuf> {
            let mount = mounts.lines().find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() >= 4 && f[2] == "cgroup" && f[3].split(',').any(|o| o == controller))
                    .then(|| f[1].to_owned())
            })?;
            let path = own.lines().find_map(|l| {
                let mut parts = l.splitn(3, ':');
                let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
                controllers
                    .split(',')
                    .any(|c| c == controller)
                    .then(|| path.to_owned())
            })?;
            let base = Path::new(&mount)
                .join(path.trim_start_matches('/'))
                .join(&name);
            fs::create_dir_all(&base).ok()?;
            Some(base)
        };
        let (memory, pids, cpu) = (v1("memory"), v1("pids"), v1("cpu"));
        if memory.is_some() || pids.is_some() {
            let on: Vec<&str> = [("memory", &memory), ("pids", &pids), ("cpu", &cpu)]
                .iter()
                .filter(|(_, p)| p.is_some())
                .map(|(n, _)| *n)
                .collect();
            if let Some(memory) = &memory {
                // Children's usage counts against their parents.
                let _ = fs::write(memory.join("memory.use_hierarchy"), "1");
            }
            return Cgroups {
                summary: format!("cgroup v1: {}", on.join(", ")),
                backend: Backend::V1 { memory, pids, cpu },
                guard: v2_group(&mounts, &own, &name).ok(),
            };
        }
        match v2(&mounts, &own, &name) {
            Ok(base) => Cgroups {
                summary: "cgroup v2: memory, pids, cpu".to_owned(),
                guard: Some(base.clone()),
                backend: Backend::V2 { base },
            },
            Err(reason) => Cgroups {
                summary: format!("off ({reason})"),
                backend: Backend::Off,
                guard: v2_group(&mounts, &own, &name).ok(),
            },
        }
    }

    /// The launcher's cgroup v2 group, for the network guard and the
    /// freezer.
    pub fn guard_group(&self) -> Option<&Path> {
        self.guard.as_deref()
    }

    /// No limits, for the start-up probe.
    pub fn off() -> Cgroups {
        Cgroups {
            backend: Backend::Off,
            summary: "off".to_owned(),
            guard: None,
        }
    }

    /// Creates the groups of a new instance with its limits.
    pub fn create(
        &self,
        instance: &str,
        memory_mb: u32,
        pids_max: u32,
    ) -> io::Result<InstanceGroup> {
        let mut group = InstanceGroup {
            dirs: Vec::new(),
            oom: None,
            memory: None,
            cpu: None,
            v2: false,
            net_id: None,
            freezer: None,
        };
        match &self.backend {
            Backend::Off => {}
            Backend::V1 { memory, pids, cpu } => {
                if let Some(base) = memory {
                    let dir = group.make(base, instance)?;
                    group.oom = Some(dir.join("memory.oom_control"));
                    group.memory = Some(dir);
                }
                if let Some(base) = pids {
                    let dir = group.make(base, instance)?;
                    fs::write(dir.join("pids.max"), pids_max.to_string())?;
                }
                if let Some(base) = cpu {
                    group.cpu = Some(group.make(base, instance)?);
                }
            }
            Backend::V2 { base } => {
                let dir = group.make(base, instance)?;
                let _ = fs::write(dir.join("memory.swap.max"), "0");
                fs::write(dir.join("pids.max"), pids_max.to_string())?;
                group.oom = Some(dir.join("memory.events"));
                group.memory = Some(dir.clone());
                group.cpu = Some(dir);
                group.v2 = true;
            }
        }
        if let Some(base) = &self.guard {
            let dir = match &group.memory {
                Some(dir) if group.v2 => dir.clone(),
                _ => group.make(base, instance)?,
            };
            group.net_id = Some(crate::netguard::cgroup_id(&dir)?);
            group.freezer = Some(dir.join("cgroup.freeze"));
        }
        group.set_memory(memory_mb)?;
        Ok(group)
    }

    /// Removes the launcher's own groups; instances' groups must be gone.
    pub fn remove(&self) {
        let bases: Vec<&PathBuf> = match &self.backend {
            Backend::V1 { memory, pids, cpu } => {
                [memory, pids, cpu].into_iter().flatten().collect()
            }
            Backend::V2 { base } => vec![base],
            Backend::Off => Vec::new(),
        };
        let guard = self
            .guard
            .as_ref()
            .filter(|_| !matches!(self.backend, Backend::V2 { .. }));
        for base in bases.into_iter().chain(guard) {
            let _ = fs::remove_dir(base);
        }
    }
}

/// Creates the launcher's group in the v2 hierarchy, with no controllers.
fn v2_group(mounts: &str, own: &str, name: &str) -> Result<PathBuf, String> {
    let parent = v2_parent(mounts, own)?;
    let base = parent.join(name);
    fs::create_dir_all(&base).map_err(|e| format!("cannot create {}: {e}", base.display()))?;
    Ok(base)
}

/// This process's group in the v2 hierarchy.
fn v2_parent(mounts: &str, own: &str) -> Result<PathBuf, String> {
    let mount = mounts
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3 && f[2] == "cgroup2").then(|| f[1].to_owned())
        })
        .ok_or("no cgroup hierarchy is mounted")?;
    let path = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or("this process is in no cgroup v2 group")?;
    Ok(Path::new(&mount).join(path.trim_start_matches('/')))
}

fn v2(mounts: &str, own: &str, name: &str) -> Result<PathBuf, String> {
    let parent = v2_parent(mounts, own)?;
    let available = fs::read_to_string(parent.join("cgroup.controllers")).unwrap_or_default();
    for controller in ["memory", "pids"] {
        if !available.split_whitespace().any(|c| c == controller) {
            return Err(format!(
                "cgroup v2 has no {controller} controller for {}",
                parent.display()
            ));
        }
    }
    let base = parent.join(name);
    fs::create_dir_all(&base).map_err(|e| format!("cannot create {}: {e}", base.display()))?;
    // Controllers reach the launcher's group only if its parent hands them down.
    for dir in [&parent, &base] {
        fs::write(dir.join("cgroup.subtree_control"), "+memory +pids +cpu")
            .or_else(|_| fs::write(dir.join("cgroup.subtree_control"), "+memory +pids"))
            .map_err(|e| {
                format!(
                    "cannot enable the memory and pids controllers below {} ({e}); run stratus in a delegated cgroup",
                    dir.display()
                )
            })?;
    }
    Ok(base)
}

impl InstanceGroup {
    fn make(&mut self, base: &Path, instance: &str) -> io::Result<PathBuf> {
        let dir = base.join(instance);
        fs::create_dir(&dir)?;
        self.dirs.push(dir.clone());
        Ok(dir)
    }

    /// Sets the memory limit (no swap beyond it) and a CPU weight
    /// proportional to it.
    pub fn set_memory(&self, memory_mb: u32) -> io::Result<()> {
        let bytes = u64::from(memory_mb) * 1024 * 1024;
        let shares = memory_mb.max(2);
        if self.v2 {
            if let Some(dir) = &self.memory {
                fs::write(dir.join("memory.max"), bytes.to_string())?;
                let weight = (u64::from(shares) * 100 / 1024).clamp(1, 10_000);
                let _ = fs::write(dir.join("cpu.weight"), weight.to_string());
            }
            return Ok(());
        }
        if let Some(dir) = &self.memory {
            let limit = dir.join("memory.limit_in_bytes");
            let memsw = dir.join("memory.memsw.limit_in_bytes");
            let current: u64 = fs::read_to_string(&limit)?
                .trim()
                .parse()
                .unwrap_or(u64::MAX);
            // The memory+swap limit may never be below the memory limit:
            // raise it first when growing, lower it last when shrinking.
            let memsw = memsw.exists().then_some(memsw);
            if bytes > current
                && let Some(memsw) = &memsw
            {
                fs::write(memsw, bytes.to_string())?;
            }
            fs::write(&limit, bytes.to_string())?;
            if let Some(memsw) = &memsw {
                fs::write(memsw, bytes.to_string())?;
            }
        }
        if let Some(dir) = &self.cpu {
            fs::write(dir.join("cpu.shares"), shares.to_string())?;
        }
        Ok(())
    }

    /// The least CPU weight there is: a process made ahead of demand
    /// starts without taking CPU from instances at work. Activation sets
    /// the function's weight with its memory.
    pub fn set_idle(&self) {
        if let Some(dir) = &self.cpu {
            let (file, weight) = if self.v2 {
                ("cpu.weight", "1")
            } else {
                ("cpu.shares", "2")
            };
            let _ = fs::write(dir.join(file), weight);
        }
    }

    /// Moves `pid` into every group of the instance.
    pub fn add(&self, pid: i32) -> io::Result<()> {
        for dir in &self.dirs {
            fs::write(dir.join("cgroup.procs"), pid.to_string())?;
        }
        Ok(())
    }

    /// Whether the kernel killed something in the group for lack of memory.
    pub fn oom_killed(&self) -> bool {
        let Some(file) = &self.oom else { return false };
        fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.strip_prefix("oom_kill "))
            .any(|n| n.trim().parse::<u64>().unwrap_or(0) > 0)
    }

    /// Kills every process still in the groups, including any that left
    /// the instance's process group.
    pub fn kill_all(&self) {
        for dir in &self.dirs {
            let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                // SAFETY: kill(2) has no memory-safety preconditions.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }

    /// Removes the groups that are empty; true when none is left. Dying
    /// processes keep a group busy for a moment, so callers try again.
    pub fn remove(&mut self) -> bool {
        self.dirs.retain(|dir| match fs::remove_dir(dir) {
            Ok(()) => false,
            Err(err) => err.kind() != io::ErrorKind::NotFound,
        });
        self.dirs.is_empty()
    }
}
