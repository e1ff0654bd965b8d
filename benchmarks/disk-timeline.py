#!/usr/bin/env python3
"""Runs a command and shows what the disk under a folder did while it ran: its time, and the disk's read and write
rates per quarter second from /proc/diskstats (sampled every 50 ms), with the share of samples where no request was in
flight. A cold run that reads slower than `cat` shows here where: at its start (the JVM's own files, the plan), or
throughout; a run that reads and writes at once shows how the disk shares itself between the two.

Usage: disk-timeline.py FOLDER LABEL COMMAND [ARG ...]
"""
import os, subprocess, sys, time

BUCKET = 0.25


def disk_of(folder):
    """The /proc/diskstats name of the device holding folder (a partition, as the file system sees it)."""
    dev = os.stat(folder).st_dev
    major, minor = os.major(dev), os.minor(dev)
    for line in open('/proc/diskstats'):
        f = line.split()
        if int(f[0]) == major and int(f[1]) == minor:
            return f[2]
    sys.exit(f"disk-timeline: no /proc/diskstats entry for {folder} ({major}:{minor}, not a block device?)")


def sample(name):
    """(bytes read, bytes written, requests in flight) of the device so far."""
    for line in open('/proc/diskstats'):
        f = line.split()
        if f[2] == name:
            return int(f[5]) * 512, int(f[9]) * 512, int(f[11])
    return 0, 0, 0


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__.strip().splitlines()[-1])
    folder, label, command = sys.argv[1], sys.argv[2], sys.argv[3:]
    name = disk_of(folder)
    start = time.perf_counter()
    first = sample(name)
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    samples = []
    while process.poll() is None:
        time.sleep(0.05)
        samples.append((time.perf_counter() - start,) + sample(name))
    errors = process.stderr.read()
    seconds = time.perf_counter() - start
    reads, writes, previous = {}, {}, first
    for at, read, written, _ in samples:
        k = int(at / BUCKET)
        reads[k] = reads.get(k, 0) + read - previous[0]
        writes[k] = writes.get(k, 0) + written - previous[1]
        previous = (read, written)
    idle = sum(1 for s in samples if s[3] == 0) * 100 // max(1, len(samples))
    last = samples[-1] if samples else (seconds,) + first
    print(f"{label:36s} {seconds:6.2f} s" + ("" if process.returncode == 0 else f"  FAILED {errors[-300:]}"))
    quarters = range(max(reads, default=0) + 1)
    for name, rates in (("read", reads), ("write", writes)):
        print(f"  {name:5s} GB/s per {BUCKET} s: " + " ".join(f"{rates.get(k, 0) / BUCKET / 1e9:.1f}" for k in quarters))
    print(f"  nothing in flight in {idle}% of samples; read {(last[1] - first[0]) / 1e9:.2f} GB, "
          f"written {(last[2] - first[1]) / 1e9:.2f} GB", flush=True)


if __name__ == '__main__':
    main()
