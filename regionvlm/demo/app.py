"""The Gradio web demo: draw regions on an image and talk about them.

    python -m regionvlm.demo                          # tiny preset, synthetic example scenes
    python -m regionvlm.demo --checkpoint tiny.pth    # a trained tiny model
    python -m regionvlm.demo --model-type flant5xl --examples photos/ --port 7860

Serves on http://127.0.0.1:PORT (localhost only unless ``--host`` says otherwise). One
conversation per browser session: the image is encoded once when it is loaded; each region
drawn gets the next id ``[1]``, ``[2]``, ... and the text box under the image shows the
exact region text sent to the Q-Former. Needs ``gradio`` (``pip install -e .[demo]``).
"""

from __future__ import annotations

import argparse
import atexit
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from regionvlm.common.errors import ConfigError, InputError, RegionVLMError
from regionvlm.demo import canvas
from regionvlm.region import Region, check_num_points

MODES = ("box", "points", "scribble")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
HOW_TO = {
    "box": "Click two opposite corners: the box becomes the next region.",
    "points": "Click one or more points, then press **Add region**.",
    "scribble": "Click along a path (in order), then press **Add region**.",
}


def require_gradio():
    """Import gradio, or stop with the install command."""
    try:
        import gradio as gr
    except ImportError:
        raise ConfigError("the web demo needs gradio: pip install -e .[demo]  (or: pip install gradio)") from None
    return gr


@dataclass
class DemoSession:
    """Per-browser state: the conversation and the clicks of the region being drawn."""

    conv: Any
    pending: List[Tuple[float, float]] = field(default_factory=list)


def example_images(directory: Optional[str]) -> List[str]:
    """Image files of ``--examples DIR`` (regular files directly in DIR, not links leading out
    of it); without it, a few synthetic scenes (the tiny world). These files, and nothing else
    below DIR, are what the server may serve (:func:`launch`)."""
    if directory:
        root = Path(directory).expanduser()
        if not root.is_dir():
            raise ConfigError(f"--examples: '{root}' is not a directory of images.")
        inside = root.resolve()
        try:
            files = sorted(
                str(p)
                for p in root.iterdir()
                if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and p.resolve().parent == inside
            )
        except OSError as exc:
            raise ConfigError(f"--examples: cannot list '{root}': {exc.strerror or exc}.") from None
        if not files:
            raise ConfigError(f"--examples: no {'/'.join(IMAGE_SUFFIXES)} file in '{root}'.")
        return files
    import numpy as np
    from PIL import Image

    from regionvlm.synthetic.scenes import render_scene

    out = Path(tempfile.mkdtemp(prefix="regionvlm_demo_examples_"))
    atexit.register(shutil.rmtree, out, True)
    files = []
    for seed in range(4):
        path = out / f"scene_{seed}.png"
        Image.fromarray(render_scene(np.random.default_rng(1000 + seed)).image).save(path)
        files.append(str(path))
    return files


