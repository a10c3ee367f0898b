#!/usr/bin/env python3
"""Records a parser fixture with the agent itself: runs `tracewire capture --json` filtered to a
port while a real client talks to a real server, then keeps the client's view of every
connection (the fixture format the replay tests load).

usage: capture_fixture.py --port PORT --out FILE [--tracewire BIN] -- CLIENT COMMAND...
example: capture_fixture.py --port 8080 --out http1/keepalive.jsonl -- curl -s http://127.0.0.1:8080/a http://127.0.0.1:8080/b
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import time

ap = argparse.ArgumentParser()
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--out", required=True)
ap.add_argument("--role", default="client", help="whose view to keep: client or server")
ap.add_argument("--tracewire", default=os.path.join(os.path.dirname(__file__), "../../target/release/tracewire"))
ap.add_argument("cmd", nargs=argparse.REMAINDER)
a = ap.parse_args()
cmd = a.cmd[1:] if a.cmd and a.cmd[0] == "--" else a.cmd
if not cmd:
    sys.exit("no client command given")

cap = subprocess.Popen([a.tracewire, "capture", "--json", "--port", str(a.port)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
for line in cap.stderr:
    if "capturing via" in line:
        break
else:
    sys.exit("tracewire capture did not start")
subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
time.sleep(0.5)
cap.send_signal(signal.SIGINT)
out, _ = cap.communicate(timeout=30)
kept = 0
with open(a.out, "w") as f:
    for line in out.splitlines():
        ev = json.loads(line)
        if ev.get("kind") == "data" and ev.get("role") == a.role:
            f.write(line + "\n")
            kept += 1
print("wrote %d events to %s" % (kept, a.out))
