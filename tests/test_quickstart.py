"""The main job end to end on a few held-out scenes (table, figure, summary, ablation)."""

import json

import pytest
import torch

from regionvlm import quickstart


@pytest.mark.slow
def test_quickstart_runs_on_a_small_world_and_writes_its_outputs(tmp_path, tiny_model, capsys):
    ckpt = tmp_path / "tiny.pth"
    torch.save({"model": tiny_model.trainable_state_dict()}, ckpt)
    summary = quickstart.main(
        ["--out", str(tmp_path / "qs"), "--num-test", "3", "--checkpoint", str(ckpt), "--device", "cpu"]
    )
    out = capsys.readouterr().out
    assert "zero-shot RIS selection accuracy" in out and "EMPTY region text" in out
    assert (tmp_path / "qs" / "quickstart.png").stat().st_size > 1000
    assert json.loads((tmp_path / "qs" / "summary.json").read_text()) == summary
    assert summary["ris_queries"] == len(json.loads((tmp_path / "qs" / "captions.json").read_text()))
    assert 0.0 <= summary["ris_empty_prompt_accuracy"] <= 100.0 and summary["ris_chance"] > 0
    ablation = json.loads((tmp_path / "qs" / "ris_empty_prompt" / "ris-empty_synthetic_unc_test.json").read_text())
    for query in ablation["queries"]:  # no region text: every candidate gets the same score
        assert max(query["scores"]) - min(query["scores"]) < 1e-5


def test_quickstart_missing_checkpoint_is_explained(tmp_path, capsys):
    from regionvlm.common.cli import run

    with pytest.raises(SystemExit) as exc:
        run(
            quickstart.main,
            ["--out", str(tmp_path / "qs"), "--num-test", "1", "--checkpoint", str(tmp_path / "no.pth")],
        )
    assert exc.value.code == 2
    assert "--retrain" in capsys.readouterr().err


def test_export_weights_keeps_only_the_model_in_half_precision(tmp_path, tiny_model):
    full = {"model": tiny_model.trainable_state_dict(), "optimizer": {"state": {}}, "step": 7}
    torch.save(full, tmp_path / "ckpt.pth")
    out = quickstart.export_weights(tmp_path / "ckpt.pth", tmp_path / "tiny.pth")
    state = torch.load(out, weights_only=True)
    assert set(state) == {"model", "step"} and state["step"] == 7
    assert all(v.dtype == torch.float16 for v in state["model"].values() if v.is_floating_point())
    name = "query_tokens"
    assert torch.allclose(state["model"][name].float(), full["model"][name], atol=1e-3)


@pytest.mark.slow
def test_bundled_checkpoint_reads_regions(tmp_path, capsys):
    """The shipped tiny model grounds the region prompt: RIS far above chance on held-out
    scenes, and back to chance when the region text is EMPTY (the README's claim, in small)."""
    summary = quickstart.main(["--out", str(tmp_path / "qs"), "--num-test", "15", "--device", "cpu"])
    assert summary["ris_accuracy"] >= 85.0, summary
    assert abs(summary["ris_empty_prompt_accuracy"] - summary["ris_chance"]) <= 12.0, summary
    assert summary["caption_colour"] >= 80.0, summary
    # REC on the scenes' objects and region captions, through the benchmarks' own tasks
    assert summary["rec_accuracy"] >= 90.0 and summary["rec_empty_prompt_accuracy"] <= summary["rec_chance"] + 1e-6
    rec = json.loads((tmp_path / "qs" / "rec" / "rec_synthetic_unc_test.json").read_text())
    assert rec["metrics"]["acc@0.5"] == pytest.approx(summary["rec_accuracy"], abs=0.05)
    if summary["caption_CIDEr"] is not None:  # pycocoevalcap's metrics need Java
        assert summary["caption_CIDEr"] > summary["caption_empty_prompt_CIDEr"], summary
        assert summary["caption_METEOR"] > summary["caption_empty_prompt_METEOR"], summary
    captions = json.loads((tmp_path / "qs" / "captions" / "captioning_synthetic_captions_test.json").read_text())
    assert len(captions["captions"]) == summary["ris_queries"]


def test_without_java_the_main_job_runs_and_says_what_it_could_not_compute(tmp_path, capsys, monkeypatch):
    """pycocoevalcap's tokenizer and METEOR run Java; without it every other number is still
    reported, the caption metrics say why they are missing, and nothing crashes."""
    import shutil

    which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None if name == "java" else which(name, *a, **k))
    summary = quickstart.main(["--out", str(tmp_path / "qs"), "--num-test", "4", "--device", "cpu"])
    out = capsys.readouterr().out
    assert summary["caption_CIDEr"] is None and summary["caption_METEOR"] is None
    reason = " ".join(summary["caption_metrics_not_computed"].values())
    assert "Java is not installed" in reason and "not computed: Java is not installed" in out
    assert summary["ris_accuracy"] is not None and summary["rec_accuracy"] is not None
    assert summary["caption_exact_match"] is not None
