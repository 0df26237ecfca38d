"""RegionVLM inside LAVIS's registry (``regionvlm.integrations.lavis``).

These tests need ``salesforce-lavis`` (1.0.2, with the transformers 4.26 / numpy < 2 it pins),
which cannot share an environment with the project's own stack: ``bash .ci/lavis_env.sh VENV``
builds that environment and runs them there. Elsewhere they are skipped.

Every comparison is exact, in one process, on the same weights: what LAVIS's entry points
(``load_model_and_preprocess``, ``load_model``, ``RunnerBase``) produce through the registered
adapters against what the project's own API produces.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

lavis = pytest.importorskip(
    "lavis", reason="needs salesforce-lavis: run `bash .ci/lavis_env.sh VENV` (the legacy LAVIS environment)"
)

import regionvlm  # noqa: E402
from regionvlm.common.errors import ConfigError  # noqa: E402

BUNDLED = Path(str(resources.files("regionvlm") / "checkpoints" / "tiny_synthetic.pth"))
REGION = "[10 12] [20 30] [33 41] [5 60] [44 44] [12 9] [30 31] [50 2] [61 60] [7 7]"


@pytest.fixture(scope="module")
def integration():
    import regionvlm.integrations.lavis as integration

    return integration


@pytest.fixture
def lavis_paths():
    """LAVIS's runner registers result_dir/output_dir once per process and refuses a second
    registration; forget them after each runner so the next test can build one."""
    from lavis.common.registry import registry

    yield registry
    for key in ("result_dir", "output_dir"):
        registry.mapping["paths"].pop(key, None)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """A small synthetic world in the real formats, with Localized Narratives preprocessed."""
    out = tmp_path_factory.mktemp("world")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "regionvlm.synthetic",
            "--out",
            str(out),
            "--num-train",
            "6",
            "--num-val",
            "3",
            "--num-test",
            "2",
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "regionvlm.data.localized_narratives",
            "--input",
            str(out / "localized_narratives" / "synthetic_train_localized_narratives.jsonl"),
            "--out",
            str(out / "annotations" / "ln_synthetic_train.json"),
            "--image-root",
            str(out / "images"),
            "--image-pattern",
            "synthetic={image_id}.png",
        ],
        check=True,
        capture_output=True,
    )
    return out


def _image() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, size=(48, 64, 3), dtype=np.uint8))


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _outputs(model, vis, txt):
    """Processors, a forward (loss per sample), a generation and scores of one model."""
    image = vis["eval"](_image()).unsqueeze(0)
    region, target = txt["eval"](REGION), txt["eval"]("A small red Circle.")
    samples = {"image": image.repeat(2, 1, 1, 1), "text_input": [region, ""], "text_output": [target, target]}
    with torch.no_grad():
        loss = model(samples, reduction="none")["loss"]
    captions = model.generate({"image": image, "text_input": [region, ""]}, num_beams=3, max_length=12)
    scores = model.score(image, [region, region], [target, "a big blue square"])
    return image, region, target, loss, captions, scores


def _write_yaml(path: Path, cfg: dict) -> Path:
    path.write_text(json.dumps(cfg))  # JSON is YAML
    return path


# ------------------------------------------------------------------------------ registry
def test_lavis_registry_holds_the_project_components_on_lavis_bases(integration):
    from lavis.common.registry import registry
    from lavis.datasets.builders.base_dataset_builder import BaseDatasetBuilder
    from lavis.models.base_model import BaseModel
    from lavis.processors.base_processor import BaseProcessor
    from lavis.runners.runner_base import RunnerBase
    from lavis.tasks.base_task import BaseTask

    from regionvlm.common.registry import registry as ours

    model_cls = registry.get_model_class("regionvlm_t5")
    assert issubclass(model_cls, BaseModel) and issubclass(model_cls, ours.get_model_class("regionvlm_t5"))
    assert set(model_cls.PRETRAINED_MODEL_CONFIG_DICT) >= {"flant5xl", "pretrain_flant5xl", "tiny"}
    for name in ("ris", "vcr", "region_captioning"):
        task = registry.get_task_class(name)
        assert issubclass(task, BaseTask) and task.project_task is ours.get_task_class(name)
    for name in ("ris_synthetic", "refcoco", "refcoco+", "refcocog", "vcr", "regionvlm_mix", "localized_narratives"):
        builder = registry.get_builder_class(name)
        assert issubclass(builder, BaseDatasetBuilder) and builder.project_builder is ours.get_builder_class(name)
    assert issubclass(registry.get_runner_class("runner_base_cpu"), RunnerBase)
    # Names LAVIS already uses keep LAVIS's component; the project's gets the prefix.
    assert integration.lavis_name("processor", "blip_caption") == "regionvlm_blip_caption"
    assert registry.get_processor_class("blip_caption").__module__.startswith("lavis.")
    caption = registry.get_processor_class("regionvlm_blip_caption")
    assert issubclass(caption, BaseProcessor) and issubclass(caption, ours.get_processor_class("blip_caption"))
    assert integration.lavis_name("task", "vqa") == "regionvlm_vqa"
    assert registry.get_task_class("vqa").__module__.startswith("lavis.")
    assert integration.lavis_name("builder", "ris_synthetic") == "ris_synthetic"
    # Registering again (a second import) changes nothing.
    before = {k: dict(v) for k, v in registry.mapping.items() if k.endswith("_name_mapping")}
    assert integration.register() == integration.NAMES
    assert {k: dict(v) for k, v in registry.mapping.items() if k.endswith("_name_mapping")} == before
    with pytest.raises(ConfigError, match="no project task 'nope'"):
        integration.lavis_name("task", "nope")


def test_the_main_package_never_imports_lavis():
    code = (
        "import sys, regionvlm, regionvlm.models\n"
        "from regionvlm.common.registry import registry\n"
        "registry.list_tasks(); registry.list_builders(); registry.list_runners()\n"
        "print(sorted(m for m in sys.modules if m == 'lavis' or m.startswith('lavis.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


# ------------------------------------------------------------------------------ models
def test_lavis_load_model_and_preprocess_equals_the_project_on_the_bundled_checkpoint(integration):
    from lavis.models import load_model, load_model_and_preprocess

    model, vis, txt = load_model_and_preprocess("regionvlm_t5", "tiny", is_eval=True)
    untrained = _outputs(model, vis, txt)
    model.load_checkpoint(str(BUNDLED))  # the bundled file: LAVIS format {"model": ..., "step": ...}
    ours, our_vis, our_txt = regionvlm.load_model_and_preprocess(
        "regionvlm_t5", "tiny", is_eval=True, checkpoint=str(BUNDLED)
    )
    assert _same_state(model, ours)
    theirs, mine = _outputs(model, vis, txt), _outputs(ours, our_vis, our_txt)
    assert torch.equal(theirs[0], mine[0]) and theirs[1:3] == mine[1:3]  # processors
    assert torch.equal(theirs[3], mine[3])  # forward
    assert theirs[4] == mine[4]  # generation
    assert torch.equal(theirs[5], mine[5])  # scores
    assert not torch.equal(untrained[3], theirs[3])  # the checkpoint was really loaded
    # LAVIS's load_model(checkpoint=...) goes through the same loader.
    assert _same_state(load_model("regionvlm_t5", "tiny", is_eval=True, checkpoint=str(BUNDLED)), ours)


def test_lavis_builds_the_paper_preset_only_from_local_weights(integration, tmp_path, monkeypatch):
    from lavis.models import load_model_and_preprocess

    from regionvlm.common.errors import MissingFileError

    monkeypatch.setenv("REGIONVLM_WEIGHTS", str(tmp_path))
    with pytest.raises(MissingFileError, match="eva_vit_g.pth|flan-t5-xl|ckpoint_RegionVLM.pth"):
        load_model_and_preprocess("regionvlm_t5", "flant5xl")
    with pytest.raises(ConfigError, match="unknown model_type 'large'"):
        load_model_and_preprocess("regionvlm_t5", "large")
    # LAVIS's own checkpoint keys are not the project's: refused, not ignored.
    from lavis.common.registry import registry

    with pytest.raises(ConfigError, match="model.finetuned"):
        registry.get_model_class("regionvlm_t5").from_config(
            {"arch": "regionvlm_t5", "model_type": "tiny", "finetuned": "model.pth"}
        )


# ------------------------------------------------------------------------------ runner
def _ris_config(world: Path, out: Path, lavis_keys: bool) -> dict:
    run = {
        "task": "ris",
        "evaluate": True,
        "device": "cpu",
        "seed": 42,
        "output_dir": str(out),
        "small_threshold": 0.0,
    }  # synthetic shapes cover 2-7 % of a scene
    if lavis_keys:
        run.update(
            {
                "runner": "runner_base_cpu",
                "test_splits": ["val"],
                "batch_size_train": 1,
                "batch_size_eval": 1,
                "num_workers": 0,
            }
        )
    return {
        "model": {"arch": "regionvlm_t5", "model_type": "tiny", "checkpoint": str(BUNDLED)},
        "datasets": {"ris_synthetic": {"world": str(world), "split": "val"}},
        "run": run,
    }


def test_lavis_runner_evaluates_ris_exactly_as_the_project_runner(integration, world, tmp_path, lavis_paths):
    from regionvlm import train as project_train

    ours = project_train.main(
        ["--cfg-path", str(_write_yaml(tmp_path / "ours.yaml", _ris_config(world, tmp_path / "ours", False)))]
    )
    logs = integration.main(
        ["--cfg-path", str(_write_yaml(tmp_path / "lavis.yaml", _ris_config(world, tmp_path / "lavis", True)))]
    )
    assert logs == {"val": ours}
    assert ours["agg_metrics"] > 50  # the bundled model finds most referred shapes (chance ~25 %)
    result_dir = Path(lavis_paths.get_path("result_dir"))
    assert result_dir.is_relative_to(tmp_path / "lavis")
    our_files = sorted(p.name for p in (tmp_path / "ours").glob("ris_*.json"))
    assert our_files and sorted(p.name for p in result_dir.glob("ris_*.json")) == our_files
    for name in our_files:
        assert (result_dir / name).read_bytes() == (tmp_path / "ours" / name).read_bytes()


def test_lavis_runner_base_on_cpu_is_refused_with_the_cpu_runner_named(integration, world, tmp_path):
    cfg = _ris_config(world, tmp_path / "lavis", True)
    cfg["run"]["runner"] = "runner_base"
    with pytest.raises(ConfigError, match="set run.runner: runner_base_cpu"):
        integration.main(["--cfg-path", str(_write_yaml(tmp_path / "lavis.yaml", cfg))])


def test_lavis_runner_trains_region_captioning_on_cpu_and_its_checkpoint_loads_everywhere(
    integration, world, tmp_path, lavis_paths
):
    from lavis.models import load_model

    cfg = {
        "model": {"arch": "regionvlm_t5", "model_type": "tiny"},
        "datasets": {
            "regionvlm_mix": {
                "region_ann": str(world / "annotations" / "ln_synthetic_train.json"),
                "coco_ann": str(world / "captions" / "coco_karpathy_train.json"),
                "coco_image_root": str(world / "images"),
                "p_coco": 1.0,
                "epoch_length": 4,
            }
        },
        "run": {
            "task": "region_captioning",
            "runner": "runner_base_cpu",
            "device": "cpu",
            "seed": 42,
            "output_dir": str(tmp_path / "lavis"),
            "evaluate": False,
            "max_epoch": 2,
            "train_splits": ["train"],
            "batch_size_train": 4,
            "batch_size_eval": 1,
            "num_workers": 0,
            "lr_sched": "linear_warmup_cosine_lr",
            "init_lr": 1e-3,
            "min_lr": 1e-4,
            "warmup_lr": 1e-4,
            "warmup_steps": 1,
            "weight_decay": 0.01,
        },
    }
    runner = integration.main(["--cfg-path", str(_write_yaml(tmp_path / "train.yaml", cfg))])
    assert runner.task.datasets["regionvlm_mix"]["train"].epoch == 1  # the datasets saw LAVIS's epochs
    saved = Path(runner.output_dir) / "checkpoint_1.pth"  # one step per epoch, two epochs
    state = torch.load(saved, map_location="cpu")
    assert {"model", "optimizer", "config", "epoch"} <= set(state) and state["epoch"] == 1  # LAVIS's format
    theirs = load_model("regionvlm_t5", "tiny", is_eval=True, checkpoint=str(saved))
    mine = regionvlm.load_model("regionvlm_t5", "tiny", is_eval=True, checkpoint=str(saved))
    fresh = regionvlm.load_model("regionvlm_t5", "tiny", is_eval=True)
    assert _same_state(theirs, mine) and not _same_state(mine, fresh)  # training changed the weights
    assert all(torch.equal(theirs.state_dict()[k], v) for k, v in state["model"].items())
    assert _same_state(runner.unwrap_dist_model(runner.model).eval(), theirs)  # what the runner trained
    image = torch.zeros(1, 3, 64, 64)
    assert theirs.generate({"image": image, "text_input": [REGION]}) == mine.generate(
        {"image": image, "text_input": [REGION]}
    )
