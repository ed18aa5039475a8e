# Sourced by scripts/run and scripts/test: create .venv and install the project
# into it from the lock file (exact versions, sha256-checked) when pyproject.toml
# or the lock changed since the last install.
# Usage: ensure_venv [extra]   (extra: "test" for the test dependencies)
# Locks: requirements.lock (the service), requirements-test.lock (service + tests);
# how to update them: docs/dependencies.md.

ensure_venv() {
    local extra="${1:-}"
    local python="${PYTHON:-python3}"
    if ! "$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
        echo "pump-predictor needs Python >= 3.11 (set PYTHON=/path/to/python3.11)" >&2
        exit 1
    fi
    if [ ! -x .venv/bin/python ]; then
        echo "==> creating .venv with $("$python" --version)" >&2
        "$python" -m venv .venv
        .venv/bin/python -m pip install --quiet --upgrade pip
    fi
    local lock="requirements.lock"
    [ -n "$extra" ] && lock="requirements-${extra}.lock"
    local stamp=".venv/.installed-${extra:-base}"
    local want
    want="$(cat pyproject.toml "$lock" | sha256sum | cut -d' ' -f1)"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        echo "==> installing pump-predictor${extra:+ [$extra]} into .venv from $lock" >&2
        # --require-hashes: every file must match the lock's sha256, no other version.
        .venv/bin/python -m pip install --quiet --require-hashes -r "$lock"
        # The project itself: its dependencies are exactly the lock's, nothing resolved.
        .venv/bin/python -m pip install --quiet --no-deps --editable .
        echo "$want" > "$stamp"
    fi
}
