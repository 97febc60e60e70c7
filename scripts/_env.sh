# Shared by scripts/demo and scripts/test: a virtualenv in .venv with the project installed.
# Usage: source scripts/_env.sh EXTRAS
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "Python 3.11 or newer is needed (set PYTHON=/path/to/python3.11)" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
# pip's output goes to a log, shown only when something fails.
if ! { .venv/bin/python -m pip install --disable-pip-version-check --upgrade pip &&
       .venv/bin/python -m pip install --disable-pip-version-check -e ".[$1]"; } >.venv/install.log 2>&1; then
    cat .venv/install.log >&2
    echo "installing the project failed; the log above is also in .venv/install.log" >&2
    exit 1
fi
