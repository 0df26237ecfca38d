"""Web demo (Gradio): draw boxes, points or scribbles on an image and chat about them.

``python -m regionvlm.demo [--model-type tiny] [--checkpoint PATH] [--port 7860] [--examples DIR]``.
gradio is imported only when the demo is built, so the package works without it.
"""

from __future__ import annotations

from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> None:
    """Parse the command line and serve the demo (see ``regionvlm.demo.app``)."""
    from regionvlm.demo.app import main as app_main

    app_main(argv)


def build_app(*args, **kwargs):
    """The Gradio Blocks app, not launched (see ``regionvlm.demo.app.build_app``)."""
    from regionvlm.demo.app import build_app as build

    return build(*args, **kwargs)
