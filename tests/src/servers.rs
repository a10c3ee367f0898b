//! Real servers on free loopback ports, each stopped (by pid) when its guard drops.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::env::{free_port, wait_for, wait_port};

/// A child process stopped with SIGTERM (then SIGKILL) on drop.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command) -> Proc {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        Proc {
            child,
            name: name.into(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub struct Nginx {
    pub port: u16,
    _proc: Proc,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// nginx on 127.0.0.1 and [::1] with `locations` (nginx `location` blocks) plus a default
    /// `location / { return 200 "hello\n"; }`.
    pub fn start(locations: &str) -> Nginx {
        let port = free_port();
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().display();
        let conf = format!(
            "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  server {{\n    listen 127.0.0.1:{port};\n    listen [::1]:{port};\n    {locations}\n    location / {{ return 200 \"hello\\n\"; }}\n  }}\n}}\n"
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, conf).expect("write nginx.conf");
        let proc = Proc::spawn(
            "nginx",
            Command::new("nginx")
                .arg("-c")
                .arg(&path)
                .arg("-p")
                .arg(dir.path()),
        );
        wait_port(port);
        Nginx {
            port,
            _proc: proc,
            _dir: dir,
        }
    }

    /// The master's pid (workers are its children).
    pub fn pid(&self) -> u32 {
        self._proc.pid()
    }
}

pub struct Redis {
    pub port: u16,
    pub socket: PathBuf,
    _proc: Proc,
    _dir: tempfile::TempDir,
}

impl Redis {
    pub fn start() -> Redis {
        let port = free_port();
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("redis.sock");
        let proc = Proc::spawn(
            "redis-server",
            Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--unixsocket")
                .arg(&socket)
                .arg("--dir")
                .arg(dir.path())
                .stdout(Stdio::null()),
        );
        wait_port(port);
        Redis {
            port,
            socket,
            _proc: proc,
            _dir: dir,
        }
    }
}

fn user_ids(name: &str) -> (u32, u32) {
    let c = std::ffi::CString::new(name).expect("user name");
    let pw = unsafe { libc::getpwnam(c.as_ptr()) };
    assert!(
        !pw.is_null(),
        "user {name} missing (is postgresql installed?)"
    );
    unsafe { ((*pw).pw_uid, (*pw).pw_gid) }
}

fn pg_bin(tool: &str) -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("postgresql not installed")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    versions.sort();
    versions
        .last()
        .expect("no postgresql version")
        .join("bin")
        .join(tool)
}

pub struct Postgres {
    pub port: u16,
    pub socket_dir: PathBuf,
    _proc: Proc,
    _dir: tempfile::TempDir,
}

impl Postgres {
    /// A fresh cluster with trust auth, owned by the `postgres` user, database `app`.
    pub fn start() -> Postgres {
        let port = free_port();
        let dir = tempfile::Builder::new()
            .prefix("tw-pg")
            .tempdir()
            .expect("tempdir");
        let (uid, gid) = user_ids("postgres");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).expect("mkdir");
        let chown = |p: &Path| {
            let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).expect("path");
            unsafe { libc::chown(c.as_ptr(), uid, gid) };
        };
        chown(dir.path());
        chown(&data);
        let st = Command::new(pg_bin("initdb"))
            .args(["-A", "trust", "-U", "postgres", "-D"])
            .arg(&data)
            .uid(uid)
            .gid(gid)
            .stdout(Stdio::null())
            .status()
            .expect("initdb");
        assert!(st.success(), "initdb failed");
        let proc = Proc::spawn(
            "postgres",
            Command::new(pg_bin("postgres"))
                .arg("-D")
                .arg(&data)
                .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
                .arg("-k")
                .arg(dir.path())
                .args(["-c", "ssl=off", "-c", "fsync=off"])
                .uid(uid)
                .gid(gid)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        wait_port(port);
        let pg = Postgres {
            port,
            socket_dir: dir.path().to_path_buf(),
            _proc: proc,
            _dir: dir,
        };
        wait_for("postgres ready", Duration::from_secs(30), || {
            pg.psql("postgres", "SELECT 1").is_ok()
        });
        pg.psql("postgres", "CREATE DATABASE app")
            .expect("create db");
        pg
    }

    pub fn psql(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .args(["-d", db, "-Atc", sql])
            .env("PGSSLMODE", "disable")
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

pub struct MariaDb {
    pub port: u16,
    pub socket: PathBuf,
    _proc: Proc,
    _dir: tempfile::TempDir,
}

impl MariaDb {
    pub fn start() -> MariaDb {
        let port = free_port();
        let dir = tempfile::Builder::new()
            .prefix("tw-maria")
            .tempdir()
            .expect("tempdir");
        let data = dir.path().join("data");
        let st = Command::new("mariadb-install-db")
            .args(["--user=root", "--auth-root-authentication-method=normal"])
            .arg(format!("--datadir={}", data.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("mariadb-install-db");
        assert!(st.success(), "mariadb-install-db failed");
        let socket = dir.path().join("mysqld.sock");
        let proc = Proc::spawn(
            "mariadbd",
            Command::new("mariadbd")
                .arg("--no-defaults")
                .arg(format!("--datadir={}", data.display()))
                .arg(format!("--socket={}", socket.display()))
                .arg(format!("--port={port}"))
                .args(["--bind-address=127.0.0.1", "--user=root", "--skip-ssl"])
                .arg(format!("--pid-file={}/mariadb.pid", dir.path().display()))
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        wait_port(port);
        MariaDb {
            port,
            socket,
            _proc: proc,
            _dir: dir,
        }
    }
}
