"""The ``facetrace eval`` and ``facetrace calibrate`` commands (accuracy you can state).

Like every command: parse, call one job in ``facetrace.evaluation.run``, render, stop.
Errors reach the user through ``facetrace.cli.main``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from facetrace.app import Facetrace

err = Console(stderr=True)
out = Console()


@contextmanager
def _progress(label: str) -> Iterator[Callable[[int | None], Callable[[int], None]]]:
    bar = Progress(
        "[bold]" + label, BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=err
    )
    with bar:

        def start(total: int | None) -> Callable[[int], None]:
            task = bar.add_task("photos", total=total)
            return lambda n: bar.advance(task, n)

        yield start


def app_of(ctx: click.Context) -> Facetrace:
    """The ``Facetrace`` the ``facetrace`` group built for this command."""
    app = ctx.find_object(Facetrace)
    assert app is not None
    return app


def _print_rows(title: str, rows: dict[str, dict[str, Any]], keys: list[str]) -> None:
    from rich.table import Table

    table = Table(title=title)
    table.add_column("metric")
    for name in rows:
        table.add_column(name, justify="right")
    for k in keys:
        cells = [rows[n].get(k) for n in rows]
        table.add_row(k, *(f"{c:.4f}" if isinstance(c, float) else str(c) for c in cells))
    out.print(table)


def out_option(default: str) -> Callable[[Any], Any]:
    return click.option(
        "--out",
        "out_dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path(default),
        show_default=True,
        help="Folder for summary.json and the plots.",
    )


def images_option(help_text: str) -> Callable[[Any], Any]:
    return click.option(
        "--images",
        required=True,
        type=click.Path(exists=True, file_okay=False, path_type=Path),
        help=help_text,
    )


workers_option = click.option(
    "--workers", type=click.IntRange(1, 256), help="Worker processes (default: all cores)."
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")


@click.group("eval")
def eval_group() -> None:
    """Measure accuracy on labelled photos (verification and 1:N identification)."""


@eval_group.command("verify")
@click.option(
    "--pairs",
    "pairs_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Pairs list: LFW format (pairs.txt) or a TSV/CSV with img_a, img_b, same.",
)
@click.option(
    "--images",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder the pair paths are relative to (LFW: the images/ folder).",
)
@out_option("eval-verify")
@workers_option
@json_option
@click.pass_context
def verify_cmd(
    ctx: click.Context,
    pairs_file: Path,
    images: Path | None,
    out_dir: Path,
    workers: int | None,
    as_json: bool,
) -> None:
    """1:1 verification: 10-fold accuracy, ROC, EER, TAR at FAR 1e-2 and 1e-3."""
    from facetrace.evaluation.run import run_verify

    app = app_of(ctx)
    with _progress("embedding") as progress:
        summary = run_verify(
            app.settings, pairs_file, images, out_dir, workers or app.settings.workers, progress
        )
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    out.print(
        f"{summary['pairs']} pairs in {summary['folds']} folds; "
        f"faces found by {summary['face_found_by']}"
    )
    _print_rows(
        "verification",
        summary["variants"],
        [
            "mean_accuracy",
            "std_accuracy",
            "eer",
            "tar_at_far_0.01",
            "tar_at_far_0.001",
            "accuracy_at_fixed_threshold",
            "mean_accuracy_missed_counted_wrong",
        ],
    )
    out.print(f"written: {out_dir / 'summary.json'}, " + ", ".join(summary["plots"]))


@eval_group.command("identify")
@images_option("Folder-per-person photo set (e.g. LFW's images/).")
@out_option("eval-identify")
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of the enrolled / left-out split."
)
@workers_option
@json_option
@click.pass_context
def identify_cmd(
    ctx: click.Context, images: Path, out_dir: Path, seed: int, workers: int | None, as_json: bool
) -> None:
    """1:N open-set identification: CMC, FNIR at FPIR 0.1, 0.01, 0.001."""
    from facetrace.evaluation.run import run_identify

    app = app_of(ctx)
    with _progress("embedding") as progress:
        summary = run_identify(
            app.settings, images, out_dir, workers or app.settings.workers, progress, seed
        )
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    _print_rows(
        "1:N identification",
        summary["variants"],
        [
            "gallery_size",
            "mated_searches",
            "nonmated_searches",
            "rank1",
            "rank10",
            "fnir_at_fpir_0.1",
            "fnir_at_fpir_0.01",
            "fnir_at_fpir_0.001",
            "measured_fpir_at_target_0.1",
            "measured_fpir_at_target_0.01",
            "measured_fpir_at_target_0.001",
        ],
    )
    out.print(f"written: {out_dir / 'summary.json'}, " + ", ".join(summary["plots"]))


@click.command("calibrate")
@images_option("Folder-per-person photo set; every pair of photos is compared.")
@workers_option
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write it (default: the data directory, where searches use it).",
)
@click.pass_context
def calibrate_cmd(
    ctx: click.Context, images: Path, workers: int | None, output: Path | None
) -> None:
    """Fit what scores mean (score -> false match rate) on your own labelled photos."""
    from facetrace.evaluation.run import run_calibrate

    app = app_of(ctx)
    with _progress("embedding") as progress:
        fitted, path = run_calibrate(
            app.settings,
            images,
            workers or app.settings.workers,
            progress,
            app.analyzer.model,
            app.analyzer.embedder.variant,
            output,
        )
    out.print(
        f"calibration written to {path}: {fitted.impostor_pairs:,} impostor and "
        f"{fitted.genuine_pairs:,} genuine pairs ({fitted.source})"
    )
    for fmr in (1e-3, 1e-4, 1e-5, 1e-6):
        out.print(f"  FMR {fmr:g} at score {fitted.threshold_for_fmr(fmr):.4f}")
