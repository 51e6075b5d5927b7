#!/usr/bin/env python3
"""Memory of `postern serve` while its policy scans messages of many tiny MIME parts.

For each gateway binary given (label=path), in turn and in one sitting:
  1. start `postern serve` from an empty data directory (delivery to its Maildir), import a
     policy with body conditions (so the policy reads content; its rule only tags, so every
     message is delivered, the scan cut or not), and let it settle: idle RSS;
  2. BURSTS times: send CONCURRENT messages of PARTS text parts at once (one smtplib
     connection each), wait until all are in the Maildir, wait SETTLE seconds: settled RSS;
     /proc/PID/status VmRSS is sampled every 20 ms throughout the bursts (peak), and VmHWM
     (the whole life of the process, start-up included: the master key's Argon2) at the end.
Prints one table row per gateway.

Usage: scripts/many-parts-memory.py before=/tmp/postern-old after=target/release/postern
       [--parts 100000] [--concurrent 16] [--bursts 4] [--settle 10] [--rounds 1]
"""

import argparse
import os
import shutil
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time

POLICY = """
[[rule]]
order = 10
name = "Tag newsletters"
conditions = [{ on = "body", keywords = ["unsubscribe"] }, { on = "body", builtin = ["card_number"], not = true }]
actions = [{ do = "tag_subject", tag = "[NEWS]" }]

[[rule]]
order = 1000
name = "Deliver everything else"
actions = [{ do = "pass" }]
"""


def message(parts: int) -> bytes:
    """A multipart/mixed message of `parts` tiny text/plain parts (about 85 bytes each, as in
    the report of issue 16: 100,000 parts make 8.5 MB)."""
    head = (
        "From: a@partner.example\r\nTo: b@corp.example\r\nSubject: many parts\r\n"
        "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
    )
    part = "--b\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\npart {:06} of a message of many\r\n"
    body = "".join(part.format(i) for i in range(parts))
    return (head + body + "--b--\r\n").encode()


def status(pid: int) -> dict:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":")
                out[key] = int(value.split()[0]) // 1024  # MiB
    return out


class Sampler(threading.Thread):
    """Keeps the highest VmRSS seen."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0, False

    def run(self):
        while not self.stop:
            try:
                self.peak = max(self.peak, status(self.pid)["VmRSS"])
            except (OSError, KeyError):
                return
            time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, deadline: float):
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    sys.exit(f"nothing listens on {port}")


def delivered(maildir: str) -> int:
    try:
        return len(os.listdir(os.path.join(maildir, "new")))
    except FileNotFoundError:
        return 0


def send(port: int, raw: bytes, errors: list):
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=600) as s:
            s.sendmail("a@partner.example", ["b@corp.example"], raw)
    except Exception as e:  # reported after the burst
        errors.append(repr(e))


def run(label: str, binary: str, raw: bytes, args) -> list:
    work = tempfile.mkdtemp(prefix="postern-parts.")
    smtp, bypass, web = free_port(), free_port(), free_port()
    config = os.path.join(work, "postern.toml")
    with open(config, "w") as f:
        f.write(
            f'data_dir = "{work}/data"\n[web]\nlisten = "127.0.0.1:{web}"\n'
            f'[smtp]\nlisten = "127.0.0.1:{smtp}"\nbypass_listen = "127.0.0.1:{bypass}"\n'
            'internal_domains = ["corp.example"]\n'
        )
    policy = os.path.join(work, "policy.toml")
    with open(policy, "w") as f:
        f.write(POLICY)
    log = open(os.path.join(work, "postern.log"), "w")
    proc = subprocess.Popen(
        [binary, "serve", "--config", config],
        stdout=log, stderr=log, env={**os.environ, "RUST_LOG": "warn"},
    )
    try:
        wait_port(smtp, time.time() + 60)
        subprocess.run(
            [binary, "policy", "import", policy, "--config", config],
            check=True, capture_output=True,
        )
        time.sleep(args.settle)
        idle = status(proc.pid)["VmRSS"]
        sampler = Sampler(proc.pid)
        sampler.start()
        maildir = os.path.join(work, "data", "maildir")
        settled = []
        for burst in range(1, args.bursts + 1):
            errors: list = []
            threads = [
                threading.Thread(target=send, args=(smtp, raw, errors))
                for _ in range(args.concurrent)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if errors:
                sys.exit(f"{label}: burst {burst}: {errors[0]}")
            want = burst * args.concurrent
            deadline = time.time() + 900
            while delivered(maildir) < want:
                if time.time() > deadline or proc.poll() is not None:
                    sys.exit(f"{label}: only {delivered(maildir)} of {want} delivered")
                time.sleep(0.1)
            time.sleep(args.settle)
            settled.append(status(proc.pid)["VmRSS"])
        sampler.stop = True
        sampler.join()
        hwm = status(proc.pid)["VmHWM"]
        return [label, idle, sampler.peak, *settled, hwm]
    finally:
        proc.terminate()
        proc.wait()
        log.close()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("gateways", nargs="+", help="label=path of a postern binary")
    p.add_argument("--parts", type=int, default=100_000)
    p.add_argument("--concurrent", type=int, default=16)
    p.add_argument("--bursts", type=int, default=4)
    p.add_argument("--settle", type=float, default=10.0, help="seconds of quiet before a reading")
    p.add_argument("--rounds", type=int, default=1, help="each gateway this many times, alternating")
    p.add_argument("--keep", action="store_true", help="keep the data directories")
    args = p.parse_args()
    raw = message(args.parts)
    print(f"{args.concurrent} messages of {args.parts} parts ({len(raw) / 1e6:.1f} MB) at once, "
          f"{args.bursts} bursts; MiB")
    header = (["gateway", "idle RSS", "peak RSS in bursts"]
              + [f"settled after burst {i + 1}" for i in range(args.bursts)] + ["VmHWM"])
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for _ in range(args.rounds):
        for g in args.gateways:
            label, _, path = g.partition("=")
            row = run(label, path or label, raw, args)
            print("| " + " | ".join(str(x) for x in row) + " |", flush=True)


if __name__ == "__main__":
    main()
