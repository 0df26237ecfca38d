"""The region benchmarks shard under ``torchrun``: two processes (gloo on CPU) split the units
of work and end with the same result files, byte for byte, as one process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_region_classification import minilm_dir

from regionvlm.quickstart import bundled_checkpoint
from regionvlm.synthetic.world import write_world

pytestmark = [pytest.mark.slow, pytest.mark.ddp]

REPO = Path(__file__).resolve().parents[1]
MODEL = f"{{arch: regionvlm_t5, model_type: tiny, checkpoint: '{bundled_checkpoint()}'}}"


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ddp_world")
    write_world(root, num_train=0, num_val=0, num_test=8, seed=2)
    return root


def config(task: str, world: Path, path: Path) -> Path:
    """One YAML per benchmark on the synthetic world (REC, region captions, region classes, RIS)."""
    datasets = {
        "rec": f"{{rec_synthetic: {{world: '{world}', split: test}}}}",
        "captioning": f"{{synthetic_captions: {{world: '{world}', split: test}}}}",
        "region_classification": f"{{synthetic_regions: {{world: '{world}', split: test}}}}",
        "ris": f"{{ris_synthetic: {{world: '{world}', split: test}}}}",
    }[task]
    run = {
        "rec": "",
        "captioning": ", num_beams: 1, max_len: 6, min_len: 1, batch_size_eval: 4, num_workers: 0, "
        "skip_metrics: [METEOR, SPICE]",
        "region_classification": ", num_beams: 1, max_len: 4, batch_size_eval: 4, num_workers: 0, "
        f"similarity_model: '{minilm_dir()}'",
        "ris": ", small_threshold: 0.0",
    }[task]
    path.write_text(
        f"model: {MODEL}\ndatasets: {datasets}\nrun: {{task: {task}, evaluate: true, device: cpu, seed: 5{run}}}\n"
    )
    return path


RESULT = {
    "rec": "rec_synthetic_unc_test.json",
    "captioning": "captioning_synthetic_captions_test.json",
    "region_classification": "region_classification_synthetic_test.json",
    "ris": "ris_synthetic_unc_test.json",
}


@pytest.mark.parametrize("task", list(RESULT))
def test_two_ranks_write_what_one_process_writes(task, world, tmp_path):
    cfg = config(task, world, tmp_path / f"{task}.yaml")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}

    def run(launcher, out: Path) -> None:
        proc = subprocess.run(
            [*launcher, str(REPO / "train.py"), "--cfg-path", str(cfg), "--options", f"run.output_dir={out}"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]

    run([sys.executable], tmp_path / "one")
    run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"], tmp_path / "two")
    one, two = tmp_path / "one" / RESULT[task], tmp_path / "two" / RESULT[task]
    assert two.read_bytes() == one.read_bytes()
    assert not list((tmp_path / "two").glob("*.partial.*"))  # every rank's progress log is removed
