//! The overload manager's sampler: a few times a second it reads the process's resident
//! memory, sets the node's pressure level from the configured thresholds (shed kept-alive
//! connections, refuse buffered requests, stop accepting), keeps the budget for buffered
//! bodies and the connection cap in step with the configuration, and exports the counts.
//! The actions themselves are taken where they apply: the accept loop, each connection,
//! and every place that holds a body whole (through [`weir_core::overload`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use weir_config::OverloadConfig;
use weir_core::overload::{self, Overload, Pressure};

use crate::gateway::Gateway;

const EVERY: Duration = Duration::from_millis(100);
/// While pressure lasts, connections opened since the last signal are told to close too.
const SHED_AGAIN: Duration = Duration::from_secs(1);

/// What the process may use, read once at start: the tightest cgroup limit on its path
/// (v2 or v1), else the machine's memory.
#[derive(Clone, Copy, Debug)]
pub struct Machine {
    pub memory: u64,
    pub open_files: u64,
}

impl Machine {
    pub fn read() -> Self {
        let total = meminfo_total().unwrap_or(u64::MAX);
        Self {
            memory: cgroup_memory_limit().map_or(total, |c| c.min(total)),
            open_files: open_file_limit().unwrap_or(1024),
        }
    }

    /// Default connection cap: half of the open-file limit after a reserve for the store,
    /// queue and logs, since each client connection may need an upstream one.
    pub fn default_max_connections(&self) -> u64 {
        (self.open_files.saturating_sub(64) / 2).max(16)
    }
}

/// The limits a configuration sets on this machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub memory: u64,
    pub body_budget: u64,
    pub max_connections: u64,
    pub shed_at: u64,
    pub refuse_at: u64,
    pub stop_at: u64,
}

impl Limits {
    pub fn of(c: &OverloadConfig, m: Machine) -> Self {
        let memory = c.memory_limit.map_or(m.memory, |b| b.0);
        Self {
            memory,
            body_budget: c.buffered_bodies.of(memory),
            max_connections: c
                .max_connections
                .unwrap_or_else(|| m.default_max_connections()),
            shed_at: c.shed_keep_alive_at.of(memory),
            refuse_at: c.refuse_buffered_at.of(memory),
            stop_at: c.stop_accepting_at.of(memory),
        }
    }

    pub fn pressure(&self, resident: u64) -> Pressure {
        if resident >= self.stop_at {
            Pressure::StopAccepting
        } else if resident >= self.refuse_at {
            Pressure::RefuseBuffered
        } else if resident >= self.shed_at {
            Pressure::ShedKeepAlive
        } else {
            Pressure::Normal
        }
    }
}

/// Starts the sampler on the current runtime; it stops with `stop`. Connections watch the
/// returned receiver: each change asks kept-alive connections to close.
pub fn spawn(gateway: Arc<Gateway>, mut stop: watch::Receiver<bool>) -> watch::Receiver<u64> {
    let machine = Machine::read();
    let (shed_tx, shed_rx) = watch::channel(0u64);
    let apply = move || -> (Limits, Arc<Overload>) {
        let snap = gateway.snapshot();
        let limits = Limits::of(&snap.config.overload, machine);
        snap.overload
            .set_limits(limits.body_budget, limits.max_connections);
        (limits, Arc::clone(&snap.overload))
    };
    let (first, _) = apply();
    tracing::debug!(limits = ?first, "overload manager started");
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_shed: Option<tokio::time::Instant> = None;
        let mut was = Pressure::Normal;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            let (limits, node) = apply();
            let resident = resident_bytes().unwrap_or(0);
            let now = limits.pressure(resident);
            node.set_pressure(now);
            if now != was {
                tracing::warn!(
                    resident_mib = resident >> 20,
                    limit_mib = limits.memory >> 20,
                    pressure = ?now,
                    "memory pressure changed"
                );
                was = now;
            }
            if now >= Pressure::ShedKeepAlive && last_shed.is_none_or(|t| t.elapsed() >= SHED_AGAIN)
            {
                shed_tx.send_modify(|g| *g += 1);
                last_shed = Some(tokio::time::Instant::now());
            }
            weir_telemetry::metrics::overload(&weir_telemetry::metrics::OverloadReading {
                resident,
                limit: limits.memory,
                buffered: node.buffered(),
                connections: node.connections(),
                pressure: now as u8,
                actions: overload::Action::ALL.map(|a| (a.name(), node.counted(a))),
            });
        }
    });
    shed_rx
}

/// The process's resident memory (VmRSS).
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    kib_field(&status, "VmRSS:")
}

