#!/usr/bin/env bash
# CI's second leg: the newest Python that pyproject.toml's classifiers name, with the newest jax, flax,
# optax and orbax-checkpoint its ranges admit, in a fresh virtual environment. Runs the quickstart,
# the fine-tuning example and every test that needs no torch (torch has no CPU build for that Python
# here; the tests that use torch or transformers as the oracle skip, saying so).
set -euo pipefail
cd "$(dirname "$0")/.."

# The newest Python version the classifiers list (tomllib: the system python3 is 3.11 or newer).
version=$(python3 -c '
import tomllib
classifiers = tomllib.load(open("pyproject.toml", "rb"))["project"]["classifiers"]
prefix = "Programming Language :: Python :: 3."
print("3.%d" % max(int(c[len(prefix):]) for c in classifiers if c.startswith(prefix)))
')
python=$( (ls -d "${PYENV_ROOT:-$HOME/.pyenv}/versions/$version".*/bin/python 2>/dev/null || true) \
    | grep -E "/$version\.[0-9]+/bin/python$" | sort -V | tail -n 1 || true)
python=${python:-$(command -v "python$version" || true)}
if [ -z "$python" ]; then
    echo "newest leg: no Python $version on this machine (pyenv or python$version)" >&2
    exit 1
fi

venv=$(mktemp -d "${TMPDIR:-/tmp}/xmod-newest-leg.XXXXXX")
trap 'rm -rf "$venv"' EXIT
"$python" -m venv "$venv"
# shellcheck disable=SC1091
source "$venv/bin/activate"

# The package (a fresh resolve takes the newest releases in its ranges) and the test extra without
# torch and transformers.
python -c '
import tomllib
test = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["test"]
print("\n".join(d for d in test if not d.startswith(("torch", "transformers"))))
' >"$venv/test-requirements.txt"
pip install --quiet -c .ci/constraints.txt -e . -r "$venv/test-requirements.txt"

python - <<'EOF'
import platform
from importlib.metadata import version

names = ["jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "ml_dtypes", "tensorstore"]
print(f"newest leg: Python {platform.python_version()}, "
      + ", ".join(f"{name} {version(name)}" for name in names), flush=True)
EOF

python examples/quickstart.py
TQDM_MININTERVAL=10 python examples/finetune_classification.py
python -m pytest -n 2 -q
