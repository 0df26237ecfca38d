"""``python -m regionvlm.synthetic --out DIR``: write the synthetic world in the real formats."""

from regionvlm.common.cli import run
from regionvlm.synthetic.world import main

run(main)