fn kib_field(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line[key.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

fn meminfo_total() -> Option<u64> {
    kib_field(&std::fs::read_to_string("/proc/meminfo").ok()?, "MemTotal:")
}

/// The soft limit on open files (`/proc/self/limits`).
fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The tightest memory limit of the cgroups on this process's path.
fn cgroup_memory_limit() -> Option<u64> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    cgroup_limit_in(&own, std::path::Path::new("/sys/fs/cgroup"))
}

/// From `/proc/self/cgroup`'s text and the cgroup mount: v2 (`0::/path`, `memory.max` at
/// each level up to the root) or v1 (the `memory` controller's `memory.limit_in_bytes`).
fn cgroup_limit_in(own: &str, root: &std::path::Path) -> Option<u64> {
    let read = |p: std::path::PathBuf| -> Option<u64> {
        let v = std::fs::read_to_string(p).ok()?;
        let v = v.trim();
        // v1 writes "no limit" as a number near 2^63.
        v.parse::<u64>().ok().filter(|&n| n < 1 << 60)
    };
    if let Some(path) = own.lines().find_map(|l| l.strip_prefix("0::")) {
        let mut dir = root.join(path.trim_start_matches('/'));
        let mut tightest: Option<u64> = None;
        loop {
            if let Some(n) = read(dir.join("memory.max")) {
                tightest = Some(tightest.map_or(n, |t| t.min(n)));
            }
            if dir == root || !dir.pop() {
                break;
            }
        }
        return tightest;
    }
    let v1 = own.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
        controllers
            .split(',')
            .any(|c| c == "memory")
            .then_some(path)
    })?;
    let base = root.join("memory");
    read(
        base.join(v1.trim_start_matches('/'))
            .join("memory.limit_in_bytes"),
    )
    .or_else(|| read(base.join("memory.limit_in_bytes")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_escalate_with_resident_memory() {
        let machine = Machine {
            memory: 1000 << 20,
            open_files: 20_000,
        };
        let l = Limits::of(&OverloadConfig::default(), machine);
        assert_eq!(l.body_budget, 250 << 20);
        assert_eq!(l.max_connections, 9968);
        assert_eq!(l.pressure(100 << 20), Pressure::Normal);
        assert_eq!(l.pressure(850 << 20), Pressure::ShedKeepAlive);
        assert_eq!(l.pressure(900 << 20), Pressure::RefuseBuffered);
        assert_eq!(l.pressure(960 << 20), Pressure::StopAccepting);
        let set = OverloadConfig {
            memory_limit: Some(weir_config::ByteSize(100 << 20)),
            buffered_bodies: weir_config::Share::Size(weir_config::ByteSize(1 << 20)),
            max_connections: Some(10),
            ..OverloadConfig::default()
        };
        let l = Limits::of(&set, machine);
        assert_eq!(
            (l.memory, l.body_budget, l.max_connections),
            (100 << 20, 1 << 20, 10)
        );
    }

    #[test]
    fn cgroup_limits_are_read_from_v2_paths_and_v1_controllers() {
        let root = std::env::temp_dir().join(format!("weir-cgroup-{}", std::process::id()));
        let leaf = root.join("system.slice/weir.service");
        std::fs::create_dir_all(&leaf).unwrap();
        std::fs::write(root.join("system.slice/memory.max"), "536870912\n").unwrap();
        std::fs::write(leaf.join("memory.max"), "max\n").unwrap();
        let v2 = "0::/system.slice/weir.service\n";
        assert_eq!(cgroup_limit_in(v2, &root), Some(512 << 20));
        std::fs::write(leaf.join("memory.max"), "268435456\n").unwrap();
        assert_eq!(cgroup_limit_in(v2, &root), Some(256 << 20));
        assert_eq!(cgroup_limit_in("0::/elsewhere\n", &root), None);

        let v1dir = root.join("memory/docker/abc");
        std::fs::create_dir_all(&v1dir).unwrap();
        std::fs::write(v1dir.join("memory.limit_in_bytes"), "1073741824\n").unwrap();
        let v1 = "12:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n";
        assert_eq!(cgroup_limit_in(v1, &root), Some(1 << 30));
        std::fs::write(v1dir.join("memory.limit_in_bytes"), "9223372036854771712\n").unwrap();
        assert_eq!(cgroup_limit_in(v1, &root), None);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn this_process_has_readings() {
        assert!(resident_bytes().unwrap() > 0);
        let m = Machine::read();
        assert!(m.memory > 16 << 20 && m.open_files > 0);
    }
}
