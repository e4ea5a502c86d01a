"""py-spy profiles of the processes a figure starts (``--profile DIR``), and a summary.

py-spy is optional (see bench/requirements-profile.txt): it attaches to each
replica and to the private SecantusDB right after they start, samples until
they exit, and writes collapsed stacks ("raw" format) to
``DIR/<figure>-<process>.txt``. ``python -m bench.profile FILE`` prints the
frames with the most inclusive and self samples.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

BIN = Path(sys.executable).parent


def py_spy() -> str:
    found = shutil.which("py-spy", path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if found is None:
        raise SystemExit("--profile needs py-spy: pip install -r bench/requirements-profile.txt")
    return found


def attach(pid: int, output: Path, rate: int = 100) -> subprocess.Popen[bytes]:
    """Samples ``pid`` until it exits; the collapsed stacks land in ``output``."""
    output.parent.mkdir(parents=True, exist_ok=True)
    argv = [py_spy(), "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw"]
    argv += ["--nonblocking", "--output", str(output)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def summarize(path: Path, top: int = 30) -> str:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        for frame in set(frames):
            inclusive[frame] += n
        own[frames[-1]] += n
    lines = [f"{path.name}: {total} samples", "", "inclusive:"]
    lines += [f"  {100 * v / total:5.1f}%  {k[:140]}" for k, v in inclusive.most_common(top)]
    lines += ["", "self:"]
    lines += [f"  {100 * v / total:5.1f}%  {k[:140]}" for k, v in own.most_common(top)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    try:
        for path in args.files:
            print(summarize(path, args.top))
            print()
    except BrokenPipeError:  # e.g. piped into head
        sys.stderr.close()


if __name__ == "__main__":
    main()
