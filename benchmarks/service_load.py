"""The search endpoint under 20 concurrent clients on loopback: p50/p99 latency.

Builds a fresh data directory with the real CLI (``facetrace ingest`` of LFW photos, one
per person, into a gallery; ``facetrace admin`` for an organisation, an examiner and an
API token), starts ``facetrace serve`` as its own process, uploads ``--probes`` other
LFW photos of the same people into a case, then:

1. the peer, in this process: ``Facetrace.search`` of every probe, one after another,
   the same work without HTTP, the database writes or the audit log (p50, p99);
2. one client: each probe searched through ``POST /api/v1/cases/{id}/searches``;
3. ``--clients`` clients (threads with their own HTTP connection) searching for
   ``--seconds``, each cycling through the probes from a different start.

It prints p50/p99 latency, searches/s, the ratio to the peer and the errors (there should
be none), and checks ``facetrace audit verify`` afterwards: concurrent appends must not
fork the hash chain. Not a test: one run on a shared machine with 2 cores, where every
search runs face detection and embedding on the probe, so latency under 20 clients is
mostly queueing for those cores.

    .venv/bin/python benchmarks/service_load.py --gallery 500 --probes 40 --clients 20
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

FACES = Path(
    os.environ.get("FACETRACE_FACES", Path(__file__).resolve().parents[2] / "shared" / "faces")
)
PASSWORD = "load test password"


def cli(data: Path, *args: str, stdin: str | None = None) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "facetrace", "--data", str(data), *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "FACETRACE_WORKERS": "2"},
    )
    if proc.returncode:
        raise SystemExit(f"facetrace {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def pick_people(gallery: int, probes: int) -> tuple[list[Path], list[Path]]:
    """One gallery photo per person; probes are second photos of the first people."""
    people = sorted(p for p in (FACES / "lfw" / "images").iterdir() if p.is_dir())
    gallery_photos, probe_photos = [], []
    for person in people:
        photos = sorted(person.glob("*.jpg"))
        if len(gallery_photos) < gallery:
            gallery_photos.append(photos[0])
        if len(photos) > 1 and len(probe_photos) < probes:
            probe_photos.append(photos[1])
            if len(gallery_photos) >= gallery:
                break
    return gallery_photos, probe_photos


def percentiles(seconds: list[float]) -> tuple[float, float]:
    ms = sorted(s * 1000 for s in seconds)
    return statistics.median(ms), ms[min(len(ms) - 1, int(0.99 * len(ms)))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_up(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit("facetrace serve exited early")
        try:
            httpx.get(url + "/docs", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.3)
    raise SystemExit("facetrace serve did not start")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gallery", type=int, default=500, help="gallery photos (people)")
    ap.add_argument("--probes", type=int, default=40)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)
    if not (FACES / "lfw" / "images").is_dir():
        raise SystemExit(f"LFW photos not found under {FACES} (set FACETRACE_FACES)")
    work = Path(tempfile.mkdtemp(prefix="facetrace-load-"))
    data, folder = work / "data", work / "gallery"
    gallery_photos, probe_photos = pick_people(args.gallery, args.probes)
    for photo in gallery_photos:
        (folder / photo.parent.name).mkdir(parents=True, exist_ok=True)
        os.symlink(photo, folder / photo.parent.name / photo.name)
    t = time.perf_counter()
    cli(data, "ingest", str(folder), "-g", "records")
    print(f"gallery: {len(gallery_photos)} photos ingested in {time.perf_counter() - t:.0f} s")
    cli(data, "admin", "create-org", "Load Agency")
    cli(
        data,
        "admin",
        "create-user",
        "Load Agency",
        "loader",
        "--role",
        "admin",
        stdin=PASSWORD + "\n",
    )
    # The CLI's gallery has no owner; the service sees galleries its organisation owns.
    from facetrace import store
    from facetrace.db import open_database
    from facetrace.service.tables import GalleryOwner

    sessions = open_database(f"sqlite:///{data / 'facetrace.db'}")
    with sessions.begin() as s:
        s.add(GalleryOwner(gallery_id=store.get_gallery(s, "records").id, org_id=1))
    sessions.kw["bind"].dispose()
    token = json.loads(cli(data, "admin", "create-token", "loader"))["token"]

    from facetrace.app import Facetrace
    from facetrace.settings import Settings

    ft = Facetrace(Settings.load(data_dir=data))
    ft.search(probe_photos[0], ["records"])  # models loaded, index opened
    peer = []
    for photo in probe_photos:
        t = time.perf_counter()
        ft.search(photo, ["records"])
        peer.append(time.perf_counter() - t)
    peer50, peer99 = percentiles(peer)
    print(f"peer, Facetrace.search in-process: p50 {peer50:.0f} ms, p99 {peer99:.0f} ms")

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "facetrace", "--data", str(data), "serve", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=open(work / "serve.log", "w"),  # noqa: SIM115
    )
    try:
        wait_up(url, server)
        h = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=url, headers=h, timeout=600) as c:
            case = c.post("/api/v1/cases", json={"number": "LOAD-1", "purpose": "missing"})
            case_id = case.json()["id"]
            probe_ids = []
            for photo in probe_photos:
                r = c.post(
                    f"/api/v1/cases/{case_id}/probes",
                    files={"file": (photo.name, photo.read_bytes(), "image/jpeg")},
                )
                probe_ids.append(r.json()["id"])
            search_url = f"/api/v1/cases/{case_id}/searches"
            c.post(search_url, json={"probe_id": probe_ids[0]})
            one = []
            for pid in probe_ids:
                t = time.perf_counter()
                r = c.post(search_url, json={"probe_id": pid})
                one.append(time.perf_counter() - t)
                assert r.status_code == 201, r.text
        one50, one99 = percentiles(one)
        print(f"service, 1 client: p50 {one50:.0f} ms, p99 {one99:.0f} ms")

        latencies: list[float] = []
        errors: list[str] = []
        lock = threading.Lock()
        stop_at = time.monotonic() + args.seconds

        def client(n: int) -> None:
            with httpx.Client(base_url=url, headers=h, timeout=600) as c:
                i = n
                while time.monotonic() < stop_at:
                    pid = probe_ids[i % len(probe_ids)]
                    t = time.perf_counter()
                    r = c.post(search_url, json={"probe_id": pid})
                    took = time.perf_counter() - t
                    with lock:
                        if r.status_code == 201:
                            latencies.append(took)
                        else:
                            errors.append(f"{r.status_code} {r.text[:100]}")
                    i += 1

        threads = [threading.Thread(target=client, args=(n,)) for n in range(args.clients)]
        t0 = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        wall = time.perf_counter() - t0
    finally:
        server.terminate()
        server.wait(30)
    p50, p99 = percentiles(latencies)
    rate = len(latencies) / wall
    verify = cli(data, "audit", "verify").strip()
    print(
        f"service, {args.clients} clients for {wall:.0f} s: {len(latencies)} searches, "
        f"{rate:.1f}/s, p50 {p50:.0f} ms, p99 {p99:.0f} ms, errors {len(errors)}"
    )
    print(
        f"ratio to the peer: 1 client p50 {one50 / peer50:.2f}x; "
        f"{args.clients} clients p50 {p50 / peer50:.2f}x, throughput x p50 of peer "
        f"{rate * peer50 / 1000:.2f} (2 cores)"
    )
    print(verify)
    if errors:
        print("first errors:", *errors[:5], sep="\n  ")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "gallery": len(gallery_photos),
                    "probes": len(probe_photos),
                    "peer_p50_ms": peer50,
                    "peer_p99_ms": peer99,
                    "one_p50_ms": one50,
                    "one_p99_ms": one99,
                    "clients": args.clients,
                    "searches": len(latencies),
                    "per_s": rate,
                    "p50_ms": p50,
                    "p99_ms": p99,
                    "errors": len(errors),
                    "audit": verify,
                },
                indent=1,
            )
        )
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