class DemoLogic:
    """The event handlers, independent of the widgets (each returns plain values)."""

    def __init__(
        self, model, vis_processor, text_processor, seed: int = 0, generation: Optional[Dict[str, Any]] = None
    ) -> None:
        self.model = model
        self.vis_processor = vis_processor
        self.text_processor = text_processor
        self.seed = seed
        self.generation = dict(generation or {})

    # -- image and regions ---------------------------------------------------
    def load_image(self, image, num_points: int, layout: str, history: str):
        """Start a conversation on ``image``: a PIL image, or the path of the uploaded file (the
        upload widget hands over the file untouched, so every image goes through
        ``regionvlm.data.images``: EXIF orientation, all PIL modes, the pixel limit)."""
        from regionvlm.data.images import open_image
        from regionvlm.dialogue import Conversation

        if image is None:
            return None, None, "", [], "Upload an image or pick an example."
        try:
            if isinstance(image, (str, Path)):
                image = open_image(image, "the uploaded image", exif=True)
            conv = Conversation(
                self.model,
                image,
                self.vis_processor,
                self.text_processor,
                num_points=int(num_points),
                seed=self.seed,
                layout=layout,
                history=history,
            )
        except RegionVLMError as exc:  # e.g. a float (mode F) image: say so, keep the page usable
            return None, None, "", [], f"error: {exc}"
        session = DemoSession(conv)
        width, height = conv.image_size
        return (
            session,
            self.render(session, "box"),
            "",
            [],
            f"Image loaded ({width}x{height}, encoded once). Draw a region.",
        )

    def render(self, session: Optional[DemoSession], mode: str):
        if session is None:
            return None
        return canvas.render(session.conv.image, session.conv.regions, session.pending, mode)

    def regions_text(self, session: Optional[DemoSession]) -> str:
        from regionvlm.chat import region_summary

        if session is None:
            return ""
        return "\n".join(region_summary(session.conv, i) for i in range(1, len(session.conv.regions) + 1))

    def click(self, session: Optional[DemoSession], index: Sequence[float], mode: str, num_points: int):
        if session is None:
            return session, None, "", "Upload an image first."
        size = session.conv.image_size
        session.pending.append(canvas.to_image_pixels(index, canvas.display_scale(size), size))
        status = f"{len(session.pending)} click(s). {HOW_TO[mode]}"
        if mode == "box" and len(session.pending) >= 2:
            (xa, ya), (xb, yb) = session.pending[-2:]
            session.pending.clear()
            box = (min(xa, xb), min(ya, yb), max(xa, xb), max(ya, yb))
            status = self._add(session, lambda: Region.from_box(box, image_size=size), num_points)
        return session, self.render(session, mode), self.regions_text(session), status

    def add_pending(self, session: Optional[DemoSession], mode: str, num_points: int):
        if session is None:
            return session, None, "", "Upload an image first."
        if not session.pending:
            return session, self.render(session, mode), self.regions_text(session), f"No clicks to add. {HOW_TO[mode]}"
        clicks, size = list(session.pending), session.conv.image_size
        session.pending.clear()
        if mode == "scribble":
            status = self._add(session, lambda: Region.from_trace(clicks, image_size=size), num_points)
        else:  # a box with pending clicks (one corner) is added as a point region too
            status = self._add(session, lambda: Region.from_points(clicks, image_size=size), num_points)
        return session, self.render(session, mode), self.regions_text(session), status

    def _add(self, session: DemoSession, make_region, num_points: int) -> str:
        try:
            session.conv.num_points = check_num_points(int(num_points))
            region_id = session.conv.add_region(make_region())
        except InputError as exc:
            return f"error: {exc}"
        return f"Added region [{region_id}]; refer to it as [{region_id}] in a question."

    def clear_pending(self, session: Optional[DemoSession], mode: str):
        if session is not None:
            session.pending.clear()
        return session, self.render(session, mode), HOW_TO[mode]

    def clear_regions(self, session: Optional[DemoSession], mode: str):
        if session is not None:
            session.pending.clear()
            session.conv.reset(keep_regions=False)
        return session, self.render(session, mode), "", [], "Regions and chat cleared."

    def reset_chat(self, session: Optional[DemoSession]):
        if session is not None:
            session.conv.reset(keep_regions=True)
        return session, [], "Chat cleared (regions kept)."

    # -- dialogue ---------------------------------------------------------------
    def _apply_settings(self, session: DemoSession, layout: str, history: str) -> None:
        session.conv.layout = layout
        session.conv.history = history

    def ask(
        self,
        session: Optional[DemoSession],
        text: str,
        chat: List[Dict[str, str]],
        layout: str,
        history: str,
        **generation,
    ):
        chat = list(chat or [])
        if session is None:
            return session, chat, text, "Upload an image first."
        if not (text or "").strip():
            return session, chat, text, "Type a question; [1], [2], ... refer to the regions."
        self._apply_settings(session, layout, history)
        try:
            answer = session.conv.ask(text, **{**self.generation, **generation})
        except RegionVLMError as exc:
            return session, chat, text, f"error: {exc}"
        chat += [{"role": "user", "content": text}, {"role": "assistant", "content": answer}]
        return session, chat, "", "Answered."

    def describe(
        self,
        session: Optional[DemoSession],
        region_id,
        chat: List[Dict[str, str]],
        layout: str,
        history: str,
        **generation,
    ):
        chat = list(chat or [])
        if session is None:
            return session, chat, "Upload an image first."
        self._apply_settings(session, layout, history)
        try:
            rid = int(region_id) if region_id is not None and float(region_id).is_integer() else region_id
            answer = session.conv.describe(rid, **{**self.generation, **generation})
        except RegionVLMError as exc:
            return session, chat, f"error: {exc}"
        chat += [{"role": "user", "content": f"(describe [{rid}])"}, {"role": "assistant", "content": answer}]
        return session, chat, f"Described region [{rid}]."


