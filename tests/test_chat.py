"""Terminal chat: region commands, the REPL, and the real command driven through a pipe."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from regionvlm.chat import ChatSession, load_dialogue_model, parse_region_command, run_repl
from regionvlm.common.errors import InputError
from regionvlm.dialogue import Conversation
from regionvlm.models import RANDOM_WEIGHTS_WARNING

SIZE = (64, 48)  # (width, height) of the test image


@pytest.fixture
def files(tmp_path, rgb_image):
    image = tmp_path / "scene.png"
    rgb_image.save(image)
    mask = np.zeros((48, 64), dtype=np.uint8)
    mask[10:20, 5:25] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    Image.fromarray(mask[:10]).save(tmp_path / "small_mask.png")
    Image.fromarray(np.zeros_like(mask)).save(tmp_path / "empty_mask.png")
    (tmp_path / "not_an_image.png").write_text("hello")
    return tmp_path


def test_region_commands_parse_pixels(files):
    box = parse_region_command("box 8 12 32 24", SIZE)
    assert box.kind == "box" and np.allclose(box.data, [8 / 64, 12 / 48, 32 / 64, 24 / 48])
    pts = parse_region_command("points 16 24 32.5 0", SIZE)
    assert pts.kind == "points" and np.allclose(pts.data, [[0.25, 0.5], [32.5 / 64, 0.0]])
    trace = parse_region_command("SCRIBBLE 0 0 64 48 10 10", SIZE)
    assert trace.kind == "trace" and np.allclose(trace.data[1], [1.0, 1.0])
    mask = parse_region_command(f"mask {files / 'mask.png'}", SIZE)
    assert mask.kind == "mask" and mask.data.shape == (48, 64) and mask.data.sum() == 200


@pytest.mark.parametrize(
    "line, message",
    [
        ("box 1 2 3", r"box: usage `box x0 y0 x1 y1` \(4 pixel coordinates\), got 3 numbers"),
        ("box 30 2 10 20", r"x0 < x1 and y0 < y1"),
        ("box 1 2 3 x", r"box: 'x' is not a number"),
        ("box 1 2 3 nan", r"box: 'nan' is not a finite number"),
        ("box 0 0 65 10", r"inside the 64x48 image"),
        ("points 1 2 3", r"points: usage `points x y \[x y \.\.\.\]`.*got 3 numbers"),
        ("points", r"got 0 numbers"),
        ("scribble -1 2 3 4", r"inside the 64x48 image"),
        ("mask", r"mask: usage `mask PATH.png`"),
        ("mask {d}/missing.png", r"mask: file '.*missing.png' not found"),
        ("mask {d}/small_mask.png", r"is 64x10 but the image is 64x48"),
        ("mask {d}/empty_mask.png", r"no non-zero pixel"),
        ("mask {d}/not_an_image.png", r"mask '.*not_an_image.png' is not an image that PIL can read"),
        ("circle 1 2 3", r"not a region command"),
    ],
)
def test_bad_region_input_is_one_clear_error(files, line, message):
    with pytest.raises(InputError, match=message):
        parse_region_command(line.format(d=files), SIZE)


def test_session_commands(tiny_model_and_processors, rgb_image, files):
    model, vis, txt = tiny_model_and_processors
    session = ChatSession(Conversation(model, rgb_image, vis["eval"], txt["eval"]), {"max_len": 4})
    assert session.handle("regions") == (["no regions yet (add one with box, points, scribble or mask)"], True)
    out, go = session.handle("box 8 12 32 24")
    assert go and out[0].startswith("[1] box (8, 12)-(32, 24): [") and out[0].endswith(session.conv.region_text(1))
    out, _ = session.handle("box 8 12")
    assert out == ["error: box: usage `box x0 y0 x1 y1` (4 pixel coordinates), got 2 numbers."]
    assert len(session.conv.regions) == 1
    assert session.handle("describe 2")[0][0].startswith("error: [2] (region id) refers to no region")
    assert session.handle("describe one")[0][0].startswith("error: describe: usage `describe N`")
    assert session.handle("what is [4]?")[0][0].startswith("error: [4] in 'what is [4]?' refers to no region")
    answer, _ = session.handle("what is [1]?")
    assert len(answer) == 1 and not answer[0].startswith("error")
    assert session.handle("help")[0][0].lstrip().startswith("box x0 y0 x1 y1")
    assert session.handle("") == ([], True)
    assert session.handle("reset") == (["conversation reset: no regions, no turns"], True)
    assert session.conv.regions == [] and session.conv.turns == []
    assert session.handle("quit") == ([], False)


def test_repl_stops_at_quit_and_at_end_of_input(tiny_model_and_processors, rgb_image):
    import io

    model, vis, txt = tiny_model_and_processors
    session = ChatSession(Conversation(model, rgb_image, vis["eval"], txt["eval"]), {"max_len": 4})
    out = io.StringIO()
    run_repl(session, io.StringIO("regions\nquit\nregions\n"), out, interactive=False)
    assert out.getvalue().count("no regions yet") == 1
    out = io.StringIO()
    run_repl(session, io.StringIO("regions"), out, interactive=True)  # no newline at the end, then EOF
    assert out.getvalue().startswith("Type `help`") and "> no regions yet" in out.getvalue()


@pytest.mark.slow
def test_chat_command_through_a_pipe(files, tiny_model_and_processors):
    """`python -m regionvlm.chat` with the tiny model, stdin a pipe; answers equal the API's.

    The shared fixture model is the same model: the tiny preset built after torch.manual_seed(0)."""
    script = (
        "\n".join(
            [
                "box 8 12 32 24",
                "points 1 2 3",
                f"mask {files / 'mask.png'}",
                "scribble 40 5 50 10 60 20",
                "regions",
                "describe 1",
                "Is [1] above [2]?",
                "what about [9]?",
                "quit",
                "describe 1",  # after quit: never read
            ]
        )
        + "\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "regionvlm.chat",
            "--image",
            str(files / "scene.png"),
            "--model-type",
            "tiny",
            "--seed",
            "0",
            "--max-length",
            "6",
        ],
        input=script,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stdout.splitlines()

    model, vis, txt = tiny_model_and_processors
    conv = Conversation(model, Image.open(files / "scene.png"), vis["eval"], txt["eval"], seed=0)
    conv.add_region(parse_region_command("box 8 12 32 24", SIZE))
    conv.add_region(parse_region_command(f"mask {files / 'mask.png'}", SIZE))
    conv.add_region(parse_region_command("scribble 40 5 50 10 60 20", SIZE))
    expected = [
        RANDOM_WEIGHTS_WARNING,  # the tiny preset without a checkpoint: said on the first line
        f"[1] box (8, 12)-(32, 24): {conv.region_text(1)}",
        "error: points: usage `points x y [x y ...]` (pairs of pixel coordinates), got 3 numbers.",
        f"[2] mask (200 pixels): {conv.region_text(2)}",
        f"[3] scribble (3 clicked): {conv.region_text(3)}",
        f"[1] box (8, 12)-(32, 24): {conv.region_text(1)}",
        f"[2] mask (200 pixels): {conv.region_text(2)}",
        f"[3] scribble (3 clicked): {conv.region_text(3)}",
        conv.describe(1, max_len=6),
        conv.ask("Is [1] above [2]?", max_len=6),
        "error: [9] in 'what about [9]?' refers to no region: this conversation has regions [1]..[3]. "
        "Add a region first (points, box, scribble or mask).",
    ]
    assert lines == expected


@pytest.mark.slow
def test_chat_startup_errors_are_one_line(tmp_path, files):
    proc = subprocess.run(
        [sys.executable, "-m", "regionvlm.chat", "--image", str(tmp_path / "nope.jpg")],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: image '{tmp_path / 'nope.jpg'}' not found (check --image)."
    proc = subprocess.run(
        [sys.executable, "-m", "regionvlm.chat", "--image", str(files / "scene.png"), "--options", "model.max_txt_len"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error: --options expects key=value")
    assert "Traceback" not in proc.stderr


def test_load_dialogue_model_checkpoint_and_options(tmp_path, tiny_model):
    """--checkpoint and --options reach the model; the same seed gives the same random weights."""
    import torch

    random_model, _, _ = load_dialogue_model("tiny", device="cpu", seed=0)
    assert random_model.random_weights
    assert torch.equal(random_model.query_tokens, tiny_model.query_tokens)
    assert torch.equal(random_model.t5_model.lm_head.weight, tiny_model.t5_model.lm_head.weight)
    state = {**tiny_model.trainable_state_dict(), "t5_proj.bias": torch.full_like(tiny_model.t5_proj.bias, 0.25)}
    torch.save({"model": state}, tmp_path / "ckpt.pth")  # the tiny preset has no released files: a whole model
    model, vis, txt = load_dialogue_model(
        "tiny", checkpoint=str(tmp_path / "ckpt.pth"), options=["model.max_txt_len=40"], device="cpu", seed=0
    )
    assert torch.equal(model.t5_proj.bias, state["t5_proj.bias"]) and not model.random_weights
    assert model.max_txt_len == 40 and not model.training
    assert vis.image_size == model.image_size == 64 and txt("[12 34] [5 6]") == "[12 34] [5 6]"
