#!/usr/bin/env bash
# Build the environment a LAVIS user has (Python 3.11, salesforce-lavis 1.0.2 with the
# transformers 4.26 / numpy<2 it pins), put this checkout on its path, and run the LAVIS
# integration tests (tests/integrations) inside it.
#   bash .ci/lavis_env.sh [VENV_DIR]      (default: $LAVIS_VENV, else ~/.cache/regionvlm/lavis-venv)
# A venv built before with the same torch/LAVIS pins is reused (only the project's own
# dependencies are re-checked), so a second run mostly runs the tests.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${1:-${LAVIS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/regionvlm/lavis-venv}}"
PYTHON="${LAVIS_PYTHON:-python3.11}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" PIP_DISABLE_PIP_VERSION_CHECK=1

TORCH=(torch==2.14.1 torchvision==0.29.1)
LAVIS=(salesforce-lavis==1.0.2 "numpy<2" "pandas<3")
STAMP="$PYTHON ${TORCH[*]} ${LAVIS[*]}"

pip_quiet() {  # pip's output goes to a log, shown only when pip fails
  if ! "$VENV/bin/pip" install "$@" >"$VENV/pip.log" 2>&1; then
    tail -n 40 "$VENV/pip.log" >&2
    echo "lavis_env: pip install $* failed (log: $VENV/pip.log)" >&2
    return 1
  fi
}

start=$(date +%s)
if [[ ! -f "$VENV/.regionvlm_lavis_stamp" || "$(cat "$VENV/.regionvlm_lavis_stamp")" != "$STAMP" ]]; then
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  "$PYTHON" -m venv "$VENV"
  pip_quiet "${TORCH[@]}"
  pip_quiet "${LAVIS[@]}"
  printf '%s' "$STAMP" >"$VENV/.regionvlm_lavis_stamp"
fi
# The project's own dependencies (read from setup.py), except those whose versions LAVIS decides;
# numpy/pandas are repeated so that nothing lifts them past LAVIS's bounds.
mapfile -t PROJECT_DEPS < <("$VENV/bin/python" - "$REPO/setup.py" <<'PY'
import ast, re, sys
tree = ast.parse(open(sys.argv[1], encoding="utf-8").read())
call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
reqs = ast.literal_eval(next(k.value for k in call.keywords if k.arg == "install_requires"))
pinned_by_lavis = {"torch", "torchvision", "transformers", "tokenizers", "numpy"}
print("\n".join(r for r in reqs if re.split(r"[<>=!~\[ ;]", r, maxsplit=1)[0].lower() not in pinned_by_lavis))
PY
)
pip_quiet "${TORCH[@]}" "${LAVIS[@]}" "${PROJECT_DEPS[@]}" "pytest>=7"
# The checkout itself, without its dependency list (its transformers bound is above LAVIS's pin):
# a .pth file is what `pip install --no-deps -e .` amounts to, without writing build metadata
# into the checkout.
SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
printf '%s\n' "$REPO" >"$SITE/regionvlm_checkout.pth"
echo "lavis_env: environment ready in $(( $(date +%s) - start )) s: $("$VENV/bin/python" -W ignore -c \
  'import lavis; from importlib.metadata import version as v
print(", ".join(f"{p} {v(p)}" for p in ("salesforce-lavis", "transformers", "numpy", "torch")))' 2>/dev/null)"

cd "$REPO"
t0=$(date +%s)
status=0
"$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/integrations || status=$?
echo "lavis_env: tests took $(( $(date +%s) - t0 )) s"
exit "$status"