def build_app(
    model,
    vis_processor,
    text_processor,
    examples: Sequence[str] = (),
    seed: int = 0,
    generation: Optional[Dict[str, Any]] = None,
    num_points: Optional[int] = None,
    layout: str = "inline",
    history: str = "official",
):
    """The Gradio Blocks app (not launched); ``num_points`` unset: the model's K."""
    gr = require_gradio()
    num_points = int(model.num_points) if num_points is None else num_points
    logic = DemoLogic(model, vis_processor, text_processor, seed, generation)
    gen = dict(logic.generation)
    with gr.Blocks(title="RegionVLM demo", analytics_enabled=False) as app:
        gr.Markdown(
            "# RegionVLM: talk about regions of an image\n"
            "Load an image, draw regions (they become **[1]**, **[2]**, ...), then ask about them, "
            "e.g. *What is [1]?* or *Is [1] left of [2]?*. **Describe** captions a region without text."
        )
        state = gr.State(None)
        with gr.Row():
            with gr.Column(scale=3):
                board = gr.Image(
                    label="Click here to draw regions", interactive=False, elem_id="canvas", height=512, show_label=True
                )
                with gr.Row():
                    mode = gr.Radio(list(MODES), value="box", label="Draw", elem_id="mode", scale=2)
                    add_btn = gr.Button("Add region", elem_id="add-region", scale=1)
                    undo_btn = gr.Button("Clear clicks", elem_id="clear-clicks", scale=1)
                    clear_btn = gr.Button("Clear regions", elem_id="clear-regions", scale=1)
                regions = gr.Textbox(
                    label="Regions as sent to the model (points as [x y], 0-100)",
                    lines=3,
                    interactive=False,
                    elem_id="regions",
                )
            with gr.Column(scale=2):
                upload = gr.Image(
                    type="filepath",
                    image_mode=None,
                    label="Image (upload or pick an example)",
                    sources=["upload"],
                    height=160,
                    elem_id="upload",
                )
                if examples:
                    gr.Examples(examples=[[p] for p in examples], inputs=[upload], label="Examples")
                try:
                    chat = gr.Chatbot(
                        label="Conversation", height=300, render_markdown=False, type="messages", elem_id="chat"
                    )
                except TypeError:  # gradio 6: messages are the only format
                    chat = gr.Chatbot(label="Conversation", height=300, render_markdown=False, elem_id="chat")
                question = gr.Textbox(
                    label="Question ([1], [2], ... refer to the regions)",
                    elem_id="question",
                    placeholder="What is [1]?",
                )
                with gr.Row():
                    send = gr.Button("Send", variant="primary", elem_id="send")
                    reset = gr.Button("Reset chat", elem_id="reset-chat")
                with gr.Row():
                    describe_id = gr.Number(value=1, precision=0, label="Region", elem_id="describe-id", minimum=1)
                    describe_btn = gr.Button("Describe", elem_id="describe")
                status = gr.Markdown("Upload an image or pick an example.", elem_id="status")
                with gr.Accordion("Settings", open=False):
                    num_points = gr.Slider(
                        1, max(20, num_points), value=num_points, step=1, label="Points per region (K)"
                    )
                    layout_in = gr.Dropdown(["inline", "let", "qformer_first"], value=layout, label="Region layout")
                    history_in = gr.Dropdown(["official", "qa", "none"], value=history, label="Multi-turn context")
                    beams = gr.Slider(1, 10, value=gen.get("num_beams", 5), step=1, label="Beams")
                    max_len = gr.Slider(1, 100, value=gen.get("max_len", 30), step=1, label="Max new tokens")
                    sample = gr.Checkbox(value=gen.get("use_nucleus_sampling", False), label="Nucleus sampling")
                    top_p = gr.Slider(0.05, 1.0, value=gen.get("top_p", 0.9), step=0.05, label="top-p")
                    temp = gr.Slider(0.1, 2.0, value=gen.get("temperature", 1.0), step=0.05, label="Temperature")

        def gen_opts(b, m, s, p, t):
            return dict(
                num_beams=int(b), max_len=int(m), use_nucleus_sampling=bool(s), top_p=float(p), temperature=float(t)
            )

        model_event = dict(concurrency_id="model", concurrency_limit=1)  # one model: one call at a time
        upload.change(
            lambda img, n, lay, his: logic.load_image(img, n, lay, his),
            [upload, num_points, layout_in, history_in],
            [state, board, regions, chat, status],
            **model_event,
        )

        def on_click(session, m, n, evt):
            return logic.click(session, evt.index, m, n)

        on_click.__annotations__["evt"] = gr.SelectData  # a real class: gradio injects the click

        board.select(on_click, [state, mode, num_points], [state, board, regions, status], **model_event)
        add_btn.click(logic.add_pending, [state, mode, num_points], [state, board, regions, status], **model_event)
        undo_btn.click(logic.clear_pending, [state, mode], [state, board, status])
        clear_btn.click(logic.clear_regions, [state, mode], [state, board, regions, chat, status])
        mode.change(lambda s, m: logic.clear_pending(s, m), [state, mode], [state, board, status])
        reset.click(logic.reset_chat, [state], [state, chat, status])

        settings = [layout_in, history_in, beams, max_len, sample, top_p, temp]

        def on_ask(session, text, history_value, lay, his, b, m, s, p, t):
            return logic.ask(session, text, history_value, lay, his, **gen_opts(b, m, s, p, t))

        def on_describe(session, rid, history_value, lay, his, b, m, s, p, t):
            return logic.describe(session, rid, history_value, lay, his, **gen_opts(b, m, s, p, t))

        for trigger in (send.click, question.submit):
            trigger(on_ask, [state, question, chat] + settings, [state, chat, question, status], **model_event)
        describe_btn.click(on_describe, [state, describe_id, chat] + settings, [state, chat, status], **model_event)
    return app


