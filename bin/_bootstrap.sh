# Sourced by bin/console and bin/test: find Python 3.12 or newer, make .venv, and install the
# project with the extras given in EXTRAS, again only when pyproject.toml has changed.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

python_ok() {
  "$1" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1
}

find_python() {
  local candidate
  for candidate in ${PYTHON:-} python3.14 python3.13 python3.12 python3; do
    if command -v "$candidate" >/dev/null 2>&1 && python_ok "$(command -v "$candidate")"; then
      command -v "$candidate"
      return 0
    fi
  done
  # Interpreters installed beside the system one (pyenv, /usr/local, /opt), newest first.
  for candidate in $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.*/bin/python3 \
                      /usr/local/bin/python3.* /opt/python*/bin/python3 2>/dev/null | sort -rV); do
    if [ -x "$candidate" ] && python_ok "$candidate"; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

VENV="$ROOT/.venv"
if [ ! -x "$VENV/bin/python" ] || ! python_ok "$VENV/bin/python"; then
  if ! PY=$(find_python); then
    cat >&2 <<'MSG'
error: Python 3.12 or newer (with venv) is needed and none was found.
Install one, for example:
    Debian/Ubuntu:  sudo apt-get install python3.12 python3.12-venv   (or python3.13)
    pyenv:          pyenv install 3.13
    macOS:          brew install python@3.13
or point PYTHON at it:  PYTHON=/path/to/python3.13 ./bin/console
MSG
    exit 1
  fi
  echo "==> Creating .venv with $("$PY" -V) ($PY)"
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
fi

# One stamp line per installed extra, keyed by pyproject.toml's hash.
hash=$(cksum < pyproject.toml | cut -d' ' -f1)
missing=""
for extra in ${EXTRAS//,/ }; do
  grep -qx "$hash $extra" "$VENV/.installed" 2>/dev/null || missing="yes"
done
if [ -n "$missing" ]; then
  echo "==> Installing dependencies ($EXTRAS); the first time takes a few minutes (Redis is compiled)"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e ".[$EXTRAS]"
  for extra in ${EXTRAS//,/ }; do echo "$hash $extra"; done >> "$VENV/.installed"
fi
