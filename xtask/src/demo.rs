//! `cargo xtask demo`: a demo chain (curl -> frontend -> backend -> PostgreSQL + Redis, the
//! uninstrumented apps from tests/apps) traced by the agent, printing the trace trees.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::bench::{Guard, free_port, output, start_postgres_db, start_redis, wait_port};
use crate::{build_agent, root};

fn app(args: &[String], service: &str) -> Result<Guard> {
    let mut child = Command::new("/usr/bin/python3")
        .arg(root().join("tests/apps/chain.py"))
        .args(args)
        .env("OTEL_SERVICE_NAME", service)
        .stdout(Stdio::piped())
        .spawn()
        .context("starting a demo app")?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
    if line.trim() != "ready" {
        bail!("{service} did not start");
    }
    Ok(Guard(child))
}

pub fn run(requests: u32) -> Result<()> {
    let bin = build_agent(true)?;
    let dir = root().join("target").join("demo");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let (pg_port, _pg) = start_postgres_db(&dir, "app")?;
    output(Command::new("psql").args([
        "-h",
        "127.0.0.1",
        "-p",
        &pg_port.to_string(),
        "-U",
        "postgres",
        "-d",
        "app",
        "-c",
        "CREATE TABLE orders (id int PRIMARY KEY, item text); INSERT INTO orders VALUES (1, 'book'), (2, 'pen')",
    ]))?;
    let (redis_port, _redis) = start_redis(&dir)?;
    output(Command::new("redis-cli").args(["-p", &redis_port.to_string(), "SET", "stock:1", "7"]))?;
    let backend_port = free_port()?;
    let backend = app(
        &[
            "backend".into(),
            backend_port.to_string(),
            pg_port.to_string(),
            redis_port.to_string(),
        ],
        "backend",
    )?;
    let frontend_port = free_port()?;
    let frontend = app(
        &[
            "frontend".into(),
            frontend_port.to_string(),
            backend_port.to_string(),
        ],
        "frontend",
    )?;
    wait_port(frontend_port)?;
    let log = dir.join("agent.log");
    let agent = Guard(
        Command::new(&bin)
            .args(["run", "--exporter", "console", "--pid"])
            .arg(frontend.0.id().to_string())
            .arg("--pid")
            .arg(backend.0.id().to_string())
            .stderr(Stdio::from(std::fs::File::create(&log)?))
            .spawn()?,
    );
    for _ in 0..100 {
        if std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("tracing via")
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for i in 0..requests {
        let id = 1 + i % 2;
        let url = format!("http://127.0.0.1:{frontend_port}/checkout?id={id}");
        eprintln!("demo: curl {url}");
        output(Command::new("curl").args(["-s", &url]))?;
    }
    std::thread::sleep(Duration::from_secs(3));
    drop(agent);
    Ok(())
}
