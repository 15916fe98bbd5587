#!/usr/bin/env python3
"""Memory of event streams that never read (issue 11's bound, measured).

Starts a private `commandpost serve` on 127.0.0.1 in a temporary directory,
declares an incident, posts NOTES notes of the largest size allowed, opens
STREAMS event streams (`GET /api/incidents/INC-1/events`) whose clients
never read (4 KiB receive buffers), posts MORE further notes so every stream
has live events to push, and prints the server's resident memory (VmRSS and
the peak, VmHWM) at each step, then after the streams were dropped.

    bench/stalled_streams.py [--bin target/release/commandpost]
                             [--streams 1000] [--notes 200] [--more 200]

It sends traffic to loopback only, to the server it started, and stops by
itself. It asserts nothing: it reports.
"""

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

NOTE_CHARS = 4000  # commandpost_shared::limits::NOTE_CHARS


def memory(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024
    return fields


def report(label, pid):
    fields = memory(pid)
    print(f"{label:<58} RSS {fields['VmRSS']:8.1f} MiB   peak {fields['VmHWM']:8.1f} MiB", flush=True)


def call(base, token, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", default="target/release/commandpost")
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--notes", type=int, default=200)
    parser.add_argument("--more", type=int, default=200)
    args = parser.parse_args()

    data = tempfile.mkdtemp(prefix="commandpost-stalled-")
    server = subprocess.Popen(
        [args.bin, "serve", "--listen", "127.0.0.1:0", "--data", data,
         "--commands-per-minute", "0", "--max-connections", str(args.streams + 100),
         "--max-connections-per-token", str(args.streams + 100)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        base = None
        for line in server.stdout:
            match = re.search(r"Listening on:\s+(http://\S+)", line)
            if match:
                base = match.group(1)
                break
        if base is None:
            sys.exit("the server did not start")
        token = subprocess.run(
            [args.bin, "token", "--data", data, "--role", "admin", "--name", "Bench", "--ttl", "2h"],
            check=True, capture_output=True, text=True).stdout.strip()
        host, port = base.removeprefix("http://").split(":")
        call(base, token, "POST", "/api/incidents", {"title": "Stalled streams"})
        report("started, one incident", server.pid)
        note = "n" * NOTE_CHARS
        for _ in range(args.notes):
            call(base, token, "POST", "/api/incidents/INC-1/commands/post_note", {"text": note})
        report(f"after {args.notes} notes of {NOTE_CHARS} characters", server.pid)

        streams = []
        for _ in range(args.streams):
            stream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            stream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            stream.connect((host, int(port)))
            stream.sendall(
                f"GET /api/incidents/INC-1/events?token={token} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            streams.append(stream)
        time.sleep(2)
        report(f"{args.streams} streams open, never reading (backlog)", server.pid)
        for _ in range(args.more):
            call(base, token, "POST", "/api/incidents/INC-1/commands/post_note", {"text": note})
        time.sleep(2)
        report(f"after {args.more} more notes pushed to them", server.pid)
        for stream in streams:
            stream.close()
        time.sleep(3)
        report("streams closed", server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
