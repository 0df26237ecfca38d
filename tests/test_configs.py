"""Configuration at the boundary: the registry finds built-ins on its own, every shipped config
loads with strict key checking, its data paths follow the documented layout, and misspelt or
mistyped settings stop with the key and what is allowed."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import regionvlm
from regionvlm.common.config import Config
from regionvlm.common.errors import ConfigError
from regionvlm.common.registry import BUILTINS, KINDS, Registry, registry

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "configs").rglob("*.yaml"))
# The data layout the README documents (relative to $REGIONVLM_DATA); every path of a
# shipped config lies under one of these.
DOCUMENTED_LAYOUT = (
    "refer",
    "coco/images/train2014",
    "coco/images",
    "coco/annotations",
    "coco_gt",
    "sam_proposals",
    "vcr",
    "okvqa/annotations",
    "gqa/annotations",
    "gqa/images",
    "localized_narratives/ann",
    "visual_genome/ann",
    "laion115m",
    "VGPhraseCut_v0",
)


@pytest.mark.slow
def test_registry_lookup_needs_no_other_import():
    code = (
        "from regionvlm import registry; import sys; "
        "assert registry.get_model_class('regionvlm_t5').__name__ == 'RegionVLMT5'; "
        "assert 'regionvlm.tasks.ris' not in sys.modules; "
        "assert registry.get_task_class('ris').__name__ == 'RISTask'; "
        "print(len(registry.list_builders()))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) == len(BUILTINS["builder"])


def test_missing_name_is_a_config_error_listing_what_exists():
    with pytest.raises(ConfigError, match=r"no task named 'riss'; registered tasks: .*\bris\b.*\bvcr\b"):
        registry.get_task_class("riss")
    fresh = Registry()
    fresh.register_model("x")(int)
    with pytest.raises(ConfigError, match="already registered"):
        fresh.register_model("x")(float)


def test_builtin_table_is_what_the_modules_register():
    for module in pkgutil.walk_packages(regionvlm.__path__, "regionvlm."):
        if module.name.startswith(("regionvlm.demo", "regionvlm.integrations")) or module.name.endswith("__main__"):
            continue  # need optional packages / run a command when imported
        importlib.import_module(module.name)
    for kind in KINDS:
        assert sorted(registry.mapping[f"{kind}_name_mapping"]) == sorted(BUILTINS[kind]), kind
        for name, module in BUILTINS[kind].items():
            assert registry.mapping[f"{kind}_name_mapping"][name].__module__ == module


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(REPO)))
def test_every_shipped_config_loads_strictly_with_documented_paths(path, tmp_path, monkeypatch):
    data = tmp_path / "data"
    monkeypatch.setenv("REGIONVLM_DATA", str(data))
    monkeypatch.setenv("REGIONVLM_WEIGHTS", str(tmp_path / "weights"))
    cfg = Config(path)
    assert cfg.task_class().Settings.parse(cfg.run_cfg, "run", also_known=cfg.runner_class().Settings.keys())
    for value in _strings(OmegaConf.to_container(cfg.datasets_cfg, resolve=True)):
        if value.startswith(str(data)):
            relative = Path(value).relative_to(data).as_posix()
            assert any(relative == p or relative.startswith(p + "/") for p in DOCUMENTED_LAYOUT), (path, relative)


def test_the_readme_shows_every_documented_data_folder():
    readme = (REPO / "README.md").read_text()
    for prefix in DOCUMENTED_LAYOUT:
        assert prefix in readme, f"the README's data layout does not show {prefix}"


def _strings(obj):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)


RIS_CFG = REPO / "configs" / "blip2" / "eval" / "ris_refcoco_val.yaml"
TRAIN_CFG = REPO / "configs" / "blip2" / "train" / "LN_ft.yaml"


@pytest.mark.parametrize(
    "cfg_path, option, message",
    [
        (RIS_CFG, "run.thresold=0.1", r"`run.thresold` \(did you mean `threshold`\?\)"),
        (TRAIN_CFG, "run.max_epochs=3", r"`run.max_epochs` \(did you mean `max_epoch`\?\)"),
        (TRAIN_CFG, "run.treshold=0.5", r"unknown setting\(s\) `run.treshold`"),
        (RIS_CFG, "model.max_txt_lenn=40", r"`model.max_txt_lenn` \(did you mean `max_txt_len`\?\)"),
        (RIS_CFG, "model.vit.dept=3", r"`model.vit.dept` \(did you mean `depth`\?\)"),
        (RIS_CFG, "datasets.refcoco.splitby=unc", r"`datasets.refcoco.splitby` \(did you mean `splitBy`\?\)"),
        (TRAIN_CFG, "run.max_epoch=abc", r"`run.max_epoch` must be an integer, got 'abc'"),
        (TRAIN_CFG, "run.batch_size_train=0", r"`run.batch_size_train` must be >= 1, got 0"),
        (TRAIN_CFG, "run.accum_grad_iters=-2", r"`run.accum_grad_iters` must be >= 1"),
        (TRAIN_CFG, "run.init_lr=fast", r"`run.init_lr` must be a number"),
        (TRAIN_CFG, "run.betas=[0.9]", r"`run.betas` must have 2 entries"),
        (TRAIN_CFG, "run.save_format=npz", r"`run.save_format` must be one of \['pth', 'safetensors'\]"),
        (TRAIN_CFG, "run.resume_ckpt_path=''", r"`run.resume_ckpt_path` is empty"),
        (TRAIN_CFG, "model.precision=fp8", r"`model.precision` must be one of"),
        (TRAIN_CFG, "model.num_query_token=0", r"`model.num_query_token` must be >= 1, got 0"),
        (TRAIN_CFG, "datasets.regionvlm_mix.num_points=ten", r"`datasets.regionvlm_mix.num_points` must be an integer"),
        (RIS_CFG, "run.protocol=quick", r"`run.protocol` must be one of \['fast', 'official'\]"),
        (RIS_CFG, "run.task=riss", r"no task named 'riss'"),
        (RIS_CFG, "datasets.refcocoo.split=val", r"no builder named 'refcocoo'"),
    ],
)
def test_bad_settings_stop_before_any_work(cfg_path, option, message):
    with pytest.raises(ConfigError, match=message):
        Config(cfg_path, [option])


def test_yaml_floats_written_as_strings_are_numbers():
    """YAML 1.1 reads `5e-6` as a string; the settings read it as the number it is."""
    cfg = Config(TRAIN_CFG, ["run.init_lr=5e-6"])
    from regionvlm.runners.runner_base import RunnerSettings

    settings = RunnerSettings.parse(cfg.run_cfg, also_known=cfg.task_class().Settings.keys())
    assert settings.init_lr == pytest.approx(5e-6) and settings.betas == (0.9, 0.999)
