"""Terminal chat about regions of one image.

    python -m regionvlm.chat --image photo.jpg                         # tiny preset (CPU, random or trained)
    python -m regionvlm.chat --image photo.jpg --model-type flant5xl   # real weights, paths in the preset YAML
    python -m regionvlm.chat --image photo.jpg --cfg-path my.yaml --options model.checkpoint=ckpt.pth
    regionvlm-chat --image photo.jpg < script.txt                      # stdin may be a pipe

Commands (coordinates are pixels of the image, origin top-left)::

    box x0 y0 x1 y1          add a box region
    points x y [x y ...]     add clicked points
    scribble x y [x y ...]   add an ordered scribble (trace)
    mask PATH.png            add a binary mask (non-zero = region), same size as the image
    describe N               caption region N
    regions                  list the regions with the text sent to the model
    reset                    forget all regions and turns (the image stays encoded)
    help                     this list
    quit                     leave (so does end of input)
    anything else            a question; [1], [2], ... refer to the regions

Each new region prints its id and the exact region text the Q-Former reads.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, TextIO, Tuple

import numpy as np

from regionvlm.common.errors import ConfigError, InputError, MissingFileError, RegionVLMError
from regionvlm.processors.text_processors import check_text
from regionvlm.region import Region

REGION_COMMANDS = ("box", "points", "scribble", "mask")
HELP = __doc__.split("Commands", 1)[1].split("\n", 1)[1].strip("\n").rstrip()


# ------------------------------------------------------------------ region input
def _numbers(command: str, values: Sequence[str]) -> List[float]:
    out = []
    for v in values:
        try:
            number = float(v)
        except ValueError:
            raise InputError(f"{command}: '{v}' is not a number.") from None
        if not np.isfinite(number):
            raise InputError(f"{command}: '{v}' is not a finite number.")
        out.append(number)
    return out


def _user_path(path: str, what: str) -> Path:
    """``path`` with ``~`` expanded; an unknown ``~user`` is an InputError, not a crash."""
    try:
        return Path(path).expanduser()
    except RuntimeError:
        raise InputError(f"{what}: cannot expand '{path}' (no such user's home folder).") from None


def load_mask(path: str, image_size: Tuple[int, int]) -> np.ndarray:
    """A mask image as bool (H, W): non-zero pixels are the region (palette images by index,
    RGB by any channel; modes with alpha are refused, see ``regionvlm.data.images``).
    Turned upright by its EXIF orientation, like the chat's image."""
    from regionvlm.data.images import read_mask_image

    p = _user_path(path, "mask")
    try:
        arr = read_mask_image(p, "mask", exif=True)
    except MissingFileError:
        raise InputError(f"mask: file '{p}' not found.") from None
    width, height = image_size
    if arr.shape != (height, width):
        raise InputError(
            f"mask: '{p}' is {arr.shape[1]}x{arr.shape[0]} but the image is {width}x{height}; "
            "a mask must have the image's size."
        )
    if not arr.any():
        raise InputError(f"mask: '{p}' has no non-zero pixel; nothing to point at.")
    return arr != 0


def parse_region_command(line: str, image_size: Tuple[int, int]) -> Region:
    """``box|points|scribble x ...`` (pixels) or ``mask PATH`` -> a Region; InputError if malformed."""
    words = line.split()
    if not words or words[0].lower() not in REGION_COMMANDS:
        raise InputError(f"not a region command: {line!r} (use one of {', '.join(REGION_COMMANDS)}).")
    command, args = words[0].lower(), words[1:]
    if command == "mask":
        if len(args) != 1:
            raise InputError("mask: usage `mask PATH.png` (one file; non-zero pixels are the region).")
        return Region.from_mask(load_mask(args[0], image_size))
    values = _numbers(command, args)
    if command == "box":
        if len(values) != 4:
            raise InputError(f"box: usage `box x0 y0 x1 y1` (4 pixel coordinates), got {len(values)} numbers.")
        return Region.from_box(values, image_size=image_size)
    if not values or len(values) % 2:
        raise InputError(
            f"{command}: usage `{command} x y [x y ...]` (pairs of pixel coordinates), got {len(values)} numbers."
        )
    pairs = np.asarray(values, dtype=np.float64).reshape(-1, 2)
    if command == "points":
        return Region.from_points(pairs, image_size=image_size)
    return Region.from_trace(pairs, image_size=image_size)


def describe_region(region: Region, image_size: Tuple[int, int]) -> str:
    """Short human form of a region in pixel coordinates (for listings)."""
    width, height = image_size
    scale = np.array([width, height], dtype=np.float64)
    if region.kind == "box":
        x0, y0, x1, y1 = (region.data.reshape(2, 2) * scale).reshape(4)
        return f"box ({x0:.0f}, {y0:.0f})-({x1:.0f}, {y1:.0f})"
    if region.kind in ("points", "trace"):
        name = "points" if region.kind == "points" else "scribble"
        return f"{name} ({len(region.data)} clicked)"
    if region.kind == "mask":
        return f"mask ({int(region.data.sum())} pixels)"
    return "whole image"


