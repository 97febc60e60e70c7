# Shared by scripts/demo and scripts/test: a virtualenv in .venv with the locked dependencies
# (requirements/LOCK.txt, made by scripts/lock) and the project, editable, installed.
# Usage: source scripts/_env.sh LOCK   (all: the platform and the demo's servers; dev: also the
# test and lint tools)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "Python 3.11 or newer is needed (set PYTHON=/path/to/python3.11)" >&2
    exit 1
fi
lock=requirements/$1.txt
if [ ! -f "$lock" ]; then
    echo "no $lock: the locks are in requirements/ (scripts/lock makes them)" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
# pip itself is pinned too: the one a Python release bundles differs from release to release,
# and upgrading to whatever is newest would change the install from one day to the next.
# Move it forward on purpose, like the locks.
pip_version=26.3
pip=(.venv/bin/python -m pip --disable-pip-version-check)
# The lock holds every dependency with its hashes, so the project goes in with --no-deps.
# pip's output goes to a log, shown only when something fails.
if ! { "${pip[@]}" install "pip==$pip_version" &&
       "${pip[@]}" install --require-hashes -r "$lock" &&
       "${pip[@]}" install --no-deps -e .; } >.venv/install.log 2>&1; then
    cat .venv/install.log >&2
    echo "installing the project failed; the log above is also in .venv/install.log" >&2
    exit 1
fi
