#!/usr/bin/env python3
"""Where a running tripline spends its time, as the tables in
docs/performance.md were made: each sample of a DWARF-unwound `perf` profile
is charged to its innermost `tripline::` frame (allocation, hashing,
formatting... inlined or called below it count for the tripline function that
asked for them), per thread.

    perf record -e cpu-clock -F 999 --call-graph dwarf,32768 -p PID -o t.data -- sleep 2
    perf script -i t.data -F comm,ip,sym > t.txt
    python3 bench/profile.py t.txt                     # innermost tripline frame
    python3 bench/profile.py t.txt 'Engine::process'   # what runs under a frame

`perf` is Debian's `linux-perf`; the release binary needs no frame pointers
(the unwinder reads `.eh_frame`). With a second argument (a regular
expression), the samples whose stack holds a matching frame are broken down
by the frame called from the outermost match instead. Standard library only.
"""
import collections
import re
import sys

ADDRESS = re.compile(r"^\s+[0-9a-f]+ ")


def samples(path):
    """(thread, [frames, innermost first]) per sample of `perf script`."""
    comm, frames = None, []
    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line.strip():
                if comm is not None:
                    yield comm, frames
                comm, frames = None, []
            elif ADDRESS.match(line):
                frames.append(ADDRESS.sub("", line))
            else:
                comm, frames = line.strip(), []
    if comm is not None:
        yield comm, frames


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    all_samples = list(samples(sys.argv[1]))
    total = len(all_samples) or 1
    counts = collections.Counter()
    if len(sys.argv) == 2:
        for comm, frames in all_samples:
            ours = next((f for f in frames if "tripline::" in f), None)
            counts[(comm[:15], ours or "(not tripline) " + (frames[0] if frames else "?"))] += 1
    else:
        under = re.compile(sys.argv[2])
        for comm, frames in all_samples:
            hits = [i for i, f in enumerate(frames) if under.search(f)]
            if hits:
                i = max(hits)
                counts[(comm[:15], frames[i - 1] if i > 0 else "(self)")] += 1
        inside = sum(counts.values())
        print(f"{100 * inside / total:5.1f}% of the samples run under /{sys.argv[2]}/")
    for (comm, frame), n in counts.most_common(40):
        print(f"{100 * n / total:5.1f}%  {comm:15}  {frame[:140]}")
    print(f"{total} samples")


if __name__ == "__main__":
    main()
