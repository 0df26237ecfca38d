"""The run scripts run where they are called: relative paths given to them (``--out``, data
roots, ``run.output_dir=...``) are the caller's, never the repository's. A stand-in
interpreter (``PYTHON``) records the folder it was started in and its arguments."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "run_scripts" / "blip2"


@pytest.fixture
def recorder(tmp_path):
    """A fake interpreter: ``-c`` (the GPU count) prints 0, anything else records cwd and argv."""
    record = tmp_path / "record.txt"
    fake = tmp_path / "fake_python"
    fake.write_text(
        "#!/usr/bin/env bash\n"
        'if [ "$1" = "-c" ]; then echo 0; exit 0; fi\n'
        f'{{ pwd; printf "%s\\n" "$@"; }} > {record}\n'
    )
    fake.chmod(0o755)
    return fake, record


def call(script: Path, args, caller: Path, fake: Path, record: Path, **env):
    caller.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, "PYTHON": str(fake), **env}
    proc = subprocess.run(["bash", str(script), *args], cwd=caller, env=full_env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = record.read_text().splitlines()
    return Path(lines[0]), lines[1:]


@pytest.mark.parametrize("script, entry", [("eval_ris.sh", "eval_RIS.py"), ("eval_rec.sh", "eval_REC.py")])
def test_eval_refer_scripts_run_in_the_callers_folder(tmp_path, recorder, script, entry):
    cwd, argv = call(
        SCRIPTS / "eval" / script, ["--out", "results/x", "--data-root", "data"], tmp_path / "me", *recorder
    )
    assert cwd == tmp_path / "me"
    assert argv == [str(REPO / entry), "--out", "results/x", "--data-root", "data"]


def test_eval_vcr_runs_in_the_callers_folder(tmp_path, recorder):
    cwd, argv = call(
        SCRIPTS / "eval" / "eval_vcr.sh", ["--split", "val"], tmp_path / "me", *recorder, NGPU="2", OUT="out/vcr"
    )
    assert cwd == tmp_path / "me"
    assert argv[:4] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    assert argv[4:] == [
        str(REPO / "eval_VCR.py"),
        "--cfg-path",
        str(REPO / "configs" / "blip2" / "eval" / "vcr_val.yaml"),
        "--data-root",
        "data/vcr",
        "--out",
        "out/vcr",
        "--split",
        "val",
    ]


def test_launch_train_runs_in_the_callers_folder(tmp_path, recorder):
    cwd, argv = call(SCRIPTS / "train" / "train_LN.sh", ["run.output_dir=out/ln"], tmp_path / "me", *recorder, NGPU="0")
    assert cwd == tmp_path / "me"
    assert argv == [
        str(REPO / "train.py"),
        "--cfg-path",
        str(REPO / "configs" / "blip2" / "train" / "LN_ft.yaml"),
        "--options",
        "run.device=cpu",
        "run.output_dir=out/ln",
    ]
