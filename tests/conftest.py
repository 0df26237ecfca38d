"""Shared fixtures: the tiny random-weight model (built once per session) and images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(scope="session")
def tiny_model_and_processors():
    from regionvlm import load_model_and_preprocess

    torch.manual_seed(0)
    return load_model_and_preprocess("regionvlm_t5", "tiny", is_eval=True)


@pytest.fixture(scope="session")
def tiny_model(tiny_model_and_processors):
    return tiny_model_and_processors[0]


@pytest.fixture
def rgb_image() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, size=(48, 64, 3), dtype=np.uint8))


@pytest.fixture(scope="session")
def train_world(tmp_path_factory):
    """The synthetic world's training split (12 scenes), preprocessed (see tiny_training.py)."""
    from tiny_training import write_train_world

    return write_train_world(tmp_path_factory.mktemp("train_world"))


@pytest.fixture
def small_disk(tmp_path):
    """``mount(size) -> folder``: a real file system of ``size`` that fills up like a real disk
    (see full_disk.py); unmounted after the test, skipped where mounting is not permitted."""
    from full_disk import mount_tmpfs, unmount

    mounted = []

    def mount(size: str, name: str = "disk"):
        mounted.append(mount_tmpfs(tmp_path / name, size))
        return mounted[-1]

    yield mount
    for point in reversed(mounted):
        unmount(point)
