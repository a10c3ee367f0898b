//! A syscall-bound load for benchmarks: one thread, pinned to one CPU, drives a loopback TCP
//! connection to itself: client send, server recv, server send, client recv, repeated. Nothing
//! else runs in it, so its rate moves with what each socket syscall costs (the agent's hooks
//! and per-call work) and far less with the scheduler than a two-process load does.
//!
//! usage: pingpong PORT EXCHANGES
//! Prints `exchanges/s: N`, the best of 5 timed rounds of EXCHANGES each after one warm-up.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

const REQUEST: &[u8] = b"GET /ping HTTP/1.1\r\nHost: bench\r\n\r\n";
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

fn main() {
    if let Err(e) = run() {
        eprintln!("pingpong: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: pingpong PORT EXCHANGES";
    let port: u16 = args.get(1).and_then(|a| a.parse().ok()).ok_or(usage)?;
    let n: u64 = args.get(2).and_then(|a| a.parse().ok()).ok_or(usage)?;
    pin_to_last_cpu();
    let listener = TcpListener::bind(("127.0.0.1", port)).map_err(|e| format!("bind: {e}"))?;
    let mut client =
        TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    let (mut server, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
    for s in [&client, &server] {
        s.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
    }
    let mut buf = [0u8; 512];
    let mut best = f64::MAX;
    for round in 0..6 {
        let t = Instant::now();
        for _ in 0..n {
            client.write_all(REQUEST).map_err(|e| e.to_string())?;
            read_exactly(&mut server, &mut buf, REQUEST.len())?;
            server.write_all(RESPONSE).map_err(|e| e.to_string())?;
            read_exactly(&mut client, &mut buf, RESPONSE.len())?;
        }
        let secs = t.elapsed().as_secs_f64();
        if round > 0 {
            best = best.min(secs);
        }
    }
    println!("exchanges/s: {:.0}", n as f64 / best);
    Ok(())
}

fn read_exactly(s: &mut TcpStream, buf: &mut [u8], len: usize) -> Result<(), String> {
    let mut got = 0;
    while got < len {
        match s.read(&mut buf[got..len]) {
            Ok(0) => return Err("connection closed".into()),
            Ok(k) => got += k,
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}

/// The last CPU: away from CPU 0, where interrupts and most housekeeping land.
fn pin_to_last_cpu() {
    // SAFETY: plain libc calls on a zeroed cpu_set_t.
    unsafe {
        let cpus = libc::sysconf(libc::_SC_NPROCESSORS_ONLN).max(1) as usize;
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpus - 1, &mut set);
        // Unpinned is still a valid run, only noisier.
        let _ = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}
