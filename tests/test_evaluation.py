"""``facetrace eval`` and ``facetrace calibrate`` end to end on real labelled photos.

Small sets keep this quick: deepface's 580 labelled pairs (65 photos), and a
folder-per-person tree of symlinks to 80 LFW photos (nothing is copied)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli


@pytest.fixture(scope="module")
def lfw_small(faces_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lfw_small") / "people"
    images = faces_dir / "lfw" / "images"
    multi = [d for d in sorted(images.iterdir()) if len(list(d.glob("*.jpg"))) >= 4][:15]
    single = [d for d in sorted(images.iterdir()) if len(list(d.glob("*.jpg"))) == 1][:20]
    for d in multi + single:
        (root / d.name).mkdir(parents=True)
        for p in sorted(d.glob("*.jpg"))[:4]:
            (root / d.name / p.name).symlink_to(p)
    return root


def test_eval_verify_on_deepface_pairs(faces_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = [
        "--data",
        str(tmp_path / "d"),
        "eval",
        "verify",
        "--pairs",
        str(faces_dir / "deepface" / "pairs.tsv"),
        "--workers",
        "2",
        "--out",
        str(out),
        "--json",
    ]
    code, stdout, err = run_cli(*args)
    assert code == 0, err
    s = json.loads(stdout)
    assert s["pairs"] == 580 and s["same"] == 178 and s["folds"] == 10
    for v in ("plain", "flip"):
        r = s["variants"][v]
        assert r["mean_accuracy"] > 0.85 and 0 <= r["eer"] < 0.2
        assert {"tar_at_far_0.01", "tar_at_far_0.001", "std_accuracy"} <= set(r)
    assert json.loads((out / "summary.json").read_text())["pairs"] == 580
    for png in s["plots"]:
        assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # embeddings are cached: a second run embeds nothing and agrees
    code, again, _ = run_cli(*args)
    assert code == 0 and json.loads(again)["variants"] == s["variants"]


def test_eval_identify_and_calibrate(lfw_small: Path, tmp_path: Path) -> None:
    data = tmp_path / "d"
    code, stdout, err = run_cli(
        "--data",
        str(data),
        "eval",
        "identify",
        "--images",
        str(lfw_small),
        "--out",
        str(tmp_path / "out"),
        "--json",
    )
    assert code == 0, err
    s = json.loads(stdout)
    r = s["variants"]["flip"]
    assert r["gallery_size"] == 20 + 8 and r["mated_searches"] == 8 * 3
    assert r["nonmated_searches"] == 7 * 4
    assert r["rank1"] > 0.8 and r["rank10"] >= r["rank1"]
    assert 0 <= r["fnir_at_fpir_0.1"] <= 1
    assert set(s["templates"]["flip"]) == {"single", "template", "template_quality"}
    code, stdout, err = run_cli("--data", str(data), "calibrate", "--images", str(lfw_small))
    assert code == 0 and "calibration written" in stdout, err
    written = list(data.glob("calibration-*.json"))
    assert len(written) == 1
    c = json.loads(written[0].read_text())
    assert c["impostor_pairs"] == 80 * 79 // 2 - 15 * 6 and c["genuine_pairs"] == 15 * 6


def test_eval_refuses_a_bad_pairs_file(tmp_path: Path) -> None:
    bad = tmp_path / "pairs.txt"
    bad.write_text("10\t300\nA\t1\n")
    code, _, err = run_cli("--data", str(tmp_path / "d"), "eval", "verify", "--pairs", str(bad))
    assert code == 3 and "pairs.txt" in err and "Traceback" not in err


def test_eval_vectors_do_not_depend_on_the_flip_setting(faces_dir: Path, tmp_path: Path) -> None:
    """``plain`` is dlib's own vector and ``flip`` the mirrored mean, whatever the default."""
    import numpy as np

    from facetrace.embed import normalise
    from facetrace.evaluation.embeddings import embed_photos
    from facetrace.pipeline import Analyzer
    from facetrace.settings import Settings

    photo = str(sorted((faces_dir / "lfw" / "images" / "Tony_Blair").glob("*.jpg"))[0])
    got = {}
    for flip in (True, False):
        settings = Settings.load(env={}, data_dir=tmp_path / str(flip), flip=flip)
        got[flip] = embed_photos([photo], settings)
        pipeline = Analyzer.from_settings(settings).analyse_file(Path(photo)).faces[0]
        expected = "flip" if flip else "plain"
        vec = getattr(got[flip], expected)[0]
        assert np.allclose(vec, normalise(pipeline.embedding), atol=1e-5)
    assert np.allclose(got[True].plain, got[False].plain, atol=1e-6)
    assert np.allclose(got[True].flip, got[False].flip, atol=1e-6)
