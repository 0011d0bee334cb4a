# Sourced by the other scripts: create the project's virtual environment on first
# use (or reuse it), install darkroom into it with versions pinned by
# requirements/lock.txt, and put it first on PATH.
#
#   source scripts/venv.sh '.[api,worker,ui,test,embedded]'
#
# A virtual environment, not pip into the system Python: distributions' own
# python3 refuses that (PEP 668, "externally-managed-environment").
# DARKROOM_VENV puts it elsewhere (.ci/run uses a fresh one); PYTHON picks the
# interpreter that creates it (any Python 3.11+ with its venv module).

darkroom_venv_setup() {
  local spec=$1
  local venv=${DARKROOM_VENV:-.venv}
  local python=${PYTHON:-python3}

  if [ ! -x "$venv/bin/python" ]; then
    if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "darkroom: needs Python 3.11 or newer; '$python' is $("$python" --version 2>&1)." >&2
      echo "darkroom: set PYTHON=/path/to/python3.11 and run this again." >&2
      return 1
    fi
    echo "darkroom: creating the virtual environment $venv (with $("$python" --version 2>&1))"
    if ! "$python" -m venv "$venv"; then
      rm -rf "$venv"
      echo "darkroom: '$python -m venv' failed; on Debian/Ubuntu: apt-get install python3-venv" >&2
      return 1
    fi
  fi

  # Reinstall only when what decides the install changed (a second run starts at once).
  local stamp
  stamp="$venv/.installed-$(cat pyproject.toml requirements/lock.txt requirements/torch.txt \
    <(echo "$spec") | sha256sum | cut -c1-16)"
  if [ ! -e "$stamp" ]; then
    echo "darkroom: installing $spec into $venv (pinned by requirements/lock.txt; a few minutes the first time)"
    # torch from requirements/torch.txt: on these machines the local CPU build.
    "$venv/bin/python" -m pip install -qq --disable-pip-version-check \
      -c requirements/lock.txt -r requirements/torch.txt -e "$spec"
    touch "$stamp"
  fi

  VIRTUAL_ENV=$(cd "$venv" && pwd)
  export VIRTUAL_ENV
  export PATH="$VIRTUAL_ENV/bin:$PATH"
}

darkroom_venv_setup "$1"
