"""Human-readable output of the CLI (Rich). JSON output is built by the records' own
``to_dict`` methods; this module only draws tables and lines for people."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from facetrace.ingest import IngestReport
from facetrace.records import AnalysedImage
from facetrace.search import LEAD_NOTICE, Comparison, SearchResult, face_dict


def faces_dict(image: AnalysedImage) -> dict[str, Any]:
    return {
        "photo": image.source,
        "width": image.width,
        "height": image.height,
        "message": None if image.faces else "no face found in the photo",
        "faces": [face_dict(f) for f in image.faces],
    }


def _quality(q: dict[str, Any]) -> str:
    text = f"{q['face_px']}px sharp {q['sharpness']:.0f} yaw {q['yaw_deg']:.0f}"
    if q.get("rotation"):
        text += f" turned {q['rotation']}"
    if q.get("warnings"):
        text += " [yellow]" + escape("; ".join(q["warnings"])) + "[/]"
    return text


def faces(console: Console, image: AnalysedImage) -> None:
    if not image.faces:
        console.print(f"{escape(image.source)}: no face found in the photo")
        return
    table = Table(title=f"{len(image.faces)} face(s) in {escape(image.source)}")
    for col in ("#", "box (l, t, r, b)", "detector", "quality"):
        table.add_column(col)
    for i, f in enumerate(image.faces, 1):
        d = face_dict(f)
        table.add_row(
            str(i), str(d["box"]), f"{f.quality.detector_score:.2f}", _quality(d["quality"])
        )
    console.print(table)


def search_result(console: Console, result: SearchResult) -> None:
    console.print(f"[bold yellow]{LEAD_NOTICE}[/]")
    searched = ", ".join(f"{escape(n)} ({c} faces)" for n, c in result.galleries.items())
    console.print(f"searched: {searched or 'no gallery'}; model {result.model}")
    if result.message:
        console.print(f"{escape(result.probe)}: {result.message}")
    if not result.faces:
        return
    if result.calibration is None:
        console.print("[yellow]no calibration for this model: scores carry no false match rate[/]")
    for i, fm in enumerate(result.faces, 1):
        face, cands = fm.face, fm.candidates
        d = face_dict(face)
        table = Table(
            title=f"face {i} at {d['box']}: {_quality(d['quality'])}\n"
            f"[bold]{fm.outcome}[/]: {escape(fm.reason)}"
        )
        for col in ("rank", "subject", "score", "FMR", "expected strangers", "gallery"):
            table.add_column(col)
        table.add_column("image", overflow="fold")
        table.add_column("source", overflow="fold")
        for rank, c in enumerate(cands, 1):
            fmr = "-" if c.fmr is None else ("<" if c.fmr_is_upper_bound else "") + f"{c.fmr:.1e}"
            strangers = (
                "-" if c.expected_false_matches is None else f"{c.expected_false_matches:.2g}"
            )
            mark = "" if c.above_threshold is not False else " [dim](below threshold)[/]"
            table.add_row(
                str(rank),
                escape(c.subject or "(unnamed)") + mark,
                f"{c.score:.3f}",
                fmr,
                strangers,
                escape(c.gallery),
                escape(c.image),
                escape(c.source_url or ""),
            )
        console.print(table)


def comparison(console: Console, result: Comparison) -> None:
    verdict = "same person" if result.same_person else "different people"
    console.print(
        f"{verdict}: score {result.score:.3f} (threshold {result.threshold}"
        + (f"; false match rate at this score {result.fmr:.1e}" if result.fmr is not None else "")
        + "; "
        f"faces found: {len(result.a.faces)} and {len(result.b.faces)}, largest compared)"
    )
    console.print(f"[yellow]{LEAD_NOTICE}[/]")


def rows(console: Console, title: str, data: list[dict[str, Any]], cols: list[str]) -> None:
    table = Table(title=title)
    for c in cols:
        table.add_column(c)
    for r in data:
        table.add_row(*(escape(str(r.get(c, ""))) for c in cols))
    console.print(table)


def ingest_report(console: Console, report: IngestReport) -> None:
    r = report
    rate = r.images_added / r.seconds if r.seconds else 0.0
    console.print(
        f"gallery {escape(r.gallery)}: {r.images_added} image(s) added with {r.faces_added} "
        f"face(s) in {r.seconds:.1f}s ({rate:.1f} img/s, {r.workers} worker(s)); "
        f"{len(r.no_face)} with no face; {r.already_in_gallery} already in the gallery; "
        f"{r.duplicates_in_run} duplicate(s) in this run; {len(r.failures)} failure(s)"
    )
    for path in r.no_face[:20]:
        console.print(f"  no face: {escape(path)}")
    if len(r.no_face) > 20:
        console.print(f"  ... and {len(r.no_face) - 20} more with no face")
    for path, reason in r.failures:
        console.print(f"  [red]failed[/]: {escape(path)}: {escape(reason)}")
