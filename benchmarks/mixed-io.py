#!/usr/bin/env python3
"""The disk traffic of an export that does not fit in memory, without the export: reads a folder's .safetensors files
(8 MB reads in order, through the page cache) and writes a new file of RATIO times their size past the page cache
(O_DIRECT, 1 MB writes by 16 threads; moeport's direct writer writes 256 KB steps by 16), in one of four orders:
  paced    reads, and writes of only the output the bytes read so far give (what an export in too little memory does);
  at-once  reads and writes as two streams at the same time, writes ahead of the reads where the disk lets them;
  after    every read, then every write (what an export that fits and syncs at the end does);
  phases   reads of PHASE_MB, then the writes they would give, in turn (whether the disk prefers turns to a mix).
Its time is the disk's bound for the export's traffic: run it in the same memory cgroup, cold (after drop_caches).

Variants, to tell which of the export's ways the disk minds (paced order):
  --write-kb N      writes of N KB (256: the direct writer's steps)
  --streams         writes as 16 tensors of 3 MB at a time, a step of each in turn (as 16 workers write), not in order
  --reads T:KB      reads by T threads, each taking the next 10 MB of input and reading it in KB reads without the
                    kernel's read-ahead (several tensors at once in small requests, as the export's advice read them)

RATIO 0.39: NVFP4's output; 1: BF16.
"""
import argparse, glob, mmap, os, threading, time
from concurrent.futures import ThreadPoolExecutor

READ, WRITERS, STREAM_TENSOR = 8 << 20, 16, 3 << 20


def arguments():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                usage='mixed-io.py FOLDER OUTPUT_FILE RATIO ORDER [PHASE_MB] [--write-kb N] [--streams] [--reads T:KB]')
    p.add_argument('folder')
    p.add_argument('output')
    p.add_argument('ratio', type=float)
    p.add_argument('order', choices=('paced', 'at-once', 'after', 'phases'))
    p.add_argument('phase_mb', type=int, nargs='?', default=1024)
    p.add_argument('--write-kb', type=int, default=1024)
    p.add_argument('--streams', action='store_true')
    p.add_argument('--reads', default=None, metavar='T:KB')
    a = p.parse_args()
    if (a.streams or a.reads) and a.order != 'paced':
        p.error('--streams and --reads go with the paced order')
    return a


def write_positions(total, write, streams):
    positions = list(range(0, total, write))
    if not streams:
        return positions
    tensor = max(write, STREAM_TENSOR // write * write)
    ordered = []
    for window in range(0, total, WRITERS * tensor):
        tensors = [list(range(t, min(t + tensor, total), write)) for t in range(window, min(window + WRITERS * tensor, total), tensor)]
        for step in range(max(map(len, tensors))):
            ordered += [t[step] for t in tensors if step < len(t)]
    return ordered


def main():
    a = arguments()
    write = a.write_kb << 10
    files = sorted(glob.glob(os.path.join(a.folder, '*.safetensors')))
    read_total = sum(os.path.getsize(f) for f in files)
    write_total = int(read_total * a.ratio) // write * write
    fd = os.open(a.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o644)
    os.posix_fallocate(fd, 0, max(write_total, write))
    buffers = threading.local()  # O_DIRECT needs aligned memory: an anonymous mapping is page-aligned

    def write_at(position):
        if not hasattr(buffers, 'one'):
            buffers.one = mmap.mmap(-1, write)
        os.pwrite(fd, buffers.one, position)

    pool = ThreadPoolExecutor(WRITERS)

    def write_range(start, end):
        list(pool.map(write_at, range(start, end, write)))

    def reads():
        for name in files:
            with open(name, 'rb', buffering=0) as f:
                while chunk := f.read(READ):
                    yield len(chunk)

    def threaded_reads(spec, done):
        threads, kb = map(int, spec.split(':'))
        chunks = []
        for name in files:
            rfd = os.open(name, os.O_RDONLY)
            os.posix_fadvise(rfd, 0, 0, os.POSIX_FADV_RANDOM)
            size = os.path.getsize(name)
            chunks += [(rfd, at, min(10 << 20, size - at)) for at in range(0, size, 10 << 20)]

        def read_chunk(chunk):
            rfd, at, n = chunk
            for offset in range(at, at + n, kb << 10):
                done(len(os.pread(rfd, min(kb << 10, at + n - offset), offset)))

        with ThreadPoolExecutor(threads) as readers:
            list(readers.map(read_chunk, chunks))
        for rfd in {chunk[0] for chunk in chunks}:
            os.close(rfd)

    start = time.perf_counter()
    if a.order == 'paced':
        # a write is started once the reads have given its output: the writers trail the reads as an export's do
        given = threading.Condition()
        state = {'read': 0}

        def paced_write(position):
            with given:
                given.wait_for(lambda: state['read'] * a.ratio >= position + write or state['read'] == read_total)
            write_at(position)

        def done(n):
            with given:
                state['read'] += n
                given.notify_all()

        results = pool.map(paced_write, write_positions(write_total, write, a.streams))
        if a.reads:
            threaded_reads(a.reads, done)
        else:
            for n in reads():
                done(n)
        list(results)
    elif a.order == 'at-once':
        writer = threading.Thread(target=write_range, args=(0, write_total))
        writer.start()
        for _ in reads():
            pass
        writer.join()
    elif a.order == 'after':
        for _ in reads():
            pass
        write_range(0, write_total)
    else:
        phase = a.phase_mb << 20
        read, written = 0, 0
        for n in reads():
            read += n
            if read >= phase:
                upto = min(write_total, written + int(read * a.ratio) // write * write)
                write_range(written, upto)
                written, read = upto, 0
        write_range(written, write_total)
    os.close(fd)
    seconds = time.perf_counter() - start
    variant = ''.join([f' --write-kb {a.write_kb}' if a.write_kb != 1024 else '', ' --streams' if a.streams else '',
                       f' --reads {a.reads}' if a.reads else ''])
    print(f"{a.order}{variant}: {seconds:.2f} s, read {read_total / 1e9:.2f} GB, wrote {write_total / 1e9:.2f} GB "
          f"({(read_total + write_total) / seconds / 1e9:.2f} GB/s together)", flush=True)


if __name__ == '__main__':
    main()
