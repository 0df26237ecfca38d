"""The web demo in a real headless browser (Debian's chromium driven by Playwright).

Starts ``python -m regionvlm.demo`` with the tiny model on a free localhost port, uploads an
image, draws a box and a point region on the canvas, asks about both and reads the answer
from the page; the answer must equal the Python API's for the region texts the page shows.
Screenshots go to a temporary folder; the README's docs/images/demo_*.png are refreshed with
``REGIONVLM_SCREENSHOT_DIR=docs/images REGIONVLM_DEMO_CHECKPOINT=regionvlm/checkpoints/tiny_synthetic.pth
python -m pytest tests/test_demo_browser.py`` (the checkpoint gives real answers).

Skipped only where no browser is installed (``apt-get install -y chromium`` and
``pip install playwright``).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
# README screenshots: REGIONVLM_SCREENSHOT_DIR=docs/images (a test run never rewrites tracked files).
SHOTS = Path(os.environ.get("REGIONVLM_SCREENSHOT_DIR") or tempfile.mkdtemp(prefix="regionvlm-shots-"))
CHECKPOINT = os.environ.get("REGIONVLM_DEMO_CHECKPOINT") or None

if not Path(CHROMIUM).exists():
    pytest.skip(
        "no browser installed: apt-get install -y chromium (Debian's /usr/bin/chromium)", allow_module_level=True
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="no browser driver installed: pip install playwright")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The demo as a user starts it, on a free port; stopped (by its pid) afterwards."""
    import gradio  # noqa: F401  (the demo's dependency: a missing gradio is a failure, not a skip)

    port = free_port()
    log = tmp_path_factory.mktemp("demo") / "server.log"
    cmd = [sys.executable, "-m", "regionvlm.demo", "--model-type", "tiny", "--seed", "0", "--port", str(port)]
    if CHECKPOINT:
        cmd += ["--checkpoint", CHECKPOINT]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the demo exited with {proc.returncode}:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the demo did not answer on {url} within 90 s:\n{log.read_text()}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def page(server):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900}, user_agent="regionvlm-test")
            pg = context.new_page()
            pg.set_default_timeout(30_000)
            pg.goto(server)
            pg.wait_for_selector("#upload input[type=file]", state="attached")
            yield pg
        finally:
            browser.close()


def click_canvas(page, fx: float, fy: float) -> None:
    """Click at a fraction of the canvas once nothing covers it (gradio overlays a component
    while its event runs), then wait until the redrawn canvas has loaded."""
    img = page.locator("#canvas img").first
    img.scroll_into_view_if_needed()
    box = img.bounding_box()
    x, y = box["x"] + box["width"] * fx, box["y"] + box["height"] * fy
    page.wait_for_function(
        "([x, y]) => { const i = document.querySelector('#canvas img');"
        " return i && i.complete && document.elementFromPoint(x, y) === i; }",
        arg=[x, y],
    )
    old = img.get_attribute("src")
    page.mouse.click(x, y)
    page.wait_for_function(
        "old => { const i = document.querySelector('#canvas img'); return i && i.src !== old && i.complete; }", arg=old
    )


def regions_on_page(page):
    text = page.locator("#regions textarea").input_value()
    return dict(re.findall(r"^\[(\d+)\] [^:]+: (.*)$", text, flags=re.M))


def expected_answer(image: Image.Image, region_texts, question: str) -> str:
    """The Python API's answer for the region texts the page shows (same model, same seed)."""
    from regionvlm import Region
    from regionvlm.chat import load_dialogue_model
    from regionvlm.dialogue import Conversation

    model, vis, txt = load_dialogue_model("tiny", checkpoint=CHECKPOINT, device="cpu", seed=0)
    conv = Conversation(model, image, vis, txt)
    for text in region_texts:
        cells = np.array(re.findall(r"\[(\d+) (\d+)\]", text), dtype=np.float64)
        # 10 distinct points are kept as they are (in order), so the same text comes back
        conv.add_region(Region.from_points((cells + 0.5) / 100))
        assert conv.region_text(len(conv.regions)) == text
    return conv.ask(question)


@pytest.mark.slow
@pytest.mark.browser
def test_upload_draw_ask_and_read_the_answer(page, tmp_path):
    from regionvlm.synthetic.scenes import render_scene

    scene = tmp_path / "scene.png"
    Image.fromarray(render_scene(np.random.default_rng(7)).image).save(scene)
    page.set_input_files("#upload input[type=file]", str(scene))
    page.wait_for_selector("#canvas img")
    page.wait_for_function("document.querySelector('#canvas img').complete")

    # a box: two opposite corners
    click_canvas(page, 0.15, 0.62)
    click_canvas(page, 0.62, 0.95)
    regions = regions_on_page(page)
    assert list(regions) == ["1"] and len(re.findall(r"\[\d+ \d+\]", regions["1"])) == 10
    listing = page.locator("#regions textarea").input_value()
    corners = re.match(r"\[1\] box \((\d+), (\d+)\)-\((\d+), (\d+)\): ", listing)
    assert corners and np.allclose(
        [int(v) for v in corners.groups()], [0.15 * 64, 0.62 * 64, 0.62 * 64, 0.95 * 64], atol=1.0
    )

    # a point region: two clicks, then "Add region"
    page.get_by_label("points", exact=True).check()
    page.wait_for_function("document.querySelector('#status').innerText.includes('Add region')")
    click_canvas(page, 0.72, 0.12)
    click_canvas(page, 0.80, 0.22)
    page.click("#add-region")
    page.wait_for_function("document.querySelector('#regions textarea').value.includes('[2] points')")
    regions = regions_on_page(page)
    assert list(regions) == ["1", "2"]
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "demo_regions.png"), full_page=True)

    question = "Is [1] left of [2]?"
    page.fill("#question textarea", question)
    page.click("#send")
    page.wait_for_selector("#chat [data-testid=bot]")
    answers = page.locator("#chat [data-testid=bot]").all_inner_texts()
    assert page.locator("#chat [data-testid=user]").all_inner_texts() == [question]
    page.screenshot(path=str(SHOTS / "demo_chat.png"), full_page=True)

    expected = expected_answer(Image.open(scene).convert("RGB"), [regions["1"], regions["2"]], question)
    assert [" ".join(a.split()) for a in answers] == [" ".join(expected.split())]

    # a reference to a region that does not exist is an error message on the page, not an answer
    page.fill("#question textarea", "what about [5]?")
    page.click("#send")
    page.wait_for_function("document.querySelector('#status').innerText.includes('refers to no region')")
    assert page.locator("#chat [data-testid=bot]").count() == 1
