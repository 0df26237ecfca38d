"""The web demo's handlers and drawing, without a browser (and without gradio)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from regionvlm.chat import region_summary
from regionvlm.common.errors import ConfigError
from regionvlm.demo import canvas
from regionvlm.demo.app import DemoLogic, example_images, require_gradio

FAST = dict(max_len=4)


@pytest.fixture
def logic(tiny_model_and_processors):
    model, vis, txt = tiny_model_and_processors
    return DemoLogic(model, vis["eval"], txt["eval"], seed=0, generation={"max_len": 4})


@pytest.fixture
def session(logic, rgb_image):
    state, board, regions, chat, status = logic.load_image(rgb_image, 10, "inline", "official")
    assert board.size == (512, 384) and regions == "" and chat == [] and "64x48" in status
    return state


def canvas_index(x, y):
    """Canvas pixel of image pixel (x, y) for the 64x48 test image (shown 8x larger)."""
    return [x * 8, y * 8]


def test_no_image_yet(logic):
    assert logic.load_image(None, 10, "inline", "official")[0] is None
    assert logic.click(None, [1, 1], "box", 10)[-1] == "Upload an image first."
    assert logic.ask(None, "hi", [], "inline", "official")[-1] == "Upload an image first."


def test_two_clicks_make_a_box(logic, session):
    _, board, regions, status = logic.click(session, canvas_index(40, 30), "box", 10)
    assert session.pending and regions == "" and status.startswith("1 click(s)")
    session, board, regions, status = logic.click(session, canvas_index(8, 6), "box", 10)
    assert session.pending == [] and status.startswith("Added region [1]")
    region = session.conv.region(1).region
    assert region.kind == "box"
    np.testing.assert_allclose(region.data, [8.0625 / 64, 6.0625 / 48, 40.0625 / 64, 30.0625 / 48])  # pixel centres
    assert regions == region_summary(session.conv, 1)
    # the box outline is drawn in region 1's colour on the enlarged canvas
    assert tuple(np.asarray(board)[49, 20 * 8]) == canvas.colour(1)


def test_points_and_scribble_regions(logic, session):
    session, _, _, status = logic.add_pending(session, "points", 10)
    assert status.startswith("No clicks to add")
    for x, y in [(5, 5), (20, 10)]:
        logic.click(session, canvas_index(x, y), "points", 10)
    session, _, regions, status = logic.add_pending(session, "points", 6)
    assert status.startswith("Added region [1]") and session.conv.region(1).region.kind == "points"
    assert len(session.conv.region(1).points) == 6  # the K slider applies to new regions
    for x, y in [(30, 30), (40, 35), (50, 40)]:
        logic.click(session, canvas_index(x, y), "scribble", 10)
    session, _, regions, _ = logic.add_pending(session, "scribble", 10)
    assert session.conv.region(2).region.kind == "trace"
    assert regions.splitlines()[1].startswith("[2] scribble (3 clicked): ")
    logic.click(session, canvas_index(1, 1), "points", 10)
    session, _, _ = logic.clear_pending(session, "points")
    assert session.pending == []


def test_degenerate_box_is_an_error_message(logic, session):
    logic.click(session, canvas_index(10, 10), "box", 10)
    _, _, regions, status = logic.click(session, canvas_index(10, 20), "box", 10)
    assert status.startswith("error: box: need x0 < x1") and regions == ""


def test_ask_describe_and_reset(logic, session):
    logic.click(session, canvas_index(8, 6), "box", 10)
    logic.click(session, canvas_index(40, 30), "box", 10)
    session, chat, text, status = logic.ask(session, "what is [2]?", [], "inline", "official")
    assert chat == [] and text == "what is [2]?" and "refers to no region" in status
    session, chat, text, status = logic.ask(session, "what is [1]?", [], "inline", "official", **FAST)
    assert text == "" and [m["role"] for m in chat] == ["user", "assistant"]
    assert chat[1]["content"] == session.conv.turns[-1].answer
    session, chat, status = logic.describe(session, 1.0, chat, "let", "qa", **FAST)
    assert chat[-2]["content"] == "(describe [1])" and session.conv.turns[-1].kind == "describe"
    assert session.conv.layout == "let" and session.conv.history == "qa"
    assert logic.describe(session, None, chat, "inline", "official")[-1].startswith("error: a region id")
    session, chat, status = logic.reset_chat(session)
    assert chat == [] and session.conv.turns == [] and len(session.conv.regions) == 1
    session, _, regions, chat, _ = logic.clear_regions(session, "box")
    assert regions == "" and session.conv.regions == []


def test_canvas_coordinates():
    assert canvas.display_scale((64, 48)) == 8.0 and canvas.display_scale((2000, 100)) == 1.0
    assert canvas.to_image_pixels([0, 0], 8.0, (64, 48)) == (0.0625, 0.0625)
    assert canvas.to_image_pixels([9999, -5], 8.0, (64, 48)) == (64.0, 0.0)


def test_example_images(tmp_path):
    files = example_images(None)
    assert len(files) == 4 and all(Image.open(f).size == (64, 64) for f in files)
    with pytest.raises(ConfigError, match="not a directory"):
        example_images(str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="no .png"):
        example_images(str(tmp_path))
    Image.new("RGB", (8, 8)).save(tmp_path / "a.jpg")
    (tmp_path / "notes.txt").write_text("x")
    Image.new("RGB", (8, 8)).save(tmp_path.parent / "elsewhere.png")
    (tmp_path / "out.png").symlink_to(tmp_path.parent / "elsewhere.png")  # leads out of the folder
    os.mkfifo(tmp_path / "pipe.png")  # not a file: never opened
    (tmp_path / "folder.png").mkdir()
    assert example_images(str(tmp_path)) == [str(tmp_path / "a.jpg")]


def test_missing_gradio_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio -> ImportError
    with pytest.raises(ConfigError, match=r"pip install -e \.\[demo\]"):
        require_gradio()


@pytest.mark.slow
def test_demo_command_rejects_bad_examples_in_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "regionvlm.demo", "--examples", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: --examples: '{tmp_path / 'nope'}' is not a directory of images."


@pytest.mark.slow
def test_the_demo_serves_the_example_images_and_nothing_else_below_their_folder(tmp_path):
    """A running server on loopback, asked over HTTP for files of ``--examples DIR``: the example
    images are readable, every other file below DIR (a text file, a non-image, a sub-folder's
    image, the folder itself, a link leading out, '..' paths) is refused."""
    import socket
    import time
    import urllib.error
    import urllib.parse
    import urllib.request

    examples = tmp_path / "examples"
    (examples / "sub").mkdir(parents=True)
    Image.new("RGB", (32, 32), "red").save(examples / "shown.png")
    Image.new("RGB", (32, 32), "blue").save(examples / "sub" / "deeper.png")
    (examples / "secret.txt").write_text("not for the web")
    (examples / "backup.png.bak").write_bytes((examples / "shown.png").read_bytes())
    (tmp_path / "outside.txt").write_text("outside")
    (examples / "link.png").symlink_to(tmp_path / "outside.txt")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "server.log"
    cmd = [sys.executable, "-m", "regionvlm.demo", "--model-type", "tiny", "--examples", str(examples)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    with open(log, "w") as out:
        proc = subprocess.Popen(
            cmd + ["--port", str(port)], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
    base = f"http://127.0.0.1:{port}"

    def status(path: str) -> int:
        url = f"{base}/gradio_api/file={urllib.parse.quote(path, safe='/')}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(base + "/", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.5)
        assert status(str(examples / "shown.png")) == 200
        for path in (
            examples / "secret.txt",
            examples / "backup.png.bak",
            examples / "sub" / "deeper.png",
            examples / "link.png",
            tmp_path / "outside.txt",
            examples,
        ):
            assert status(str(path)) in (403, 404), path
        for raw in (f"{examples}/sub/../secret.txt", f"{examples}/shown.png/../secret.txt"):
            assert status(raw) in (403, 404), raw
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
