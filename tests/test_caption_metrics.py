"""COCO caption metrics: the package's numbers, the checks before them, SPICE offline.

Tests that score need Java (pycocoevalcap's tokenizer and METEOR); they are skipped, with
that reason, only where no ``java`` is on PATH. METEOR's Java process takes ~15 s of CPU to
start: one is shared by the two computations that need it, every other scoring test skips
METEOR and takes a second or two.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from regionvlm.common.errors import ConfigError, InputError, MissingFileError
from regionvlm.tasks import caption_metrics
from regionvlm.tasks.caption_metrics import score_captions, spice_unavailable_reason

requires_java = pytest.mark.skipif(
    shutil.which("java") is None,
    reason="pycocoevalcap's PTB tokenizer and METEOR need Java (apt-get install default-jre-headless)",
)

# COCO-format ground truth as in coco_karpathy_test_gt.json (real Karpathy test images and captions).
GT = {
    "images": [{"id": 391895}, {"id": 522418}, {"id": 184613}, {"id": 318219}],
    "annotations": [
        {"image_id": 391895, "caption": "A man with a red helmet on a small moped on a dirt road. ", "id": 770337},
        {"image_id": 391895, "caption": "Man riding a motor bike on a dirt road on the countryside.", "id": 771687},
        {"image_id": 391895, "caption": "A man riding on the back of a motorcycle.", "id": 772707},
        {"image_id": 522418, "caption": "A woman wearing a net on her head cutting a cake. ", "id": 681330},
        {"image_id": 522418, "caption": "A woman cutting a large white sheet cake.", "id": 686718},
        {"image_id": 522418, "caption": "A woman wearing a hair net cutting a large sheet cake.", "id": 688839},
        {"image_id": 184613, "caption": "A child holding a flowered umbrella and petting a yak.", "id": 444409},
        {"image_id": 184613, "caption": "A young man holding an umbrella next to a herd of cattle.", "id": 445028},
        {
            "image_id": 184613,
            "caption": "a young boy barefoot holding an umbrella touching the horn of a cow",
            "id": 449349,
        },
        {"image_id": 318219, "caption": "A young boy standing in front of a computer keyboard.", "id": 10612},
        {
            "image_id": 318219,
            "caption": "a little boy wearing headphones and looking at a computer monitor",
            "id": 13114,
        },
        {"image_id": 318219, "caption": "He is listening intently to the computer at school.", "id": 14030},
    ],
}
# A LAVIS result file (what the captioning task writes): one generated caption per image.
RESULTS = [
    {"caption": "a man riding a motorcycle on a dirt road", "image_id": 391895},
    {"caption": "a woman cutting a large white sheet cake", "image_id": 522418},
    {"caption": "a boy holding an umbrella next to a cow", "image_id": 184613},
    {"caption": "a young boy sitting in front of a computer", "image_id": 318219},
]
FIRST_REFERENCE = {a["image_id"]: a["caption"] for a in reversed(GT["annotations"])}


def write(path: Path, obj) -> Path:
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj), encoding="utf-8")
    return path


def run_cli(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "regionvlm.tasks.caption_metrics", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("captions")
    return write(root / "coco_karpathy_test_gt.json", GT), write(root / "test_epochbest.json", RESULTS)


@pytest.fixture(scope="module")
def shared_meteor():
    """One METEOR Java process for the whole module (it takes ~15 s of CPU to start, and
    it keeps no state between calls)."""
    from pycocoevalcap.meteor.meteor import Meteor

    return Meteor()


class NoSpice:
    """SPICE stand-in for the package's own evaluation (the real one cannot run offline)."""

    def compute_score(self, gts, res):
        return 0.0, [0.0] * len(gts)

    def method(self):
        return "SPICE"


def fast(results, gt=GT, **kw):
    """Score without METEOR (its Java start-up takes ~15 s) and without SPICE."""
    return score_captions(gt, results, skip=("METEOR", "SPICE"), **kw)


# ------------------------------------------------------------- the package's numbers
@requires_java
@pytest.mark.slow
def test_cli_prints_exactly_the_package_numbers(files, shared_meteor, monkeypatch, capfd):
    import pycocoevalcap.eval as package
    import pycocoevalcap.meteor.meteor as meteor_module
    from pycocotools.coco import COCO

    gt, results = files
    out = gt.parent / "metrics.json"
    monkeypatch.setattr(meteor_module, "Meteor", lambda: shared_meteor)
    returned = caption_metrics.main(["--gt", str(gt), "--results", str(results), "--out", str(out)])
    captured = capfd.readouterr()
    metrics = json.loads(captured.out)  # stdout is nothing but the JSON; the package's chatter went to stderr
    assert returned == metrics
    assert "PTBTokenizer" in captured.err and "ratio:" in captured.err
    assert json.loads(out.read_text()) == metrics

    # What LAVIS's evaluation gets: the package's own COCOEvalCap.evaluate on the same files.
    monkeypatch.setattr(package, "Meteor", lambda: shared_meteor)
    monkeypatch.setattr(package, "Spice", NoSpice)
    coco = COCO(str(gt))
    evaluator = package.COCOEvalCap(coco, coco.loadRes(str(results)))
    evaluator.evaluate()
    reference = {k: v for k, v in evaluator.eval.items() if k != "SPICE"}
    assert sorted(reference) == ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "CIDEr", "METEOR", "ROUGE_L"]
    for name, value in reference.items():
        assert metrics[name] == value, name
    assert 0.0 < metrics["METEOR"] < 1.0 and 0.0 < metrics["Bleu_4"] < metrics["Bleu_1"] < 1.0


