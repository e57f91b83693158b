"""The whole service in a real browser, as a new user would use it.

Set-up from the shell exactly as the README says (``facetrace admin create-org``,
``create-user`` for the first administrator, ``facetrace serve`` as its own process),
then everything else in Debian's Chromium driven by Playwright: the administrator signs
in, creates two reviewers, ingests a gallery (a zip with a folder per person) and
watches the job finish, opens a case, uploads a probe photo and searches; the two
reviewers each confirm the top candidate, the second without seeing the first's note;
the case shows the confirmed identification. Finally
``facetrace audit verify`` checks the chain the whole session wrote.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import run_cli

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ADMIN_PASSWORD = "first administrator 1"
PASSWORDS = {"rob": "reviewer password 2", "rita": "reviewer password 3"}
PEOPLE = ["Abdullah_Gul", "Adrien_Brody", "Aaron_Peirsol"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    if not CHROMIUM.is_file():
        reason = "Debian's chromium is not installed: run `make test` (scripts/system-deps.sh)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    data = tmp_path / "data"
    code, _, err = run_cli("--data", str(data), "admin", "create-org", "Field Office")
    assert code == 0, err
    code, _, err = run_cli(
        "--data", str(data), "admin", "create-user", "Field Office", "chief", "--role", "admin",
        "--name", "Chief Examiner", stdin=ADMIN_PASSWORD + "\n",
    )  # fmt: skip
    assert code == 0, err
    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "facetrace", "--data", str(data), "serve", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "FACETRACE_WORKERS": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            urllib.request.urlopen(url + "/login", timeout=1)  # noqa: S310 - loopback
            break
        except OSError:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            time.sleep(0.2)
    try:
        yield url, data
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def gallery_zip(faces_dir: Path, path: Path) -> dict[str, Path]:
    """A zip with the first photo of each person in a folder of their name; the probes."""
    probes = {}
    with zipfile.ZipFile(path, "w") as z:
        for person in PEOPLE:
            photos = sorted((faces_dir / "lfw" / "images" / person).glob("*.jpg"))
            z.write(photos[0], f"{person}/{photos[0].name}")
            probes[person] = photos[1]
    return probes


def sign_in(page, url: str, username: str, password: str) -> None:  # type: ignore[no-untyped-def]
    page.goto(url + "/login")
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("#sign-in")
    page.wait_for_load_state()
    assert "/login" not in page.url, page.content()[:2000]


def sign_out(page) -> None:  # type: ignore[no-untyped-def]
    page.click("#logout-form button")
    page.wait_for_url("**/login**")


def decide(page, outcome: str, note: str) -> None:  # type: ignore[no-untyped-def]
    form = page.locator("form.review-form").first
    form.locator("select[name=outcome]").select_option(outcome)
    form.locator("[name=note]").fill(note)
    form.locator("button", has_text="Record decision").click()
    page.wait_for_load_state()


def test_set_up_ingest_search_and_confirm_in_a_real_browser(
    server: tuple[str, Path], faces_dir: Path, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    url, data = server
    probes = gallery_zip(faces_dir, tmp_path / "missing-persons-registry.zip")
    shots = tmp_path / "screens"
    shots.mkdir()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(60_000)

            # The administrator creates two users and ingests a gallery.
            sign_in(page, url, "chief", ADMIN_PASSWORD)
            for username, role in (("rob", "reviewer"), ("rita", "reviewer")):
                page.goto(url + "/admin/users")
                page.fill("#new-username", username)
                page.fill("#new-user-form [name=display_name]", username.title())
                page.fill("#new-user-form [name=password]", PASSWORDS[username])
                page.select_option("#new-role", role)
                page.click("#create-user")
                page.wait_for_load_state()
                assert page.locator("body").inner_text().count(username) >= 1
            page.goto(url + "/galleries")
            page.fill("#gallery", "registry")
            page.set_input_files("#archive", str(tmp_path / "missing-persons-registry.zip"))
            page.click("#upload-and-ingest")
            page.wait_for_load_state()
            page.locator("tr.job .job-status", has_text="done").wait_for(timeout=180_000)
            page.screenshot(path=str(shots / "1-gallery.png"))
            page.goto(url + "/galleries")
            assert "registry" in page.locator("body").inner_text()

            # The administrator opens a case and searches with a probe photo.
            page.goto(url + "/")
            page.fill("#new-case-form [name=number]", "FO-2026-031")
            page.select_option("#new-case-form [name=purpose]", "missing")
            page.fill("#new-case-form [name=description]", "photo handed in by a neighbour")
            page.click("#create-case")
            page.wait_for_url("**/cases/*")
            page.set_input_files("#search-form [name=photo]", str(probes["Abdullah_Gul"]))
            page.click("#upload-and-search")
            page.wait_for_url("**/searches/*", timeout=120_000)
            result_url = page.url
            assert "not an identification" in page.locator("#lead-notice").inner_text()
            first = page.locator("article.candidate").first
            assert "Abdullah_Gul" in first.locator(".subject").inner_text()
            for img in first.locator("img").all():
                img.scroll_into_view_if_needed()
                page.wait_for_function(
                    "(el) => el.complete && el.naturalWidth > 0", arg=img.element_handle()
                )
            page.screenshot(path=str(shots / "2-results.png"), full_page=True)
            sign_out(page)

            # The first reviewer records a potential candidate.
            sign_in(page, url, "rob", PASSWORDS["rob"])
            page.goto(result_url)
            decide(page, "potential candidate", "same ear shape; mole under the left eye")
            status = page.locator(".review-status").first.inner_text()
            assert status == "awaiting second review"
            sign_out(page)

            # The second decides without seeing the first note, and confirms.
            sign_in(page, url, "rita", PASSWORDS["rita"])
            page.goto(result_url)
            assert "mole under the left eye" not in page.locator("body").inner_text()
            decide(page, "potential candidate", "agree: ear and hairline")
            assert page.locator(".review-status").first.inner_text() == "confirmed"
            assert "mole under the left eye" in page.locator("body").inner_text()
            page.screenshot(path=str(shots / "3-confirmed.png"), full_page=True)
            page.locator("a", has_text="FO-2026-031").first.click()
            page.wait_for_url("**/cases/*")
            identified = page.locator("#identifications-table").inner_text()
            assert "Abdullah_Gul" in identified and "registry" in identified
        finally:
            browser.close()
    code, out, err = run_cli("--data", str(data), "audit", "verify")
    assert code == 0, err
    assert "every link verified" in out
    if not os.environ.get("FACETRACE_KEEP_SCREENS"):
        shutil.rmtree(shots, ignore_errors=True)
