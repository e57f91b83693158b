"""The ``facetrace`` command line: parse, call one ``Facetrace`` method, render, stop.

This is the one place where errors meet the terminal: ``main`` turns every
``FacetraceError`` into one line on stderr and its exit code, Ctrl-C into a note on how to
resume, and anything unexpected into a short report (the traceback only with
``FACETRACE_DEBUG=1``). ``--json`` output is a stable contract for scripts.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from facetrace import render
from facetrace.app import Facetrace
from facetrace.cli_eval import app_of, calibrate_cmd, eval_group
from facetrace.cli_service import admin_group, audit_group, serve_cmd
from facetrace.errors import ConfigError, FacetraceError
from facetrace.settings import DETECTORS, INDEX_BACKENDS, Settings, parse_index_target
from facetrace.sources import Item, count_items, from_manifest, from_path

err = Console(stderr=True)
out = Console()


def _emit_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, ensure_ascii=False))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--data",
    type=click.Path(file_okay=False, path_type=Path),
    help="Data directory [FACETRACE_DATA].",
)
@click.option(
    "--db-url",
    help="Database URL (default: SQLite in the data directory) [FACETRACE_DATABASE_URL].",
)
@click.option(
    "--index",
    "index_backend",
    type=click.Choice(INDEX_BACKENDS),
    help="Vector index backend [FACETRACE_INDEX].",
)
@click.option(
    "--detector", type=click.Choice(DETECTORS), help="Face detector [FACETRACE_DETECTOR]."
)
@click.option(
    "--upsample",
    type=click.IntRange(0, 4),
    help="Detector upsampling, finds smaller faces [FACETRACE_UPSAMPLE].",
)
@click.option(
    "--rotations/--no-rotations",
    "probe_rotations",
    default=None,
    help="Also look for faces turned 90/180/270 degrees in probes [FACETRACE_PROBE_ROTATIONS].",
)
@click.version_option(package_name="facetrace")
@click.pass_context
def cli(ctx: click.Context, **flags: Any) -> None:
    """facetrace: find faces in a photo and search galleries of reference photos.

    A candidate is a lead to be verified by a trained examiner, never an identification.
    """
    flags["data_dir"] = flags.pop("data")
    flags["database_url"] = flags.pop("db_url")
    ctx.obj = Facetrace(Settings.load(**flags))


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--gallery", "-g", required=True, help="Gallery to add the photos to (created if new)."
)
@click.option(
    "--manifest",
    type=click.Path(path_type=Path, dir_okay=False),
    help="CSV or JSONL manifest of photos.",
)
@click.option(
    "--workers", type=click.IntRange(1, 256), help="Worker processes (default: all cores)."
)
@click.option("--subject", help="Subject of photos not in a per-person folder.")
@click.option("--source-url", help="Where these photos come from (URL).")
@click.option("--source-description", help="What these photos are (e.g. 'civil registry, 2019').")
@click.option("--legal-basis", help="Legal basis or consent under which they are held.")
@click.option("--captured-at", help="When they were taken (ISO date).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def ingest(
    ctx: click.Context,
    paths: tuple[Path, ...],
    gallery: str,
    manifest: Path | None,
    workers: int | None,
    subject: str | None,
    as_json: bool,
    **provenance: Any,
) -> None:
    """Add photos (files, folders, zip/tar archives, a manifest) to a gallery.

    In a folder, each sub-folder is one person, named exactly as the folder. Running the
    same ingest again adds nothing; an interrupted one resumes where it stopped.
    """
    app = app_of(ctx)
    if not paths and manifest is None:
        raise click.UsageError("give at least one PATH or --manifest")
    common = {k: v for k, v in provenance.items() if v}
    s = app.settings

    def items() -> Iterator[Item]:
        for p in paths:
            yield from from_path(
                p,
                max_file_bytes=s.max_file_bytes,
                max_archive_bytes=s.max_archive_bytes,
                subject=subject,
                common=common,
            )
        if manifest is not None:
            yield from from_manifest(manifest, max_file_bytes=s.max_file_bytes, common=common)

    command = " ".join(["facetrace", *sys.argv[1:]])
    progress = Progress(
        TextColumn("[bold]ingest[/] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]} img/s"),
        TextColumn("{task.fields[faces]} faces"),
        TimeElapsedColumn(),
        console=err,
        transient=as_json,
        disable=not err.is_terminal and as_json,
    )
    with progress:
        task = progress.add_task(
            gallery, total=count_items(list(paths), manifest), faces=0, rate="-"
        )
        counts = {"faces": 0}

        def tick(images: int, faces: int) -> None:
            counts["faces"] += faces
            t = progress.tasks[task]
            rate = f"{t.completed / t.elapsed:5.1f}" if t.elapsed else "-"
            progress.update(task, advance=images, faces=counts["faces"], rate=rate)

        report = app.ingest(items(), gallery, command=command, workers=workers, on_progress=tick)
    if as_json:
        _emit_json(report.to_dict())
    else:
        render.ingest_report(out, report)


@cli.command()
@click.argument("photo", type=click.Path(path_type=Path))
@click.option(
    "--gallery",
    "-g",
    "galleries",
    multiple=True,
    help="Gallery to search (repeatable; default: all).",
)
@click.option(
    "-k", type=click.IntRange(1, 1000), default=10, show_default=True, help="Candidates per face."
)
@click.option("--json", "as_json", is_flag=True, help="Print results as JSON.")
@click.pass_context
def search(
    ctx: click.Context, photo: Path, galleries: tuple[str, ...], k: int, as_json: bool
) -> None:
    """Search galleries with every face in PHOTO; k best candidates per face."""
    result = app_of(ctx).search(photo, list(galleries) or None, k)
    if as_json:
        _emit_json(result.to_dict())
    else:
        render.search_result(out, result)


@cli.command()
@click.argument("photo_a", type=click.Path(path_type=Path))
@click.argument("photo_b", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def compare(ctx: click.Context, photo_a: Path, photo_b: Path, as_json: bool) -> None:
    """1:1: is the main face of PHOTO_A the same person as that of PHOTO_B?"""
    result = app_of(ctx).compare(photo_a, photo_b)
    if as_json:
        _emit_json(result.to_dict())
    else:
        render.comparison(out, result)


@cli.command()
@click.argument("photo", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print faces as JSON.")
@click.pass_context
def faces(ctx: click.Context, photo: Path, as_json: bool) -> None:
    """Detection only: boxes, landmarks and quality of every face in PHOTO."""
    image = app_of(ctx).faces(photo)
    if as_json:
        _emit_json(render.faces_dict(image))
    else:
        render.faces(out, image)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
def galleries(ctx: click.Context, as_json: bool) -> None:
    """List galleries with their numbers of images, faces and subjects."""
    rows = app_of(ctx).galleries()
    if as_json:
        _emit_json(rows)
    else:
        render.rows(out, "galleries", rows, ["name", "images", "faces", "subjects", "failures"])


@cli.command()
@click.option("--gallery", "-g", required=True, help="Gallery to list.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
def subjects(ctx: click.Context, gallery: str, as_json: bool) -> None:
    """List the subjects of a gallery with their numbers of faces."""
    rows = app_of(ctx).subjects(gallery)
    if as_json:
        _emit_json(rows)
    else:
        render.rows(out, f"subjects in {gallery}", rows, ["name", "faces"])


@cli.command()
@click.option("--gallery", "-g", required=True, help="Gallery holding the subject.")
@click.option("--subject", "-s", required=True, help="Subject whose data is removed.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
def forget(ctx: click.Context, gallery: str, subject: str, as_json: bool) -> None:
    """Delete a subject: their faces leave the database and the index at once."""
    n = app_of(ctx).forget(gallery, subject)
    if as_json:
        _emit_json({"gallery": gallery, "subject": subject, "faces_removed": n})
    else:
        out.print(f"forgot {subject!r} in {gallery!r}: {n} face(s) removed from database and index")


@cli.command()
@click.option("--gallery", "-g", help="Gallery to rebuild (default: all).")
@click.option(
    "--to",
    "target",
    metavar="BACKEND",
    help="Move every gallery to another index: ivf-pq, scann, ivf, usearch, exact, "
    "milvus://host:port or a Milvus Lite file.db; recorded in DATA/settings.json.",
)
@click.option(
    "--options",
    metavar="KEY=VALUE,...",
    help="Rebuild every gallery with these index options (e.g. refine=fp16,nprobe=768); "
    "recorded in DATA/settings.json. With --to and without --options, the defaults.",
)
@click.pass_context
def reindex(
    ctx: click.Context, gallery: str | None, target: str | None, options: str | None
) -> None:
    """Rebuild vector indexes from the database (after damage or a backend change)."""
    app = app_of(ctx)
    if target is None and options is None:
        built = app.reindex(gallery)
    else:
        if gallery:
            raise ConfigError("--to and --options rebuild every gallery; leave out --gallery")
        s = app.settings
        backend, uri = parse_index_target(target) if target else (s.index_backend, s.milvus_uri)
        built = app.move_index(backend, uri, options or "")
        where = f"{backend} ({uri})" if uri else backend
        if options:
            where += f" with {options}"
        out.print(f"index backend is now {where}, saved in {s.data_dir}/settings.json")
    for name, n in built.items():
        out.print(f"{name}: index rebuilt with {n} face(s)")


@cli.command()
@click.pass_context
def demo(ctx: click.Context) -> None:
    """Build a small demo gallery and show a search, a comparison and a no-face photo."""
    from facetrace.demo import run_demo

    run_demo(app_of(ctx), out)


cli.add_command(eval_group)
cli.add_command(calibrate_cmd)
cli.add_command(serve_cmd)
cli.add_command(admin_group)
cli.add_command(audit_group)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI and map every error to a message and an exit code."""
    try:
        cli.main(args=argv, prog_name="facetrace", standalone_mode=False)
        return 0
    except FacetraceError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return exc.exit_code
    except click.exceptions.Abort:
        err.print("aborted")
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except KeyboardInterrupt:
        err.print(
            "interrupted: everything stored so far is kept; run the same command again to resume"
        )
        return 130
    except Exception as exc:  # noqa: BLE001 - the one place that stops tracebacks
        if os.environ.get("FACETRACE_DEBUG"):
            traceback.print_exc()
        err.print(
            f"[red]internal error:[/] {type(exc).__name__}: {escape(str(exc))} "
            "(set FACETRACE_DEBUG=1 for details and report it)",
            soft_wrap=True,
        )
        return 70
