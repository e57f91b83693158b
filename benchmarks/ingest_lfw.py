"""All of LFW into an empty data directory with one command, then one search; RSS sampled.

Runs the real CLI, ``facetrace ingest <lfw/images> -g lfw``, in a fresh data directory
and samples, once a second, the resident memory of the main process and of its worker
processes together with the number of photos stored so far (read from the SQLite file).
Then runs ``facetrace search`` with a probe photo against the whole gallery, and prints:

- images/s over the whole run and the memory table at every tenth of the gallery, so
  that "memory stays flat as the gallery grows" can be read off the numbers;
- the search's wall time, RSS and its first candidates.

    .venv/bin/python benchmarks/ingest_lfw.py                  # every LFW photo
    .venv/bin/python benchmarks/ingest_lfw.py --limit 2000     # a quicker look

Needs psutil (``pip install -e .[bench]``). Not a test: one run on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

FACES = Path(
    os.environ.get("FACETRACE_FACES", Path(__file__).resolve().parents[2] / "shared" / "faces")
)


def stored(db: Path) -> int:
    """Photos committed so far (0 before the database exists)."""
    if not db.exists():
        return 0
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return int(con.execute("select count(*) from source_image").fetchone()[0])
        finally:
            con.close()
    except sqlite3.Error:
        return -1


def rss_mb(proc: psutil.Process) -> tuple[float, float]:
    """(main process RSS, sum of its children's RSS) in MB."""
    try:
        main = proc.memory_info().rss
        kids = sum(c.memory_info().rss for c in proc.children(recursive=True))
    except psutil.Error:
        return 0.0, 0.0
    return main / 2**20, kids / 2**20


def run(cmd: list[str], db: Path, env: dict[str, str]) -> tuple[float, list[tuple], int]:
    """Run ``cmd`` sampling (seconds, photos stored, main MB, workers MB) every second."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    ps = psutil.Process(proc.pid)
    samples = []
    while proc.poll() is None:
        main, kids = rss_mb(ps)
        if main:
            samples.append((time.perf_counter() - start, stored(db), main, kids))
        time.sleep(1.0)
    assert proc.stdout is not None
    out = proc.stdout.read().decode()
    return time.perf_counter() - start, samples, proc.returncode if out else -1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=0, help="only the first N people's folders")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--keep", type=Path, help="use (and keep) this data directory")
    args = ap.parse_args()
    images = FACES / "lfw" / "images"
    if not images.is_dir():
        sys.exit(f"LFW not found at {images} (set FACETRACE_FACES)")
    with tempfile.TemporaryDirectory() as tmp:
        data = args.keep or Path(tmp) / "data"
        source = images
        if args.limit:
            source = Path(tmp) / "subset"
            source.mkdir()
            count = 0
            for person in sorted(images.iterdir()):
                (source / person.name).symlink_to(person)
                count += len(list(person.glob("*.jpg")))
                if count >= args.limit:
                    break
        env = {**os.environ, "FACETRACE_DATA": str(data)}
        base = [sys.executable, "-m", "facetrace"]
        cmd = [*base, "ingest", str(source), "-g", "lfw", "--workers", str(args.workers), "--json"]
        seconds, samples, code = run(cmd, data / "facetrace.db", env)
        n = stored(data / "facetrace.db")
        print(f"ingest: exit {code}, {n} photos in {seconds:.0f} s = {n / seconds:.2f} images/s")
        print(f"{'s':>6}{'photos':>8}{'main MB':>9}{'workers MB':>11}")
        shown = -1
        for t, photos, main_mb, kids_mb in samples:
            tenth = photos * 10 // max(n, 1)
            if tenth > shown or (t, photos) == samples[-1][:2]:
                shown = tenth
                print(f"{t:6.0f}{photos:8d}{main_mb:9.0f}{kids_mb:11.0f}")
        peak = max((s[2] for s in samples), default=0.0)
        print(f"peak main RSS {peak:.0f} MB, peak workers RSS {max(s[3] for s in samples):.0f} MB")
        probe = images / "George_W_Bush" / "George_W_Bush_0001.jpg"
        start = time.perf_counter()
        res = subprocess.run(
            [*base, "search", str(probe), "-g", "lfw", "--json", "-k", "3"],
            env=env,
            capture_output=True,
            text=True,
        )
        took = time.perf_counter() - start
        print(f"search: exit {res.returncode} in {took:.1f} s (a fresh process: start-up, models)")
        if res.returncode == 0:
            result = json.loads(res.stdout)
            for face in result["faces"]:
                for c in face["candidates"]:
                    print(f"  {c['score']:.3f} {c['subject']} {c['image']}")
        else:
            print(res.stderr)


if __name__ == "__main__":
    main()