def region_summary(conv, region_id: int) -> str:
    """``[i] kind: region text`` plus a note when the Q-Former's text limit drops points."""
    entry = conv.region(region_id)
    line = f"[{region_id}] {describe_region(entry.region, conv.image_size)}: {entry.text}"
    if entry.points_kept < len(entry.points):
        line += (
            f"  (the Q-Former reads only the first {entry.points_kept} of {len(entry.points)} points: "
            f"max_txt_len={conv.model.max_txt_len})"
        )
    return line


# ------------------------------------------------------------------ model loading
def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Model options shared by the chat and the web demo."""
    parser.add_argument(
        "--model-type", default="tiny", help="preset of regionvlm_t5: tiny (CPU, default), flant5xl, pretrain_flant5xl"
    )
    parser.add_argument("--checkpoint", default=None, help="RegionVLM checkpoint to load (sets model.checkpoint)")
    parser.add_argument("--cfg-path", default=None, help="YAML with a model: section (overrides --model-type)")
    parser.add_argument("--options", nargs="+", default=[], help="config overrides, e.g. model.max_txt_len=48")
    parser.add_argument("--device", default=None, help="auto (default: the local GPU if any), cpu, cuda, cuda:N")
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seeds random weights (tiny preset without checkpoint) and the region points",
    )


def add_generation_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--num-points", type=int, default=None, help="points per region (K; default: the model's)")
    parser.add_argument(
        "--layout",
        choices=("inline", "let", "qformer_first"),
        default="inline",
        help="how [i] enters the prompt (see regionvlm.dialogue)",
    )
    parser.add_argument(
        "--history",
        choices=("official", "qa", "none"),
        default="official",
        help="multi-turn context (see regionvlm.dialogue)",
    )
    parser.add_argument("--num-beams", type=int, default=None, help="beam width (default 5)")
    parser.add_argument(
        "--max-len",
        "--max-length",
        dest="max_len",
        type=int,
        default=None,
        help="maximum new tokens (default 30; qformer_first layout 10)",
    )
    parser.add_argument(
        "--min-len", "--min-length", dest="min_len", type=int, default=None, help="minimum length (default 1)"
    )
    parser.add_argument("--length-penalty", type=float, default=None, help="default 1 (qformer_first layout -1)")
    parser.add_argument("--repetition-penalty", type=float, default=None, help="default 1")
    parser.add_argument("--sample", action="store_true", help="nucleus sampling instead of beam search")
    parser.add_argument("--top-p", type=float, default=None, help="default 0.9")
    parser.add_argument("--temperature", type=float, default=None, help="default 1")


def generation_options(args: argparse.Namespace) -> Dict[str, Any]:
    """The decoding flags the user gave (the layout's defaults fill the rest), as
    :class:`~regionvlm.models.generation.GenerationSettings` fields."""
    given = dict(
        num_beams=args.num_beams,
        max_len=args.max_len,
        min_len=args.min_len,
        length_penalty=args.length_penalty,
        repetition_penalty=args.repetition_penalty,
        top_p=args.top_p,
        temperature=args.temperature,
    )
    options = {k: v for k, v in given.items() if v is not None}
    if args.sample:
        options["use_nucleus_sampling"] = True
    return options


def check_flags(args: argparse.Namespace) -> str:
    """Every flag the chat and the demo share, checked before anything slow starts (the model
    load); returns the device to use (``--device`` through the runner's rule)."""
    from regionvlm.common.config import parse_options
    from regionvlm.common.dist_utils import resolve_device
    from regionvlm.models.generation import GenerationSettings
    from regionvlm.region import check_num_points, check_seed

    for flag, check in (
        ("--num-points", lambda: args.num_points is None or check_num_points(args.num_points)),
        ("--seed", lambda: check_seed(args.seed)),
    ):
        try:
            check()
        except InputError as exc:
            raise ConfigError(f"{flag}: {exc}") from None
    if args.checkpoint is not None and not args.checkpoint.strip():
        raise ConfigError(
            "--checkpoint is empty; give a checkpoint file, or leave the flag out for the preset's weights."
        )
    GenerationSettings.create("generation", **generation_options(args))  # decoding flags in range
    parse_options(args.options)
    try:
        return str(resolve_device(args.device or "auto"))
    except ConfigError as exc:
        raise ConfigError(f"--device: {exc}") from None


def load_dialogue_model(
    model_type: str = "tiny",
    checkpoint: Optional[str] = None,
    cfg_path: Optional[str] = None,
    options: Sequence[str] = (),
    device: Optional[str] = None,
    seed: int = 0,
):
    """Model + eval image/text processors for a conversation.

    The model config is the preset ``model_type`` (or ``cfg_path``'s ``model:`` section) with
    ``options`` on top; ``checkpoint`` becomes ``model.checkpoint``. Random weights are
    seeded by ``seed``, so the tiny preset gives the same model every time."""
    import torch

    from regionvlm.common.dist_utils import resolve_device
    from regionvlm.models import create_model, model_config
    from regionvlm.processors import BlipCaptionProcessor, BlipImageEvalProcessor
    from regionvlm.region import check_seed

    check_seed(seed, "seed")
    model_cfg = model_config(model_type, checkpoint, cfg_path, options)
    device = resolve_device(device or "auto")
    torch.manual_seed(seed)
    model = create_model(model_cfg, device=device, is_eval=True)
    return model, BlipImageEvalProcessor(image_size=model.image_size), BlipCaptionProcessor()


def open_image(path: str):
    """The chat's image as RGB, upright by its EXIF orientation (as the user sees it while
    typing pixel coordinates); every file fault is one clear error naming ``--image``."""
    from regionvlm.data.images import open_image as read_image

    p = _user_path(path, "--image")
    try:
        return read_image(p, "--image", exif=True)
    except MissingFileError:
        raise InputError(f"image '{p}' not found (check --image).") from None


# ------------------------------------------------------------------ the REPL
class ChatSession:
    """Executes chat commands against a Conversation; every reply is one or more lines."""

    def __init__(self, conversation, generation: Optional[Dict[str, Any]] = None) -> None:
        self.conv = conversation
        self.generation = dict(generation or {})

    def handle(self, line: str) -> Tuple[List[str], bool]:
        """Run one input line; returns (output lines, keep going)."""
        line = line.strip()
        if not line:
            return [], True
        head = line.split()[0].lower()
        try:
            check_text(line, "the line")
            if head in ("quit", "exit"):
                return [], False
            if head == "help":
                return [HELP], True
            if head in REGION_COMMANDS:
                region_id = self.conv.add_region(parse_region_command(line, self.conv.image_size))
                return [region_summary(self.conv, region_id)], True
            if head == "describe":
                return [self._describe(line)], True
            if head == "regions" and line.lower() == "regions":
                if not self.conv.regions:
                    return ["no regions yet (add one with box, points, scribble or mask)"], True
                return [region_summary(self.conv, i) for i in range(1, len(self.conv.regions) + 1)], True
            if head == "reset" and line.lower() == "reset":
                self.conv.reset(keep_regions=False)
                return ["conversation reset: no regions, no turns"], True
            return [self.conv.ask(line, **self.generation)], True
        except RegionVLMError as exc:  # a bad command never ends the session
            return [f"error: {exc}"], True

    def _describe(self, line: str) -> str:
        words = line.split()
        if len(words) != 2 or not (words[1].isascii() and words[1].isdecimal()):  # "²".isdigit() is True
            raise InputError(f"describe: usage `describe N` with a region number, got {line!r}.")
        return self.conv.describe(int(words[1]), **self.generation)


def run_repl(session: ChatSession, stdin: TextIO, stdout: TextIO, interactive: bool) -> None:
    if interactive:
        print("Type `help` for commands, `quit` to leave.", file=stdout, flush=True)
    while True:
        if interactive:
            print("> ", end="", file=stdout, flush=True)
        line = stdin.readline()
        if not line:
            break
        lines, keep_going = session.handle(line)
        for out in lines:
            print(out, file=stdout, flush=True)
        if not keep_going:
            break


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="regionvlm-chat", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--image", required=True, help="the image to talk about")
    add_model_arguments(parser)
    add_generation_arguments(parser)
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    from regionvlm.models import RANDOM_WEIGHTS_WARNING

    args = parse_args(argv)
    device = check_flags(args)
    image = open_image(args.image)  # before the slow imports: typos fail at once
    from regionvlm.dialogue import Conversation

    model, vis, txt = load_dialogue_model(
        args.model_type, args.checkpoint, args.cfg_path, args.options, device, args.seed
    )
    if model.random_weights:
        print(RANDOM_WEIGHTS_WARNING, flush=True)  # the first line of the output
    conv = Conversation(
        model, image, vis, txt, num_points=args.num_points, seed=args.seed, layout=args.layout, history=args.history
    )
    conv.generation_settings(**generation_options(args))  # bad decoding flags stop here, not at the first turn
    session = ChatSession(conv, generation_options(args))
    if hasattr(sys.stdin, "reconfigure"):  # bytes that are not UTF-8 reach handle() as surrogates: one error line
        sys.stdin.reconfigure(errors="surrogateescape")
    run_repl(session, sys.stdin, sys.stdout, interactive=sys.stdin.isatty())


def console() -> None:
    """The ``regionvlm-chat`` command (installed by pip): ``main`` with the project's error handling."""
    from regionvlm.common.cli import run

    run(main)


if __name__ == "__main__":
    console()
