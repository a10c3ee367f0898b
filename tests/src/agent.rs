//! The agent under test, as a child process with its stdout collected in a file.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::env::agent_bin;

pub struct Agent {
    child: Child,
    pub stdout_path: PathBuf,
    _dir: tempfile::TempDir,
    stderr_lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Agent {
    /// Starts `tracewire <args>` and waits until its stderr says `ready_marker` (the programs are
    /// attached), so traffic generated afterwards is seen.
    pub fn start(args: &[&str], envs: &[(&str, &str)], ready_marker: &str) -> Agent {
        Agent::start_via(&[], args, envs, ready_marker)
    }

    /// As [`Agent::start`], through the command `via` that ends by exec'ing the agent path and
    /// arguments it is given after its own (so the pid is the agent's): e.g. a shell that
    /// changes the agent's view of the system first.
    pub fn start_via(
        via: &[&str],
        args: &[&str],
        envs: &[(&str, &str)],
        ready_marker: &str,
    ) -> Agent {
        let dir = tempfile::tempdir().expect("tempdir");
        let stdout_path = dir.path().join("stdout");
        let out = std::fs::File::create(&stdout_path).expect("stdout file");
        let mut cmd = agent_command(via);
        cmd.args(args)
            .stdout(Stdio::from(out))
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn tracewire");
        let stderr = child.stderr.take().expect("stderr");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let l2 = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[agent] {line}");
                if let Ok(mut v) = l2.lock() {
                    v.push(line);
                }
            }
        });
        let mut agent = Agent {
            child,
            stdout_path,
            _dir: dir,
            stderr_lines: lines,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if agent.stderr().iter().any(|l| l.contains(ready_marker)) {
                break;
            }
            if let Ok(Some(st)) = agent.child.try_wait() {
                panic!("tracewire exited early ({st}): {:?}", agent.stderr());
            }
            if Instant::now() > deadline {
                panic!("tracewire not ready: {:?}", agent.stderr());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        agent
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> Vec<String> {
        self.stderr_lines
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    /// SIGTERM, then wait for a clean exit (flushes); returns stdout.
    pub fn stop(mut self) -> String {
        self.terminate();
        self.stdout()
    }

    /// SIGTERM, then wait for a clean exit (flushes); does nothing once it exited.
    pub fn terminate(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// The agent's command, run through `via` when given: a command that ends by exec'ing the
/// agent path and arguments it is given after its own (see [`Agent::start_via`]).
pub fn agent_command(via: &[&str]) -> Command {
    match via.split_first() {
        Some((program, rest)) => {
            let mut c = Command::new(program);
            c.args(rest).arg(agent_bin());
            c
        }
        None => Command::new(agent_bin()),
    }
}

/// JSON lines of a capture, parsed.
pub fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Where `tracewire run --stats-file` writes its final counters: a fresh temporary file.
pub struct StatsFile {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl StatsFile {
    pub fn new() -> StatsFile {
        let dir = tempfile::tempdir().expect("tmp");
        StatsFile {
            path: dir.path().join("stats.json"),
            _dir: dir,
        }
    }

    /// The flag's value.
    pub fn arg(&self) -> &str {
        self.path.to_str().expect("utf-8 path")
    }

    /// The counters the stopped agent wrote.
    pub fn read(&self) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(&self.path).expect("stats file"))
            .expect("json")
    }
}

impl Default for StatsFile {
    fn default() -> Self {
        Self::new()
    }
}