@requires_java
def test_module_command_reports_spice_as_skipped_offline(files):
    gt, results = files
    proc = run_cli("--gt", str(gt), "--results", str(results), "--skip", "METEOR")
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads(proc.stdout)
    assert set(metrics) == {"Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr", "skipped"} | (
        {"SPICE"} if spice_unavailable_reason() is None else set()
    )
    assert metrics["skipped"]["METEOR"] == "skipped on request"
    if spice_unavailable_reason() is None:  # the CoreNLP jars were installed by hand: SPICE is computed
        assert isinstance(metrics["SPICE"], float) and "SPICE" not in metrics["skipped"]
    else:
        assert metrics["skipped"]["SPICE"].startswith("needs Stanford CoreNLP models downloaded on first use")


# ------------------------------------------------------------- closed-form facts
@requires_java
def test_identical_captions_score_one_and_a_wrong_caption_scores_lower():
    perfect = fast([{"image_id": i, "caption": c} for i, c in FIRST_REFERENCE.items()])
    assert perfect["Bleu_1"] == pytest.approx(1.0, abs=1e-6)
    assert perfect["Bleu_4"] == pytest.approx(1.0, abs=1e-6)
    assert perfect["ROUGE_L"] == pytest.approx(1.0)
    assert perfect["CIDEr"] > 0.0
    assert perfect["skipped"] == {"METEOR": "skipped on request", "SPICE": "skipped on request"}
    assert "METEOR" not in perfect and "SPICE" not in perfect

    wrong = {**FIRST_REFERENCE, 522418: "two dogs playing with a frisbee in a park"}
    worse = fast([{"image_id": i, "caption": c} for i, c in wrong.items()])
    for name in ("Bleu_1", "Bleu_4", "ROUGE_L", "CIDEr"):
        assert worse[name] < perfect[name], name


@requires_java
def test_results_order_and_extra_keys_do_not_matter():
    a = fast(RESULTS)
    b = fast([dict(r, instance_id=str(k)) for k, r in enumerate(reversed(RESULTS))])
    assert a == b


# ------------------------------------------------------------- SPICE
@requires_java
def test_spice_absent_is_skipped_without_any_download(monkeypatch, tmp_path):
    from pycocoevalcap.spice import get_stanford_models

    def no_network(*args, **kwargs):
        raise AssertionError("SPICE tried to download its models")

    monkeypatch.setattr(get_stanford_models, "urlretrieve", no_network)
    monkeypatch.setattr(caption_metrics, "spice_model_jars", lambda: (tmp_path / "a.jar", tmp_path / "b.jar"))
    metrics = score_captions(GT, RESULTS, skip=("METEOR",))
    assert "SPICE" not in metrics
    assert "no network" in metrics["skipped"]["SPICE"] and "a.jar, b.jar" in metrics["skipped"]["SPICE"]


@pytest.fixture
def spice_models_present(monkeypatch, tmp_path):
    jars = (write(tmp_path / "corenlp.jar", "x"), write(tmp_path / "corenlp-models.jar", "x"))
    monkeypatch.setattr(caption_metrics, "spice_model_jars", lambda: jars)
    return monkeypatch


@requires_java
def test_spice_runs_when_its_models_are_present(spice_models_present):
    import pycocoevalcap.spice.spice as spice_module

    seen = {}

    class FakeSpice:  # the real one needs the CoreNLP jars
        def compute_score(self, gts, res):
            seen["ids"] = sorted(res)
            return 0.25, [0.25] * len(res)

    spice_models_present.setattr(spice_module, "Spice", FakeSpice)
    metrics = score_captions(GT, RESULTS, skip=("METEOR",))
    assert metrics["SPICE"] == 0.25 and metrics["skipped"] == {"METEOR": "skipped on request"}
    assert seen["ids"] == sorted(g["id"] for g in GT["images"])


@requires_java
def test_cli_keeps_child_process_output_off_stdout(spice_models_present, files, capfd):
    import pycocoevalcap.spice.spice as spice_module

    class ChattySpice:  # the real SPICE jar inherits stdout, like this child process
        def compute_score(self, gts, res):
            subprocess.check_call(["echo", "chatter from a java child"])
            print("chatter from python")
            return 0.5, [0.5] * len(res)

    spice_models_present.setattr(spice_module, "Spice", ChattySpice)
    gt, results = files
    assert "Bleu_1" in caption_metrics.main(["--gt", str(gt), "--results", str(results), "--skip", "METEOR"])
    captured = capfd.readouterr()
    assert json.loads(captured.out)["SPICE"] == 0.5
    assert "chatter from a java child" in captured.err and "chatter from python" in captured.err


