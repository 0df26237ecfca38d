"""The catalogue of bad inputs and faults on the input side: one case per kind, each with its
exact outcome (error type and a message fragment naming the file or setting; for command
lines exit code 2, one ``error:`` line, no traceback, and which files are left).

docs/reliability.md lists the same checks as a table. Sections: image files and PIL modes,
mask images, regions/masks/RLEs, text and tokenizers, annotation and proposal files, the
preprocessing command lines, the chat and the demo.
"""

from __future__ import annotations

import builtins
import json
import os
import re
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from regionvlm.common.cli import run
from regionvlm.common.errors import ConfigError, InputError, MissingFileError
from regionvlm.data.images import open_image, read_mask_image, to_rgb
from regionvlm.processors import BlipCaptionProcessor, BlipImageEvalProcessor
from regionvlm.processors.text_processors import pre_caption
from regionvlm.region import MAX_PIXELS_ENV, Region, format_points, validate_rle


# ----------------------------------------------------------------------------- helpers
def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` grey pixels (no pixel data follows)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


def cli_error(main, argv, capsys) -> str:
    """Run a command line in-process as ``python -m`` does; it must exit 2 with one
    ``error:`` line and no traceback. Returns that line."""
    with pytest.raises(SystemExit) as info:
        run(main, argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert info.value.code == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def left(folder: Path) -> set:
    return {p.name for p in folder.iterdir()}


@pytest.fixture
def jpeg_bytes() -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


# ============================================================================ image files
def test_image_file_faults(tmp_path, jpeg_bytes, monkeypatch):
    with pytest.raises(MissingFileError, match=r"image '.*nope\.png' not found"):
        open_image(tmp_path / "nope.png")
    with pytest.raises(InputError, match=r"image '.*' is a folder; give an image file"):
        open_image(tmp_path)
    loop = tmp_path / "loop.png"
    loop.symlink_to(loop)
    with pytest.raises(InputError, match=r"cannot read image '.*loop\.png': a symbolic link loop"):
        open_image(loop)
    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(InputError, match=r"'.*text\.png' is not an image that PIL can read"):
        open_image(tmp_path / "text.png")
    (tmp_path / "half.jpg").write_bytes(jpeg_bytes[: len(jpeg_bytes) // 2])
    with pytest.raises(InputError, match=r"'.*half\.jpg' cannot be decoded; the file is damaged or truncated"):
        open_image(tmp_path / "half.jpg")
    (tmp_path / "ok.jpg").write_bytes(jpeg_bytes)
    real_open = builtins.open

    def denied(file, *args, **kwargs):
        if str(file).endswith("ok.jpg"):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", denied)  # (tests may run as root, where chmod 000 still reads)
    with pytest.raises(InputError, match=r"cannot read image '.*ok\.jpg': permission denied"):
        open_image(tmp_path / "ok.jpg")


def test_decompression_bombs_and_the_pixel_limit(tmp_path, monkeypatch):
    (tmp_path / "big.png").write_bytes(png_header(10_000, 10_000))  # PIL only warns here
    (tmp_path / "huge.png").write_bytes(png_header(20_000, 20_000))  # PIL raises here
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL's DecompressionBombWarning must not escape either
        with pytest.raises(
            InputError,
            match=r"'.*big\.png' is 10000x10000 = 100,000,000 pixels, more than the "
            r"89,478,485 allowed .*REGIONVLM_MAX_IMAGE_PIXELS",
        ):
            open_image(tmp_path / "big.png")
    with pytest.raises(InputError, match=r"'.*huge\.png' has more than twice the 89,478,485 pixels allowed"):
        open_image(tmp_path / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after the test
    monkeypatch.setenv(MAX_PIXELS_ENV, "0")  # no limit: the header passes, the missing pixel data does not
    with pytest.raises(InputError, match="damaged or truncated"):
        open_image(tmp_path / "huge.png")
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(ConfigError, match="REGIONVLM_MAX_IMAGE_PIXELS='lots' must be a whole number"):
        open_image(tmp_path / "big.png")


def test_images_that_are_not_pictures():
    with pytest.raises(InputError, match="image is 0x3 pixels; an image needs at least one pixel"):
        BlipImageEvalProcessor(image_size=8)(Image.new("RGB", (0, 3)))
    with pytest.raises(InputError, match="image: expected a PIL image, got ndarray"):
        BlipImageEvalProcessor(image_size=8)(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ConfigError, match="image_size must be a positive whole number"):
        BlipImageEvalProcessor(image_size=0)


def _palette(transparency=None) -> Image.Image:
    im = Image.new("P", (3, 1))
    im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0])
    im.putdata([0, 1, 2])
    if transparency is not None:
        im.info["transparency"] = transparency
    return im


PIL_MODES = {  # PIL's own conversion is right for these (alpha dropped, as LAVIS)
    "1": lambda: Image.fromarray(np.array([[0, 255, 0]], np.uint8)).convert("1"),
    "L": lambda: Image.fromarray(np.array([[0, 7, 255]], np.uint8)),
    "LA": lambda: Image.new("LA", (3, 1), (90, 0)),
    "La": lambda: Image.new("La", (3, 1), (90, 255)),
    "P": lambda: _palette(),
    "P+transparent index": lambda: _palette(transparency=1),
    "P+transparency bytes": lambda: _palette(transparency=b"\x00\xff\xff"),
    "PA": lambda: _palette().convert("PA"),
    "RGBA": lambda: Image.new("RGBA", (3, 1), (10, 20, 30, 0)),
    "RGBa": lambda: Image.new("RGBa", (3, 1), (10, 20, 30, 255)),
    "RGBX": lambda: Image.new("RGBX", (3, 1), (10, 20, 30, 0)),
    "CMYK": lambda: Image.new("CMYK", (3, 1), (0, 255, 0, 0)),
    "YCbCr": lambda: Image.new("YCbCr", (3, 1), (128, 90, 200)),
    "LAB": lambda: Image.new("LAB", (3, 1), (255, 128, 128)),
    "HSV": lambda: Image.new("HSV", (3, 1), (0, 0, 255)),
}


@pytest.mark.parametrize("mode", sorted(PIL_MODES))
def test_pil_modes_converted_as_lavis(mode):
    image = PIL_MODES[mode]()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. PIL's "Palette images with Transparency" warning
        rgb = to_rgb(image)
    expected = (
        image.convert("RGBA").convert("RGB")
        if mode.startswith("P+")
        else image.convert("LA" if mode == "La" else "RGBA" if mode == "RGBa" else mode).convert("RGB")
    )
    assert rgb.mode == "RGB" and np.array_equal(np.asarray(rgb), np.asarray(expected))


def test_pil_modes_that_pil_converts_wrongly_are_fixed_or_refused(tmp_path):
    grey16 = Image.fromarray(np.array([[0, 1000, 32768, 65535]], np.uint16))
    grey16.save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    # PIL's convert("RGB") clips to 255: [0, 255, 255, 255]; scaled to 8 bits instead:
    assert np.asarray(open_image(tmp_path / "g16.png"))[0, :, 0].tolist() == [0, 4, 128, 255]
    assert np.asarray(to_rgb(Image.fromarray(np.array([[0, 7, 255]], np.int32))))[0, :, 0].tolist() == [0, 7, 255]
    with pytest.raises(InputError, match=r"32-bit integer pixels ranging -1\.\.300"):
        to_rgb(Image.fromarray(np.array([[-1, 7, 300]], np.int32)))
    with pytest.raises(InputError, match=r"floating-point pixels \(PIL mode F\)"):
        to_rgb(Image.fromarray(np.array([[0.0, 0.5]], np.float32)))


def test_animations_use_the_first_frame_and_exif_is_applied_only_on_request(tmp_path):
    frames = [Image.new("RGB", (4, 4), (200 * (i == 0), 0, 200 * (i > 0))) for i in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    assert np.asarray(open_image(tmp_path / "anim.gif"))[0, 0].tolist() == list(frames[0].getpixel((0, 0)))
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = image.getexif()
    exif[274] = 6  # stored sideways, shown rotated 90 degrees
    image.save(tmp_path / "phone.jpg", exif=exif)
    assert open_image(tmp_path / "phone.jpg").size == (40, 20)  # datasets: the stored pixels
    assert open_image(tmp_path / "phone.jpg", exif=True).size == (20, 40)  # chat/demo: as the user sees it


# ============================================================================ mask images
def test_mask_image_modes(tmp_path):
    pal = Image.new("P", (2, 1))
    pal.putpalette([0, 0, 0, 0, 0, 0])  # index 1 is black: the colour would lose the region
    pal.putdata([0, 1])
    pal.save(tmp_path / "pal.png")
    assert read_mask_image(tmp_path / "pal.png").tolist() == [[0, 1]]
    Image.fromarray(np.array([[[1, 0, 0], [0, 0, 0]]], np.uint8)).save(tmp_path / "red.png")
    assert read_mask_image(tmp_path / "red.png").tolist() == [[1, 0]]  # convert("L") would give [[0, 0]]
    Image.new("RGBA", (2, 2)).save(tmp_path / "alpha.png")
    with pytest.raises(InputError, match=r"'.*alpha\.png' has the PIL mode 'RGBA' .* one-channel PNG"):
        read_mask_image(tmp_path / "alpha.png")
    Image.fromarray(np.array([[np.nan, 1]], np.float32)).save(tmp_path / "nan.tif")
    with pytest.raises(InputError, match=r"'.*nan\.tif' holds NaN"):
        read_mask_image(tmp_path / "nan.tif")


def test_sam_import_refuses_masks_that_are_not_binary(tmp_path, capsys):
    from regionvlm import proposals

    folder = tmp_path / "png" / "img1"
    folder.mkdir(parents=True)
    Image.fromarray(np.array([[0, 128], [255, 0]], np.uint8)).save(folder / "0.png")
    message = cli_error(
        proposals.main,
        ["--import-png-dir", str(tmp_path / "png"), "--out", str(tmp_path / "out"), "--no-progress"],
        capsys,
    )
    assert "0.png' is not a binary mask: values [0, 128, 255]" in message
    assert not (tmp_path / "out").exists() or not left(tmp_path / "out")


# ============================================================================ regions, masks, RLEs
EYE_RLE = {"size": [4, 4], "counts": "01400000"}  # the 4x4 identity, as pycocotools encodes it
RLE_CASES = {
    "list runs too short": ({"size": [4, 4], "counts": [1, 2]}, "RLE runs cover 3 pixels, but its size 4x4 has 16"),
    "string runs too short": ({"size": [4, 4], "counts": "12"}, "RLE runs cover 3 pixels"),
    "size of another image": ({"size": [8, 8], "counts": EYE_RLE["counts"]}, "cover 16 pixels, but its size 8x8"),
    "corrupt characters": ({"size": [4, 4], "counts": "!!garbage~"}, r"corrupt \(it holds characters outside"),
    "non-ASCII": ({"size": [4, 4], "counts": "é"}, r"corrupt \(it holds non-ASCII characters\)"),
    "ends mid-number": ({"size": [4, 4], "counts": "0140000P"}, "ends in the middle of a number"),
    "negative runs": ({"size": [4, 4], "counts": [-3, 19]}, "must be non-negative whole numbers"),
    "fractional runs": ({"size": [4, 4], "counts": [1.5, 14.5]}, "must be non-negative whole numbers"),
    "counts of a wrong type": ({"size": [4, 4], "counts": 16}, "list of run lengths or a compressed string"),
    "negative size": ({"size": [-1, 4], "counts": [0]}, r"'size' must be \[height, width\]"),
    "size not a pair": ({"size": [1, 2, 3], "counts": [6]}, r"'size' must be \[height, width\]"),
    "no counts": ({"size": [4, 4]}, "a COCO RLE is a dict with 'size'"),
    "gigantic size": ({"size": [100_000, 100_000], "counts": [10]}, "10,000,000,000 pixels, more than"),
}


@pytest.mark.parametrize("case", sorted(RLE_CASES))
def test_malformed_rles_are_refused_not_decoded_into_garbage(case):
    rle, message = RLE_CASES[case]
    with pytest.raises(InputError, match=message):
        Region.from_mask(rle)


def test_a_valid_rle_still_decodes():
    assert Region.from_mask(EYE_RLE).data.tolist() == np.eye(4, dtype=bool).tolist()
    assert validate_rle({"size": [4, 4], "counts": [1, 2, 13]})["size"] == [4, 4]


MASK_CASES = {
    "3-D": (np.zeros((2, 2, 3)), r"expected a 2-D \(H, W\) array or a COCO RLE dict, got shape \(2, 2, 3\)"),
    "strings": (np.array([["a", "b"]]), "expected bool or numbers, got dtype <U1"),
    "a file name": ("mask.png", "expected a 2-D .* got str"),
    "all False": (np.zeros((4, 4), bool), "the mask is empty"),
    "NaN": (np.array([[np.nan, 1.0]]), "contains NaN or infinity"),
    "probabilities": (np.array([[0.1, 0.9]]), r"holds the non-zero values 0\.1, 0\.9\. Threshold it first"),
    "negative values": (np.array([[-1, 0]]), "holds the non-zero values -1"),
}


@pytest.mark.parametrize("case", sorted(MASK_CASES))
def test_masks_that_are_not_binary_masks(case):
    mask, message = MASK_CASES[case]
    with pytest.raises(InputError, match=message):
        Region.from_mask(mask)


REGION_CASES = {
    "NaN point": (lambda: Region.from_points([[np.nan, 0.5]]), "NaN or infinity"),
    "infinite box": (lambda: Region.from_box([0, 0, np.inf, 1]), "NaN or infinity"),
    "fractional image size": (lambda: Region.from_points([[1, 2]], image_size=(10.7, 5)), "whole pixels"),
    "infinite image size": (lambda: Region.from_points([[1, 2]], image_size=(np.inf, 5)), "whole pixels"),
    "trace of words": (lambda: Region.from_trace("ab", clip=True), "trace: expected numbers"),
    "k as text": (lambda: Region.from_points([[0.1, 0.1]]).to_text("3"), "positive whole number"),
    "k too large": (
        lambda: Region.from_box([0, 0, 1, 1]).to_text(10**9, np.random.default_rng(0)),
        r"positive whole number \(at most 128\)",
    ),
    "rng not a Generator": (lambda: Region.from_box([0, 0, 1, 1]).to_text(rng=0), "numpy Generator"),
    "unknown kind": (lambda: Region("circle"), "region kind must be one of"),
    "raw data": (lambda: Region("points", np.array([[2.0, 0.5]])), r"an \(N, 2\) float array in \[0, 1\]"),
    "points outside [0, 1]": (lambda: format_points(np.array([[1.5, 0.2]])), r"normalized to \[0, 1\]"),
    "points NaN": (lambda: format_points(np.array([[np.nan, 0.2]])), "finite"),
}


@pytest.mark.parametrize("case", sorted(REGION_CASES))
def test_bad_region_arguments(case):
    make, message = REGION_CASES[case]
    with pytest.raises(InputError, match=message):
        make()


def test_segmentations_of_annotation_files():
    from regionvlm.data.refer import decode_segmentation

    with pytest.raises(InputError, match=r"ann 7: polygon\(s\) \[0\] need an even number \(>= 6\)"):
        decode_segmentation([[0, 0, 1, 1]], 4, 4, what="ann 7")  # 2 points
    with pytest.raises(InputError, match="ann 7: polygon coordinates must be finite"):
        decode_segmentation([[0, 0, np.nan, 1, 2, 2]], 4, 4, what="ann 7")
    with pytest.raises(InputError, match="ann 7: the RLE runs cover 3 pixels"):
        decode_segmentation({"size": [4, 4], "counts": [1, 2]}, 4, 4, what="ann 7")
    with pytest.raises(InputError, match="ann 7: the image is 1000000x1000000"):
        decode_segmentation([[0, 0, 1, 0, 1, 1]], 10**6, 10**6, what="ann 7")


# ============================================================================ text and tokenizers
@pytest.mark.slow
def test_text_that_cannot_be_tokenized():
    with pytest.raises(InputError, match="caption must be a string, got NoneType"):
        BlipCaptionProcessor()(None)
    with pytest.raises(InputError, match=r"character 2 is the lone surrogate '\\ud800'"):
        pre_caption("ab\ud800cd")
    with pytest.raises(ConfigError, match="max_words must be a positive whole number"):
        BlipCaptionProcessor(max_words=0)
    assert pre_caption("word " * 10_000) == " ".join(["word"] * 50)  # long text: cut to max_words
    assert pre_caption("a\x00b\x07c") == "a\x00b\x07c"  # control characters: the tokenizers' rule
    from regionvlm.models.tokenizers import qformer_tokenizer, t5_tokenizer

    assert qformer_tokenizer()("a\x00b").input_ids == qformer_tokenizer()("ab").input_ids  # BERT drops them
    assert t5_tokenizer()("a\x00b").input_ids.count(t5_tokenizer().unk_token_id) == 1  # T5: <unk>


@pytest.mark.parametrize("which", ["t5", "qformer"])
def test_tokenizer_folders_must_hold_a_real_tokenizer(tmp_path, which):
    from regionvlm.models import tokenizers

    load = tokenizers.t5_tokenizer if which == "t5" else tokenizers.qformer_tokenizer
    shipped = tokenizers.asset_dir("flan-t5" if which == "t5" else "bert-base-uncased")
    setting = f"model.{which}_tokenizer"
    config_only = tmp_path / "config_only"
    config_only.mkdir()
    (config_only / "tokenizer_config.json").write_text((shipped / "tokenizer_config.json").read_text())
    vocab = "tokenizer.json" if which == "t5" else "vocab.txt"
    with pytest.raises(InputError, match=rf"folder '.*config_only' has no vocabulary file \({vocab} or .*`{setting}`"):
        load(str(config_only))  # transformers alone would build a tokenizer of ~100 special tokens
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / vocab).write_bytes(os.urandom(3000) if which == "t5" else b"\xff\xfe" * 1000)
    with pytest.raises(InputError, match=rf"cannot load the .* from '.*damaged' \(`{setting}`\)"):
        load(str(damaged))
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(InputError, match=rf"'.*a_file' is a file; `{setting}` must name a folder"):
        load(str(tmp_path / "a_file"))
    with pytest.raises(MissingFileError, match=rf"not found at '.*nowhere'. .*`{setting}`"):
        load(str(tmp_path / "nowhere"))


def test_a_tokenizer_with_a_tiny_vocabulary_is_refused(tmp_path):
    from regionvlm.models.tokenizers import qformer_tokenizer

    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n")
    with pytest.raises(InputError, match=r"is not usable: only 6 entries"):
        qformer_tokenizer(str(tmp_path))


# ============================================================================ annotation and proposal files
def test_refer_files(tmp_path):
    import pickle

    from regionvlm.data.refer import load_refer

    folder = tmp_path / "refcoco"
    folder.mkdir()
    ref = {"ref_id": 1, "ann_id": 7, "image_id": 1, "split": "val", "sentences": [{"raw": "a cat", "sent_id": 1}]}
    (folder / "refs(unc).p").write_bytes(pickle.dumps([ref]))
    instances = folder / "instances.json"
    instances.write_bytes(b'{"images": [\xff]}')
    with pytest.raises(InputError, match=r"instances file '.*instances\.json' \(set by `data_root`\) is not UTF-8"):
        load_refer(tmp_path, "refcoco", "unc", "val")
    image = {"id": 1, "file_name": "a.jpg", "height": 4, "width": 4}
    bad_id = {"id": "x", "image_id": 1, "segmentation": []}
    instances.write_text(json.dumps({"images": [image], "annotations": [bad_id]}))
    with pytest.raises(InputError, match=r"annotations\[0\] needs integer id and image_id, got 'x'"):
        load_refer(tmp_path, "refcoco", "unc", "val")
    instances.write_text(json.dumps({"images": [dict(image, height=0)], "annotations": []}))
    with pytest.raises(InputError, match=r"images\[0\] \(id 1\) has the size 4x0"):
        load_refer(tmp_path, "refcoco", "unc", "val")
    instances.write_text(
        json.dumps({"images": [image], "annotations": [{"id": 7, "image_id": 1, "segmentation": [[0, 0, 3, 0, 3, 3]]}]})
    )
    (folder / "refs(unc).p").write_bytes(pickle.dumps([dict(ref, ref_id="first")]))
    with pytest.raises(InputError, match=r"ref #0 needs integer ref_id, ann_id and image_id, got 'first'"):
        load_refer(tmp_path, "refcoco", "unc", "val")


def test_vcr_files(tmp_path):
    from regionvlm.data.vcr import load_metadata, object_mask, read_vcr_jsonl

    item = {
        "objects": ["person"],
        "question": ["why", [0]],
        "answer_choices": [["a"]] * 4,
        "rationale_choices": [["b"]] * 4,
        "img_fn": "a.jpg",
        "metadata_fn": "a.json",
    }
    lines = tmp_path / "val.jsonl"
    lines.write_bytes(json.dumps(item).encode() + b"\n\xff\xfe\n")
    with pytest.raises(InputError, match=r"val\.jsonl:2: not UTF-8 text"):
        read_vcr_jsonl(lines, tmp_path, check_files=False)
    lines.write_bytes(b"[" * 100_000 + b"\n")
    with pytest.raises(InputError, match=r"val\.jsonl:1: JSON nested too deeply"):
        read_vcr_jsonl(lines, tmp_path, check_files=False)
    meta = {"boxes": [[0, 0, 2, 2, 1.0]], "segms": [[[[0, 0, 0], [3, 0, 0], [3, 3, 0]]]], "width": 4, "height": 4}
    with pytest.raises(InputError, match=r"segms\[0\] holds a polygon that is not a list of \[x, y\] points"):
        object_mask(meta, 0, "item 1")  # 3 numbers per point: was read as a triangle
    with pytest.raises(InputError, match=r"boxes\[0\] has a non-finite coordinate"):
        object_mask(dict(meta, segms=[[]], boxes=[[0, 0, float("nan"), 2, 1.0]]), 0, "item 1")
    (tmp_path / "big.json").write_text(json.dumps(dict(meta, width=10**6, height=10**6)))
    with pytest.raises(InputError, match=r"metadata '.*big\.json' is 1000000x1000000 = .* more than"):
        load_metadata(tmp_path / "big.json", 1, "item 1")


def test_region_annotation_files(tmp_path):
    from regionvlm.datasets.region_annotations import RegionAnnotations

    path = tmp_path / "ann.json"
    path.write_bytes(b'[{"image_path": "caf\xe9.jpg"}]')
    with pytest.raises(
        InputError, match=r"region annotation file '.*ann\.json' \(set by `region_ann`\) is not UTF-8 text"
    ):
        RegionAnnotations([path])
    with pytest.raises(InputError, match=r"region annotation file '.*' \(set by `region_ann`\) is a folder"):
        RegionAnnotations([tmp_path])
    path.write_text('[{"image_path": "a.jpg", "sent_to_points": {"a \\ud800 dog": [[0.1, 0.2]]}}]')
    with pytest.raises(InputError, match=r"entry \[0\] chunk text is not valid Unicode"):
        RegionAnnotations([path])
    path.write_text('[{"image_path": "", "sent_to_points": {"a dog": [[0.1, 0.2]]}}]')
    with pytest.raises(InputError, match="needs a non-empty string 'image_path'"):
        RegionAnnotations([path])


PROPOSAL_HEADER = {
    "format": "regionvlm-proposals",
    "version": 1,
    "image": "a.jpg",
    "height": 4,
    "width": 4,
    "source": {},
    "masks": [],
}
PROPOSAL_CASES = {
    "version not a number": ({"version": "x"}, "'version' must be a whole number"),
    "no height": ({"height": None}, "'height' and 'width' must be positive whole numbers"),
    "negative height": ({"height": -4}, "'height' and 'width' must be positive whole numbers"),
    "masks not a list": ({"masks": 5}, "'masks' must be a list of records, got int"),
    "score not a number": ({"masks": [{"segmentation": EYE_RLE, "score": "high"}]}, "mask 0 has the score 'high'"),
    "truncated RLE": ({"masks": [{"segmentation": {"size": [4, 4], "counts": "12"}}]}, "mask 0: the RLE runs cover 3"),
    "RLE as a list of runs": ({"masks": [{"segmentation": {"size": [4, 4], "counts": [1, 2]}}]}, "mask 0: the RLE"),
}


@pytest.mark.parametrize("case", sorted(PROPOSAL_CASES))
def test_proposal_files(tmp_path, case):
    from regionvlm.data.proposals import read_proposals

    change, message = PROPOSAL_CASES[case]
    (tmp_path / "a.json").write_text(json.dumps({**PROPOSAL_HEADER, **change}))
    with pytest.raises(InputError, match=r"'.*a\.json'.*" + message):
        read_proposals(tmp_path / "a.json")


def test_writing_proposals_refuses_what_json_or_masks_cannot_hold(tmp_path):
    from regionvlm.data.proposals import ProposalSet, save_image_proposals

    with pytest.raises(InputError, match="scores must be finite numbers or None, got \\[nan\\]"):
        save_image_proposals(tmp_path, "a.jpg", [np.eye(4, dtype=bool)], [float("nan")])
    with pytest.raises(InputError, match="a.jpg: mask 0: contains NaN"):
        save_image_proposals(tmp_path, "a.jpg", [np.full((4, 4), np.nan)], [0.5])
    with pytest.raises(InputError, match=r"proposal mask 0: expected a 2-D"):
        ProposalSet.from_masks([np.zeros((2, 2, 2))])
    assert left(tmp_path) == set()


def test_web_caption_samples_with_bad_images_are_skipped_with_the_reason(jpeg_bytes):
    from regionvlm.datasets.web_captions import decode_sample

    with pytest.raises(ValueError, match=r"the \.png image has more than twice"):
        decode_sample({"png": png_header(20_000, 20_000), "txt": b"a dog"})
    with pytest.raises(ValueError, match=r"the \.jpg image cannot be decoded"):
        decode_sample({"jpg": jpeg_bytes[:200], "txt": b"a dog"})
    with pytest.raises(ValueError, match="the caption is not valid Unicode"):
        decode_sample({"jpg": jpeg_bytes, "json": b'{"caption": "a \\ud800"}'})


# ============================================================================ data that disagrees with its files
def test_an_image_whose_size_is_not_its_annotations_is_refused(tmp_path):
    """refer instances.json, VCR metadata: the image read is checked against the recorded size;
    a swapped width and height names the EXIF convention (dataset images: stored pixels)."""
    from test_refer import IMAGES, write_refer_fixture

    from regionvlm.data.refer import load_refer
    from regionvlm.data.vcr import read_vcr_jsonl
    from regionvlm.datasets.ris_datasets import RISDataset
    from regionvlm.datasets.vcr_datasets import VCRDataset

    roots = write_refer_fixture(tmp_path / "refer")
    name, height, width = IMAGES[1]
    Image.new("RGB", (height, width)).save(roots["image_root"] / name)  # turned by 90 degrees
    Image.new("RGB", (10, 10)).save(roots["image_root"] / IMAGES[2][0])
    ds = RISDataset(load_refer(roots["data_root"], "refcoco", "unc", "val"), roots["image_root"], roots["proposals"])
    with pytest.raises(
        InputError,
        match=rf"image '.*{name}' is 40x56 pixels but '.*instances\.json' \(image 1\) says "
        r"56x40.*Width and height are swapped.*EXIF orientation ignored",
    ):
        ds.load_image(1)
    with pytest.raises(InputError, match=r"is 10x10 pixels but .*says 64x48; .*Use the images the annotation file"):
        ds.load_image(2)

    item = {
        "objects": ["person"],
        "question": ["why", [0]],
        "answer_choices": [["a"]] * 4,
        "rationale_choices": [["b"]] * 4,
        "img_fn": "a.jpg",
        "metadata_fn": "a.json",
        "answer_label": 0,
        "rationale_label": 0,
    }
    (tmp_path / "val.jsonl").write_text(json.dumps(item) + "\n")
    (tmp_path / "a.json").write_text(json.dumps({"boxes": [[0, 0, 2, 2, 1.0]], "segms": [[]], "width": 8, "height": 6}))
    Image.new("RGB", (8, 5)).save(tmp_path / "a.jpg")
    items, _ = read_vcr_jsonl(tmp_path / "val.jsonl", tmp_path)
    with pytest.raises(InputError, match=r"image file '.*a\.jpg' is 8x5 pixels but its metadata '.*a\.json' says 8x6"):
        VCRDataset(items, tmp_path)[0]


def test_visual_genome_images_of_another_size_are_dropped_and_listed(tmp_path):
    from regionvlm.data.visual_genome import preprocess_visual_genome

    (tmp_path / "VG_100K").mkdir()
    for image_id, size in ((1, (20, 10)), (2, (20, 10))):
        Image.new("RGB", size).save(tmp_path / "VG_100K" / f"{image_id}.jpg")
    regions = [
        {"id": i, "regions": [{"image_id": i, "phrase": "a dog", "x": 1, "y": 1, "width": 4, "height": 4}]}
        for i in (1, 2)
    ]
    image_data = [
        {"image_id": 1, "width": 20, "height": 10, "url": "x/VG_100K/1.jpg"},
        {"image_id": 2, "width": 10, "height": 20, "url": "x/VG_100K/2.jpg"},
    ]
    (tmp_path / "regions.json").write_text(json.dumps(regions))
    (tmp_path / "image_data.json").write_text(json.dumps(image_data))
    report = preprocess_visual_genome(
        tmp_path / "regions.json", tmp_path / "out.json", tmp_path, tmp_path / "image_data.json", progress=False
    )
    assert report.images_written == 1 and report.images_dropped["size_mismatch"] == 1
    assert re.search(
        r"image 2 '.*2\.jpg' is 20x10 pixels but '.*image_data\.json' says 10x20.*swapped", report.problems[0]
    )
    assert [e["image_id"] for e in json.loads((tmp_path / "out.json").read_text())] == ["1"]


def test_blank_region_captions_are_skipped_and_counted_never_trained(tmp_path):
    from regionvlm.data.localized_narratives import ChunkStats, narrative_chunks, parse_narrative
    from regionvlm.data.visual_genome import VGImage, VGReport, image_sent_to_points
    from regionvlm.datasets.region_annotations import RegionAnnotations

    narrative = parse_narrative(
        {
            "dataset_id": "coco",
            "image_id": "1",
            "caption": "a dog. , the end",
            "timed_caption": [
                {"utterance": "a dog.", "start_time": 0.0, "end_time": 1.0},
                {"utterance": ",", "start_time": 1.0, "end_time": 2.0},
                {"utterance": "the end", "start_time": 2.0, "end_time": 3.0},
            ],
            "traces": [
                [{"x": 0.1, "y": 0.2, "t": 0.5}, {"x": 0.3, "y": 0.3, "t": 1.5}, {"x": 0.5, "y": 0.5, "t": 2.5}]
            ],
        }
    )
    stats = ChunkStats()
    assert set(narrative_chunks(narrative, 2, stats)) == {"a dog", "the end"} and stats.blank_text == 1
    report = VGReport()
    img = VGImage("1", 10.0, 10.0, None, [("   ", 1, 1, 4, 4), ("a cat", 1, 1, 4, 4)])
    assert set(image_sent_to_points(img, 10.0, 10.0, 2, 0, 0.5, report)) == {"a cat"}
    assert report.skipped["empty_phrase"] == 1
    path = tmp_path / "ann.json"
    path.write_text(
        json.dumps(
            [
                {
                    "image_path": "a.jpg",
                    "sent_to_points": {"": [[0.1, 0.2]], "a dog": [[0.1, 0.2]], " \t": [[0.3, 0.3]]},
                },
                {"image_path": "b.jpg", "sent_to_points": {"  ": [[0.1, 0.2]]}},
            ]
        )
    )
    ann = RegionAnnotations([path])
    assert [ann.chunk_text(i) for i in range(ann.num_chunks)] == ["a dog"] and ann.num_images == 1
    assert ann.skipped_blank == 3 and ann.skipped_empty == 1 and "3 chunks with blank text skipped" in ann.summary()


def test_images_whose_names_differ_only_by_extension_never_share_proposals(tmp_path, capsys):
    from regionvlm import proposals
    from regionvlm.data.proposals import read_proposals, save_image_proposals

    mask = np.eye(4, dtype=bool)
    path = save_image_proposals(tmp_path / "props", "sub/a.jpg", [mask], [0.5])
    with pytest.raises(InputError, match=r"'.*a\.json' holds the proposals of image 'sub/a\.jpg', not of 'sub/a\.png'"):
        read_proposals(path, "sub/a.png")
    with pytest.raises(InputError, match=r"holds the proposals of image 'sub/a\.jpg', not of 'sub/a\.png'"):
        save_image_proposals(tmp_path / "props", "sub/a.png", [mask], [0.5])
    assert len(read_proposals(path, "sub/a.jpg")) == 1 and len(read_proposals(path, "a")) == 1  # stems: PNG imports
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.jpg", "a.png", "b.jpg"):
        Image.new("RGB", (4, 4)).save(images / name)
    message = cli_error(
        proposals.main, ["--images", str(images), "--sam-checkpoint", "sam.pth", "--out", str(tmp_path / "out")], capsys
    )
    assert "images 'a.jpg' and 'a.png' differ only by their extension, so their proposals would share" in message
    assert not (tmp_path / "out").exists()


def test_an_empty_candidate_mask_is_dropped_and_counted(tmp_path):
    """Even with thresholds that keep every mask (small_threshold 0, fallback 0), an empty
    proposal is never scored: the run goes on and counts it."""
    from test_refer import IMAGES, fixture_masks, write_refer_fixture
    from test_ris import FakeModel, _evaluate

    from regionvlm.data.proposals import save_image_proposals

    roots = write_refer_fixture(tmp_path / "refer")
    name, height, width = IMAGES[2]
    save_image_proposals(
        roots["proposals"], name, [np.zeros((height, width), bool), *fixture_masks()["proposals"][2]], [0.99, 0.9, 0.8]
    )
    run = {"small_threshold": 0.0, "fallback_min_area": 0.0}
    metrics = _evaluate(FakeModel(), roots, tmp_path / "out", run)["metrics"]
    assert metrics["refcoco_unc_val/num_empty_proposals"] == 1 and metrics["refcoco_unc_val/num_queries"] == 4


@pytest.mark.parametrize(
    "reader", ["json", "image", "image header", "config", "refs", "vcr metadata", "weights", "proposals", "ln input"]
)
def test_pipes_and_devices_are_refused_never_waited_on(tmp_path, reader):
    """A FIFO (or device) where an input file is expected: one InputError at once (a reader
    that opened it would wait for a writer forever)."""
    import signal

    from regionvlm.common.config import load_yaml
    from regionvlm.common.io import read_json
    from regionvlm.common.tensor_files import file_entries
    from regionvlm.data.images import open_image, read_image_size
    from regionvlm.data.localized_narratives import preprocess_localized_narratives
    from regionvlm.data.proposals import read_proposals
    from regionvlm.data.refer import load_plain_pickle
    from regionvlm.data.vcr import load_metadata

    fifo = tmp_path / "input"
    os.mkfifo(fifo)
    calls = {
        "json": lambda: read_json(fifo, "annotation file"),
        "image": lambda: open_image(fifo),
        "image header": lambda: read_image_size(fifo),
        "config": lambda: load_yaml(fifo),
        "refs": lambda: load_plain_pickle(fifo),
        "vcr metadata": lambda: load_metadata(fifo, 1, "item 1"),
        "weights": lambda: file_entries(fifo),
        "proposals": lambda: read_proposals(fifo),
        "ln input": lambda: preprocess_localized_narratives([fifo], tmp_path / "o.json", check_images=False),
    }

    def hung(*_):
        raise AssertionError(f"the {reader} reader waited on a FIFO")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(10)
    try:
        with pytest.raises(InputError, match=r"'.*input' is a named pipe \(FIFO\); give a regular file"):
            calls[reader]()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    if Path("/dev/null").exists():
        with pytest.raises(InputError, match=r"'/dev/null' is a device"):
            read_json("/dev/null", "annotation file")


# ============================================================================ checkpoints that provide nothing
CHECKPOINT_CASES = {
    "no tensors at all": (lambda m: {}, r"holds no tensors: there is nothing to load"),
    "integers where the model has floats": (
        lambda m: {"t5_proj.weight": torch.zeros_like(m.t5_proj.weight, dtype=torch.int64)},
        r"t5_proj.weight: file torch.int64 vs model torch.float32",
    ),
    "NaN values": (
        lambda m: {**m.trainable_state_dict(), "t5_proj.bias": torch.full_like(m.t5_proj.bias, float("nan"))},
        r"1 tensors hold NaN or infinite values \(e.g. \['t5_proj.bias'\]\)",
    ),
    "part of a model nothing else provides": (
        lambda m: {k: v for k, v in m.state_dict().items() if k.startswith("t5_proj")},
        r"provides only \['t5_proj'\]; .* would stay random",
    ),
}


@pytest.mark.parametrize("case", sorted(CHECKPOINT_CASES))
def test_checkpoints_that_provide_nothing_are_refused(tiny_model, tmp_path, case):
    from regionvlm.common.errors import CheckpointError

    make, message = CHECKPOINT_CASES[case]
    torch.save({"model": make(tiny_model), "optimizer": {}}, tmp_path / "ckpt.pth")
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    with pytest.raises(CheckpointError, match=message):
        tiny_model.load_checkpoint(str(tmp_path / "ckpt.pth"))
    assert all(torch.equal(before[k], v) for k, v in tiny_model.state_dict().items())  # nothing loaded


def test_an_empty_checkpoint_flag_is_an_error_and_random_weights_say_so(chat_files, tmp_path, capsys, monkeypatch):
    import io

    from regionvlm import chat, export, predict
    from regionvlm.chat import load_dialogue_model
    from regionvlm.models import RANDOM_WEIGHTS_WARNING

    image = str(chat_files / "scene.png")
    assert "--checkpoint is empty" in cli_error(chat.main, ["--image", image, "--checkpoint", ""], capsys)
    with pytest.raises(ConfigError, match="the checkpoint path is empty"):
        load_dialogue_model("tiny", checkpoint=" ")
    with pytest.raises(ConfigError, match="--checkpoint is empty"):  # not a silent random model
        predict.build_model("tiny", "", None, [], "cpu")
    message = cli_error(
        export.main, ["hf", "--model-type", "tiny", "--checkpoint", "", "--out", str(tmp_path / "hf")], capsys
    )
    assert "--checkpoint is empty" in message and not (tmp_path / "hf").exists()
    monkeypatch.setattr(sys, "stdin", io.StringIO("quit\n"))
    chat.main(["--image", image])
    assert capsys.readouterr().out.splitlines()[0] == RANDOM_WEIGHTS_WARNING


# ============================================================================ flags and API arguments
FLAG_CASES = {
    "chat --seed -1": ("chat", ["--seed", "-1"], "--seed: seed must be a non-negative whole number, got -1"),
    "chat --device gpu0": ("chat", ["--device", "gpu0"], "--device: 'gpu0' is not a device"),
    "chat --num-beams 0": ("chat", ["--num-beams", "0"], r"`generation.num_beams` must be >= 1, got 0"),
    "chat --max-len 0": ("chat", ["--max-len", "0"], r"`generation.max_len` must be >= 1, got 0"),
    "chat --top-p 2": ("chat", ["--sample", "--top-p", "2"], r"`generation.top_p` must be <= 1.0, got 2.0"),
    "chat --num-points 500": ("chat", ["--num-points", "500"], "--num-points: number of points"),
    "demo --port 0": ("demo", ["--port", "0"], "--port must be a TCP port number in 1..65535, got 0"),
    "demo --port 70000": ("demo", ["--port", "70000"], "--port must be a TCP port number in 1..65535, got 70000"),
    "demo --seed -3": ("demo", ["--seed", "-3"], "--seed: seed must be a non-negative whole number"),
    "synthetic --num-train -1": ("synthetic", ["--num-train", "-1"], "--num-train must be a number of scenes in 0.."),
    "synthetic --image-size 8": ("synthetic", ["--image-size", "8"], "--image-size must be in 32..1024 pixels, got 8"),
    "synthetic --seed -1": ("synthetic", ["--seed", "-1"], "--seed must be a non-negative whole number"),
    "synthetic no scene": (
        "synthetic",
        ["--num-train", "0", "--num-val", "0", "--num-test", "0"],
        "the world would hold no scene",
    ),
    "quickstart --num-test 0": ("quickstart", ["--num-test", "0"], "the world would hold no scene"),
    "quickstart --device tpu": ("quickstart", ["--device", "tpu"], "--device: 'tpu' is not a device"),
    "proposals --device gpu": ("proposals", ["--device", "gpu"], "--device: 'gpu' is not a device"),
    "visual genome --seed -1": ("vg", ["--seed", "-1"], "--seed must be a non-negative whole number, got -1"),
    "localized narratives --workers 0": ("ln", ["--workers", "0"], "--workers must be at least 1, got 0"),
    "train.py --cfg-path a folder": ("train", [], r"config '.*' is a folder; give the YAML file"),
}


@pytest.mark.parametrize("case", sorted(FLAG_CASES))
def test_every_flag_is_checked_before_work_starts(case, chat_files, tmp_path, capsys):
    """Out-of-range numbers, unknown devices and bad paths in every command: exit 2 with one
    line naming the flag, before any model, image or data is loaded and nothing written."""
    import importlib

    import train
    from regionvlm import chat, proposals, quickstart
    from regionvlm.data import localized_narratives, visual_genome
    from regionvlm.demo import app
    from regionvlm.synthetic import world

    command, extra, message = FLAG_CASES[case]
    out = tmp_path / "out"
    base = {
        "chat": (chat.main, ["--image", str(chat_files / "scene.png")]),
        "demo": (app.main, []),
        "synthetic": (world.main, ["--out", str(out)]),
        "quickstart": (quickstart.main, ["--out", str(out)]),
        "proposals": (proposals.main, ["--images", str(chat_files), "--sam-checkpoint", "sam.pth", "--out", str(out)]),
        "vg": (visual_genome.main, ["--regions", "r.json", "--out", str(out / "vg.json")]),
        "ln": (localized_narratives.main, ["--input", "x.jsonl", "--out", str(out / "ln.json")]),
        "train": (train.main, ["--cfg-path", str(tmp_path)]),
    }
    main, argv = base[command]
    importlib.invalidate_caches()
    assert re.search(message, cli_error(main, argv + extra, capsys))
    assert not out.exists()


def test_public_api_refuses_empty_lists_non_finite_images_and_negative_seeds(tiny_model, rgb_image):
    import torch

    from regionvlm.dialogue import Conversation

    image = torch.zeros(1, 3, 64, 64)
    with pytest.raises(InputError, match=r"samples\['text_input'\] must be a non-empty list"):
        tiny_model.generate({"image": image, "text_input": []})
    with pytest.raises(InputError, match=r"targets must be a non-empty list"):
        tiny_model.score(image, [], [])
    with pytest.raises(InputError, match=r"samples\['text_output'\] must be a non-empty list"):
        tiny_model({"image": image, "text_input": [], "text_output": []})
    with pytest.raises(InputError, match=r"samples\['text_input'\] must be a non-empty list"):
        tiny_model.predict_answers({"image": image, "text_input": []})
    for bad in (float("nan"), float("inf")):
        with pytest.raises(InputError, match="image holds NaN or infinite values"):
            tiny_model.generate({"image": torch.full((1, 3, 64, 64), bad)})
    with pytest.raises(InputError, match="image is an empty batch"):
        tiny_model.encode_image(torch.zeros(0, 3, 64, 64))
    with pytest.raises(InputError, match="seed must be a non-negative whole number, got -1"):
        Conversation(tiny_model, rgb_image, seed=-1)
    conv = Conversation(tiny_model, rgb_image)
    conv.add_region(Region.from_box([0, 0, 10, 10], image_size=rgb_image.size))
    with pytest.raises(InputError, match="seed must be a non-negative whole number, got -5"):
        conv.ask("what is [1]?", use_nucleus_sampling=True, seed=-5)
    assert not conv.turns


UNICODE_PIECES = [
    "\u00b2",
    "\u0661",
    "\u216b",
    "\x00",
    "\u200b",
    "\u202e",
    "\U0001f642",
    "\ufb01",
    "\u0130",
    "\u0301",
    "\ufeff",
    "\U0001d7d8",
    "\u3000",
    "\x1b[31m",
    "\u221e",
    "NaN",
    "1_000",
    "\u00bd",
]
UNICODE_COMMANDS = [
    "describe {p}",
    "describe 1{p}",
    "box {p} 1 2 3",
    "points {p} {p}",
    "scribble 1 {p} 3 4",
    "mask {p}",
    "mask /tmp/{p}.png",
    "{p}",
    "what is [{p}]?",
    "regions{p}",
    "reset {p}",
]


def test_the_chat_takes_any_unicode_line(tiny_model_and_processors, chat_files):
    """Every command with unusual Unicode (superscript and Arabic-Indic digits, NUL, BiDi marks,
    emoji, combining marks, ...): an answer or one error line, and the session goes on."""
    from regionvlm.chat import ChatSession
    from regionvlm.chat import open_image as chat_image
    from regionvlm.dialogue import Conversation

    model, vis, txt = tiny_model_and_processors
    conv = Conversation(model, chat_image(str(chat_files / "scene.png")), vis["eval"], txt["eval"])
    session = ChatSession(conv, {"max_len": 2, "num_beams": 1})
    for command in UNICODE_COMMANDS:
        for piece in UNICODE_PIECES:
            session.handle("box 1 2 30 40")
            out, keep_going = session.handle(command.replace("{p}", piece))
            assert keep_going and all(isinstance(line, str) for line in out), (command, piece)
            assert sum(line.startswith("error: ") for line in out) <= 1
    assert session.handle("describe \u00b2")[0][0].startswith("error: describe: usage `describe N`")
    assert not session.handle("what is [1]?")[0][0].startswith("error")


# ============================================================================ command lines
def _ln_line(dataset_id: str = "coco") -> str:
    return json.dumps(
        {
            "dataset_id": dataset_id,
            "image_id": "1",
            "annotator_id": 1,
            "caption": "a dog.",
            "timed_caption": [{"utterance": "a dog.", "start_time": 0.0, "end_time": 1.0}],
            "traces": [[{"x": 0.1, "y": 0.2, "t": 0.5}]],
        }
    )


def test_preprocessors_that_find_nothing_usable_write_no_output(tmp_path, capsys):
    from regionvlm.data import localized_narratives as ln
    from regionvlm.data import video_localized_narratives as vln
    from regionvlm.data import visual_genome as vg

    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"x": 1}\n\xff\xfe\nnot json\n' + b"[" * 100_000 + b"\n")
    message = cli_error(
        ln.main, ["--input", str(bad), "--out", str(tmp_path / "ln.json"), "--no-check-images", "--quiet"], capsys
    )
    assert "gave no usable narrative (4 lines: 4 malformed" in message
    report = json.loads((tmp_path / "ln.report.json").read_text())
    assert report["malformed"][1].endswith("bad.jsonl:2: not UTF-8 text")
    assert report["malformed"][3].endswith("bad.jsonl:4: JSON nested too deeply")
    (tmp_path / "vg.json").write_text("[1, 2]")
    message = cli_error(
        vg.main,
        [
            "--regions",
            str(tmp_path / "vg.json"),
            "--out",
            str(tmp_path / "vg_out.json"),
            "--no-check-images",
            "--quiet",
        ],
        capsys,
    )
    assert "gave no usable image region" in message and "'malformed': 2" in message
    message = cli_error(
        vln.main,
        [
            "--root",
            str(tmp_path),
            "--out",
            str(tmp_path / "v.json"),
            "--sources",
            "oops",
            "--input",
            f"oops={bad}",
            "--no-check-images",
            "--quiet",
        ],
        capsys,
    )
    assert "gave no usable record (4 lines: 4 malformed" in message
    assert left(tmp_path) == {"bad.jsonl", "ln.report.json", "vg.json", "vg_out.report.json", "v.report.json"}


def test_preprocessor_inputs_and_outputs_that_cannot_be_used(tmp_path, capsys):
    from regionvlm.data import localized_narratives as ln
    from regionvlm.data import video_localized_narratives as vln
    from regionvlm.data import visual_genome as vg

    good = tmp_path / "ln.jsonl"
    good.write_text(_ln_line() + "\n")
    (tmp_path / "out_dir").mkdir()
    (tmp_path / "a_file").write_text("x")
    base = ["--input", str(good), "--no-check-images", "--quiet", "--out"]
    assert "cannot write '" in cli_error(ln.main, base + [str(tmp_path / "out_dir")], capsys)
    assert "a file of that name exists" in cli_error(ln.main, base + [str(tmp_path / "a_file" / "x.json")], capsys)
    assert "is a folder" in cli_error(
        vg.main, ["--regions", str(tmp_path / "out_dir"), "--out", str(tmp_path / "o.json")], capsys
    )
    (tmp_path / "latin1.json").write_bytes('[{"id": 1, "regions": []}, "caf\xe9"]'.encode("latin-1"))
    assert "latin1.json' is not UTF-8 text" in cli_error(
        vg.main, ["--regions", str(tmp_path / "latin1.json"), "--out", str(tmp_path / "o.json")], capsys
    )
    assert "(oops) is a folder" in cli_error(
        vln.main,
        [
            "--root",
            str(tmp_path),
            "--out",
            str(tmp_path / "o.json"),
            "--sources",
            "oops",
            "--input",
            f"oops={tmp_path / 'out_dir'}",
        ],
        capsys,
    )
    assert left(tmp_path) == {"ln.jsonl", "out_dir", "a_file", "latin1.json"} and not left(tmp_path / "out_dir")


def test_proposal_command_line_inputs(tmp_path, capsys):
    from regionvlm import proposals

    (tmp_path / "empty").mkdir()
    (tmp_path / "list.txt").write_bytes(b"a.jpg\n\xff\xfe.jpg\n")
    (tmp_path / "names.txt").write_text("a.jpg\n")
    (tmp_path / "settings.yaml").write_text("- points_per_side\n")
    cases = [
        (["--images", str(tmp_path / "empty")], "--images folder '.*empty' holds no image"),
        (["--images", str(tmp_path / "list.txt")], "--images list '.*list.txt' is not UTF-8 text"),
        (
            ["--images", str(tmp_path / "names.txt"), "--pred-iou-thresh", "1.5"],
            r"generator setting pred_iou_thresh must be a number in \[0.0, 1.0\], got 1.5",
        ),
        (
            ["--images", str(tmp_path / "names.txt"), "--points-per-side", "0"],
            r"generator setting points_per_side must be a whole number in \[1, 1024\], got 0",
        ),
        (["--images", str(tmp_path / "names.txt"), "--config", str(tmp_path / "settings.yaml")], "settings.yaml"),
    ]
    for argv, pattern in cases:
        message = cli_error(
            proposals.main,
            argv
            + ["--sam-checkpoint", "x.pth", "--out", str(tmp_path / "out"), "--model-type", "tiny", "--no-progress"],
            capsys,
        )
        assert re.search(pattern, message), message
    assert not (tmp_path / "out").exists()


def test_caption_metrics_and_export_read_files_safely(tmp_path, capsys):
    from regionvlm import export
    from regionvlm.tasks import caption_metrics

    (tmp_path / "gt.json").write_bytes(b'["caf\xe9"]')
    message = cli_error(caption_metrics.main, ["--gt", str(tmp_path / "gt.json"), "--results", "r.json"], capsys)
    assert "caption ground truth '" in message and "is not UTF-8 text" in message
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_bytes(b"\xff")
    message = cli_error(
        export.main, ["hf", "--from-hf", str(tmp_path / "hf"), "--out", str(tmp_path / "x.pth")], capsys
    )
    assert "config.json' as JSON" in message
    (tmp_path / "out").mkdir()
    message = cli_error(
        caption_metrics.main, ["--gt", "gt.json", "--results", "r.json", "--out", str(tmp_path / "out")], capsys
    )
    assert "it is a folder; give a file name for --out" in message  # before scoring, not after
    from regionvlm.data import refer

    message = cli_error(refer.main, ["--data-root", str(tmp_path), "--out", str(tmp_path / "out")], capsys)
    assert "it is a folder; give a file name for --out" in message
    assert left(tmp_path) == {"gt.json", "hf", "out"} and not left(tmp_path / "out")


# ============================================================================ chat and demo
@pytest.fixture(scope="module")
def chat_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("chat")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(d / "scene.png")
    Image.new("RGBA", (64, 48)).save(d / "alpha.png")
    Image.fromarray(np.zeros((48, 64), np.float32)).save(d / "float.tif")
    (d / "folder.png").mkdir()
    return d


CHAT_LINES = {
    "bytes that are not UTF-8": ("\udcff\udcfe what is [1]?", "the line is not valid Unicode"),
    "unknown home folder": ("mask ~no_such_user_xyz/m.png", "mask: cannot expand '~no_such_user_xyz/m.png'"),
    "mask path is a folder": ("mask {d}/folder.png", "folder.png' is a folder"),
    "mask with alpha": ("mask {d}/alpha.png", "has the PIL mode 'RGBA'"),
    "a pasted book": ("what is [1]? " + "word " * 3000, "more than the 512 it reads"),
    "region that does not exist": ("describe 7", r"\[7\] \(region id\) refers to no region"),
    "describe without a number": ("describe one", "usage `describe N`"),
    "box with a huge number": ("box 1e308 1 2 3", "inside the 64x48 image"),
}


@pytest.mark.parametrize("case", sorted(CHAT_LINES))
def test_the_chat_survives_every_bad_command(tiny_model_and_processors, chat_files, case):
    from regionvlm.chat import ChatSession
    from regionvlm.chat import open_image as chat_image
    from regionvlm.dialogue import Conversation

    model, vis, txt = tiny_model_and_processors
    conv = Conversation(model, chat_image(str(chat_files / "scene.png")), vis["eval"], txt["eval"])
    session = ChatSession(conv, {"max_len": 2, "num_beams": 1})
    assert session.handle("box 1 2 30 40")[1]
    line, message = CHAT_LINES[case]
    out, keep_going = session.handle(line.replace("{d}", str(chat_files)))
    assert keep_going and len(out) == 1 and out[0].startswith("error: ") and re.search(message, out[0]), out
    answer, keep_going = session.handle("what is [1]?")  # the session still works
    assert keep_going and not answer[0].startswith("error") and len(conv.turns) == 1


def test_chat_and_demo_images(tiny_model_and_processors, chat_files, capsys):
    from regionvlm import chat
    from regionvlm.demo.app import DemoLogic

    assert "image '" in cli_error(chat.main, ["--image", str(chat_files / "folder.png")], capsys)
    assert "floating-point pixels" in cli_error(chat.main, ["--image", str(chat_files / "float.tif")], capsys)
    assert "--num-points: number of points" in cli_error(
        chat.main, ["--image", str(chat_files / "scene.png"), "--num-points", "0"], capsys
    )
    model, vis, txt = tiny_model_and_processors
    logic = DemoLogic(model, vis["eval"], txt["eval"])
    state, *_, status = logic.load_image(str(chat_files / "float.tif"), 10, "inline", "official")
    assert state is None and status.startswith("error: the uploaded image") and "floating-point" in status


@pytest.mark.slow
def test_chat_command_reads_non_utf8_stdin_without_a_traceback(chat_files):
    script = b"box 1 2 30 40\n\xff\xfe what is [1]?\ndescribe 1\nquit\n"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "regionvlm.chat",
            "--image",
            str(chat_files / "scene.png"),
            "--max-len",
            "2",
            "--num-beams",
            "1",
        ],
        input=script,
        capture_output=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1", "LC_ALL": "C.UTF-8"},
    )
    out, err = proc.stdout.decode(), proc.stderr.decode()
    assert proc.returncode == 0 and "Traceback" not in err, err
    warning, *lines = out.strip().splitlines()
    assert warning.startswith("warning: the model's weights are random")  # the tiny preset without a checkpoint
    assert lines[0].startswith("[1] box") and lines[1].startswith("error: the line is not valid Unicode")
    assert len(lines) == 3 and not lines[2].startswith("error")  # describe 1 still answered
