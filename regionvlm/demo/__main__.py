"""``python -m regionvlm.demo``: serve the web demo on localhost."""
from regionvlm.demo import main

main()
