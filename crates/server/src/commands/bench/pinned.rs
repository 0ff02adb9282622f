//! The processes of `pincapi bench` and where they run: each server under test (the floor, a
//! gateway) is a child process of its own, pinned to one core, and the bench process (load
//! generator and Pinterest sandbox) is pinned to another, so the CPU a server spends per event
//! is read from its own counters (`/proc/PID/stat`) and nothing else shares its core.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::Context;
use rustix::thread::{CpuSet, sched_getaffinity, sched_setaffinity};

/// Which core the servers under test get and which the bench itself; `None` when the machine
/// has one core (nothing is pinned then, and the report says so).
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub server_cpu: Option<usize>,
    pub load_cpu: Option<usize>,
}

impl Layout {
    /// Servers on `server` (default the first core this process may run on), the bench on
    /// `load` (default the last). The cores come from this process's affinity mask, not from
    /// 0..N: a container or a CI runner may allow only some of the machine's cores.
    pub fn new(server: Option<usize>, load: Option<usize>) -> Layout {
        let allowed: Vec<usize> = match sched_getaffinity(None) {
            Ok(set) => (0..CpuSet::MAX_CPU).filter(|&c| set.is_set(c)).collect(),
            Err(_) => Vec::new(),
        };
        let (Some(&first), Some(&last)) = (allowed.first(), allowed.last()) else {
            return Layout {
                server_cpu: server,
                load_cpu: load,
            };
        };
        if allowed.len() < 2 && server.is_none() && load.is_none() {
            return Layout {
                server_cpu: None,
                load_cpu: None,
            };
        }
        Layout {
            server_cpu: Some(server.unwrap_or(first)),
            load_cpu: Some(load.unwrap_or(last)),
        }
    }

    pub fn describe(&self) -> String {
        match (self.server_cpu, self.load_cpu) {
            (Some(s), Some(l)) => format!(
                "servers under test pinned to CPU {s}; load generator and sandbox pinned to CPU {l}"
            ),
            _ => "one core: nothing pinned".to_owned(),
        }
    }

    /// Pins every thread of this process to the load core (threads started later inherit it
    /// from the thread that starts them).
    pub fn pin_bench(&self) -> anyhow::Result<()> {
        let Some(cpu) = self.load_cpu else {
            return Ok(());
        };
        let set = cpu_set(cpu);
        for task in std::fs::read_dir("/proc/self/task").context("reading /proc/self/task")? {
            let tid = task?
                .file_name()
                .to_str()
                .and_then(|t| t.parse::<i32>().ok())
                .and_then(rustix::thread::Pid::from_raw);
            if let Some(tid) = tid {
                sched_setaffinity(Some(tid), &set)
                    .with_context(|| format!("pinning the bench to CPU {cpu}"))?;
            }
        }
        Ok(())
    }
}

fn cpu_set(cpu: usize) -> CpuSet {
    let mut set = CpuSet::new();
    set.set(cpu);
    set
}

/// A server under test: a child process that printed the address it listens on.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
}

impl Server {
    /// Starts `pincapi ARGS` on the server core and waits for its `listening on http://ADDR`
    /// line. The child is started from a thread pinned to that core, so the child and every
    /// thread it starts inherit the pin.
    pub fn start(layout: &Layout, args: &[&str], log: &Path) -> anyhow::Result<Server> {
        let exe = std::env::current_exe().context("finding the pincapi binary")?;
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let log = std::fs::File::create(log).context("creating the server's log")?;
        let cpu = layout.server_cpu;
        let spawned = std::thread::spawn(move || -> anyhow::Result<Child> {
            if let Some(cpu) = cpu {
                sched_setaffinity(None, &cpu_set(cpu))
                    .with_context(|| format!("pinning a server to CPU {cpu}"))?;
            }
            Command::new(exe)
                .args(&args)
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(log)
                .spawn()
                .context("starting a server under test")
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the thread starting a server panicked"))??;
        let mut child = spawned;
        let stdout = child.stdout.take().context("the server's stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let addr = line
            .trim()
            .rsplit_once("http://")
            .and_then(|(_, a)| a.parse().ok());
        match addr {
            Some(addr) => Ok(Server { child, addr }),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                anyhow::bail!("a server under test did not start (it printed {line:?})")
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// utime + stime of the server so far, seconds.
    pub fn cpu_secs(&self) -> f64 {
        std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
            .map_or(0.0, |s| super::sustained::stat_cpu_secs(&s))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU of every PostgreSQL process on this machine so far, seconds: their own utime + stime,
/// and what the postmaster collected from backends that ended (cutime + cstime). The
/// database's CPU per event is the difference over a phase divided by its events.
pub fn postgres_cpu_secs() -> f64 {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    procs
        .filter_map(Result::ok)
        .filter(|p| {
            p.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .filter_map(|p| std::fs::read_to_string(p.path().join("stat")).ok())
        .filter(|stat| {
            stat.split_once('(')
                .is_some_and(|(_, rest)| rest.starts_with("postgres)"))
        })
        .map(|stat| super::sustained::stat_cpu_secs(&stat) + children_cpu_secs(&stat))
        .sum()
}

/// cutime + cstime of the children a process waited for (fields 16 and 17), seconds.
fn children_cpu_secs(stat: &str) -> f64 {
    super::sustained::stat_secs(stat, 16, 17)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_cpu_is_read_after_a_command_name_with_spaces() {
        let stat = "42 (post gres) S 1 2 3 4 5 6 7 8 9 10 120 30 250 50 20 0";
        assert_eq!(children_cpu_secs(stat), 3.0);
    }

    #[test]
    fn the_default_layout_uses_only_cores_this_process_may_run_on() {
        let allowed = sched_getaffinity(None).unwrap();
        let layout = Layout::new(None, None);
        for cpu in [layout.server_cpu, layout.load_cpu].into_iter().flatten() {
            assert!(allowed.is_set(cpu), "CPU {cpu} is not in the affinity mask");
        }
        if allowed.count() >= 2 {
            assert_ne!(layout.server_cpu, layout.load_cpu);
            assert!(layout.server_cpu.is_some());
        }
    }
}
