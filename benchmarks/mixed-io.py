#!/usr/bin/env python3
"""The disk traffic of an export that does not fit in memory, without the export: reads a folder's .safetensors files
in order (8 MB reads, through the page cache) and writes a new file of RATIO times their size past the page cache
(O_DIRECT, 1 MB writes by 16 threads; moeport's direct writer writes 256 KB steps by 16), in one of four orders:
  paced    reads, and writes of only the output the bytes read so far give (what an export in too little memory does);
  at-once  reads and writes as two streams at the same time, writes ahead of the reads where the disk lets them;
  after    every read, then every write (what an export that fits and syncs at the end does);
  phases   reads of PHASE_MB, then the writes they would give, in turn (whether the disk prefers turns to a mix).
Its time is the disk's bound for the export's traffic: run it in the same memory cgroup, cold (after drop_caches).

Usage: mixed-io.py FOLDER OUTPUT_FILE RATIO paced|at-once|after|phases [PHASE_MB]    (RATIO 0.39: NVFP4's output; 1: BF16)
"""
import glob, mmap, os, sys, threading, time
from concurrent.futures import ThreadPoolExecutor

READ, WRITE, WRITERS = 8 << 20, 1 << 20, 16


def main():
    if len(sys.argv) < 5 or sys.argv[4] not in ('paced', 'at-once', 'after', 'phases'):
        sys.exit(__doc__.strip().splitlines()[-1])
    folder, output, ratio, order = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
    phase = int(sys.argv[5] if len(sys.argv) > 5 else 1024) << 20
    files = sorted(glob.glob(os.path.join(folder, '*.safetensors')))
    read_total = sum(os.path.getsize(f) for f in files)
    write_total = int(read_total * ratio) // WRITE * WRITE
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o644)
    os.posix_fallocate(fd, 0, max(write_total, WRITE))
    buffers = threading.local()  # O_DIRECT needs aligned memory: an anonymous mapping is page-aligned

    def write_at(position):
        if not hasattr(buffers, 'one'):
            buffers.one = mmap.mmap(-1, WRITE)
        os.pwrite(fd, buffers.one, position)

    pool = ThreadPoolExecutor(WRITERS)

    def write(start, end):
        list(pool.map(write_at, range(start, end, WRITE)))

    def reads():
        for name in files:
            with open(name, 'rb', buffering=0) as f:
                while chunk := f.read(READ):
                    yield len(chunk)

    start = time.perf_counter()
    if order == 'paced':
        # a write is started once the reads have given its output: the writers trail the reads as an export's do
        given = threading.Condition()
        state = {'read': 0}

        def paced_write(position):
            with given:
                given.wait_for(lambda: state['read'] * ratio >= position + WRITE or state['read'] == read_total)
            write_at(position)

        results = pool.map(paced_write, range(0, write_total, WRITE))
        for n in reads():
            with given:
                state['read'] += n
                given.notify_all()
        list(results)
    elif order == 'at-once':
        writer = threading.Thread(target=write, args=(0, write_total))
        writer.start()
        for _ in reads():
            pass
        writer.join()
    elif order == 'after':
        for _ in reads():
            pass
        write(0, write_total)
    else:
        read, written = 0, 0
        for n in reads():
            read += n
            if read >= phase:
                upto = min(write_total, written + int(read * ratio) // WRITE * WRITE)
                write(written, upto)
                written, read = upto, 0
        write(written, write_total)
    os.close(fd)
    seconds = time.perf_counter() - start
    print(f"{order}: {seconds:.2f} s, read {read_total / 1e9:.2f} GB, wrote {write_total / 1e9:.2f} GB "
          f"({(read_total + write_total) / seconds / 1e9:.2f} GB/s together)", flush=True)


if __name__ == '__main__':
    main()