@requires_java
def test_a_failing_spice_run_is_reported_not_raised(spice_models_present):
    import pycocoevalcap.spice.spice as spice_module

    class BrokenSpice:
        def compute_score(self, gts, res):
            raise subprocess.CalledProcessError(1, ["java", "-jar", "spice-1.0.jar"])

    spice_models_present.setattr(spice_module, "Spice", BrokenSpice)
    metrics = score_captions(GT, RESULTS, skip=("METEOR",))
    assert "SPICE" not in metrics and "CIDEr" in metrics
    assert metrics["skipped"]["SPICE"].startswith("the SPICE jar failed (java exit code 1")


# ------------------------------------------------------------- one prediction per image
@pytest.mark.parametrize(
    "results, message",
    [
        (RESULTS[:3], r"missing: 1 \(first: \[318219\]\)"),
        (RESULTS + [{"image_id": 5, "caption": "a dog"}], r"not in the ground truth: 1 \(first: \[5\]\)"),
        (RESULTS + [RESULTS[0]], r"predicted more than once: 1 \(first: \[391895\]\)"),
        (RESULTS[1:] + [{"image_id": 5, "caption": "a"}], r"missing: 1 \(first: \[391895\]\); not in the ground truth"),
    ],
)
def test_results_must_give_one_caption_per_image(results, message):
    with pytest.raises(InputError, match="exactly one caption for each of the 4 images") as err:
        score_captions(GT, results)
    assert err.match(message)


@pytest.mark.parametrize(
    "results, message",
    [
        ({"391895": "a man"}, "must be a list"),
        (["a man"], "entry 0 must be an object"),
        ([{"image_id": 391895}], "entry 0 has no 'caption'"),
        ([{"caption": "a man"}], "entry 0 has no 'image_id'"),
        ([{"image_id": "391895", "caption": "a man"}], "'image_id' must be an integer"),
        ([{"image_id": True, "caption": "a man"}], "'image_id' must be an integer"),
        ([{"image_id": 391895, "caption": ["a man"]}], r"entry 0 \(image 391895\): 'caption' must be a string"),
        ([{"image_id": 391895, "caption": "a man\u2028on a bike"}], "reads as a new line"),
    ],
)
def test_malformed_predictions_are_refused(results, message):
    with pytest.raises(InputError, match=message):
        score_captions(GT, results)


def test_unknown_skip_is_a_config_error():
    with pytest.raises(ConfigError, match="only \\['METEOR', 'SPICE'\\] can be skipped"):
        score_captions(GT, RESULTS, skip=("CIDEr",))


def test_java_missing_says_which_metrics_need_it(monkeypatch):
    monkeypatch.setattr(caption_metrics.shutil, "which", lambda name: None)
    with pytest.raises(MissingFileError) as err:
        score_captions(GT, RESULTS)
    for word in ("PTB tokenizer", "METEOR", "SPICE", "CIDEr", "apt-get install default-jre-headless"):
        assert word in str(err.value)


# ------------------------------------------------------------- command-line errors
def assert_user_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in proc.stderr, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_cli_user_errors_exit_2_with_one_line(files, tmp_path):
    gt, results = files
    dup = write(tmp_path / "dup.json", RESULTS + [RESULTS[2]])
    assert_user_error(run_cli("--gt", str(gt), "--results", str(dup)), "predicted more than once: 1", "184613")
    broken = write(tmp_path / "broken.json", '[{"image_id": 391895, "caption": "a man"')
    assert_user_error(run_cli("--gt", str(gt), "--results", str(broken)), str(broken), "not valid JSON")
    assert_user_error(
        run_cli("--gt", str(tmp_path / "nope.json"), "--results", str(results)),
        "caption ground truth not found",
        "nope.json",
    )
    bad_gt = write(tmp_path / "gt.json", {"images": [{"id": 1}], "annotations": [{"image_id": 1, "caption": "a"}]})
    assert_user_error(run_cli("--gt", str(bad_gt), "--results", str(results)), "annotations[0] has no 'id'")


def test_cli_without_java(files, tmp_path):
    gt, results = files
    env = dict(os.environ, PATH=str(tmp_path))  # no java on this PATH
    assert_user_error(
        run_cli("--gt", str(gt), "--results", str(results), env=env), "Java is not installed", "default-jre-headless"
    )


def test_cli_rejects_unknown_skip(files):
    gt, results = files
    proc = run_cli("--gt", str(gt), "--results", str(results), "--skip", "CIDEr")
    assert proc.returncode == 2 and "invalid choice: 'CIDEr'" in proc.stderr and proc.stdout == ""