def launch(app, host: str, port: int, allowed_paths: Sequence[str] = ()) -> None:
    """Start the server (blocking), with only the launch options this gradio version knows.
    ``allowed_paths`` are files, not folders: the server may read the example images shown
    and nothing else beside them (gradio serves any file below an allowed folder)."""
    import inspect

    options = dict(
        server_name=host,
        server_port=port,
        share=False,
        show_error=True,
        ssr_mode=False,
        allowed_paths=list(allowed_paths),
        inbrowser=False,
    )
    known = inspect.signature(app.launch).parameters
    app.queue(default_concurrency_limit=1).launch(**{k: v for k, v in options.items() if k in known})


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    from regionvlm.chat import add_generation_arguments, add_model_arguments

    parser = argparse.ArgumentParser(
        prog="python -m regionvlm.demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_model_arguments(parser)
    add_generation_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1", help="interface to serve on (default: localhost only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--examples", default=None, help="directory of example images (default: synthetic scenes)")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    import os

    from regionvlm.chat import check_flags, generation_options, load_dialogue_model
    from regionvlm.models import RANDOM_WEIGHTS_WARNING

    args = parse_args(argv)
    if not 1 <= args.port <= 65535:
        raise ConfigError(f"--port must be a TCP port number in 1..65535, got {args.port}.")
    device = check_flags(args)  # every flag before the slow imports and the model load
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    examples = example_images(args.examples)
    require_gradio()
    model, vis, txt = load_dialogue_model(
        args.model_type, args.checkpoint, args.cfg_path, args.options, device, args.seed
    )
    if model.random_weights:
        print(RANDOM_WEIGHTS_WARNING, flush=True)  # the first line of the output
    app = build_app(
        model, vis, txt, examples, args.seed, generation_options(args), args.num_points, args.layout, args.history
    )
    try:
        launch(app, args.host, args.port, allowed_paths=[str(Path(p).resolve()) for p in examples])
    except OSError as exc:
        raise ConfigError(f"cannot serve on {args.host}:{args.port} ({exc}); pass a free --port.") from None
