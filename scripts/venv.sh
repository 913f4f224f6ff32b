# Sourced by scripts/start and .ci/run: the project's virtual environment, .venv.
#
# A system Python (Debian 12, Ubuntu 24.04) refuses `pip install` (PEP 668), so everything
# goes into .venv, made once with $PYTHON (default python3). Packages come from a
# hash-checked lock (requirements/*.lock, scripts/lock) and are installed only when the lock,
# pyproject.toml or the Python version changed: .venv/.installed-<lock> records what was
# installed, so a second start costs nothing here.

venv_say() { echo "${VENV_WHO:-venv}: $*" >&2; }

# Can $PYTHON make a virtual environment? Debian ships venv's pip bootstrap (ensurepip)
# separately, in python3-venv.
venv_possible() { "${PYTHON:-python3}" -c 'import ensurepip, venv' 2>/dev/null; }

# venv_ensure LOCK: .venv holds the packages of LOCK and this project (editable).
venv_ensure() {
  local lock=$1 python=${PYTHON:-python3} version stamp
  version=$("$python" -c 'import platform; print(platform.python_version())')
  stamp=".venv/.installed-$(basename "$lock")"
  local want
  want="$version $(cat pyproject.toml "$lock" | sha256sum | cut -d' ' -f1)"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  if [ "$(.venv/bin/python -c 'import platform; print(platform.python_version())' 2>/dev/null)" != "$version" ]; then
    if ! venv_possible; then
      venv_say "$python cannot make a virtual environment: install Debian's python3-venv" \
               "(sudo apt-get install python3-venv), or set PYTHON to another python3"
      return 1
    fi
    venv_say "making the virtual environment .venv with $python ($version)"
    rm -rf .venv
    "$python" -m venv .venv
  fi
  venv_say "installing the locked packages of $lock into .venv (about 10-30 s; once per lock change)"
  .venv/bin/python -m pip install -q --disable-pip-version-check --require-hashes --no-deps -r "$lock"
  # The project itself, built by the locked setuptools (no build isolation: nothing unpinned).
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
  echo "$want" > "$stamp"
}
