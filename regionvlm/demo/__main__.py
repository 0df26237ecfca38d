"""``python -m regionvlm.demo``: serve the web demo on localhost."""

from regionvlm.common.cli import run
from regionvlm.demo import main

run(main)
