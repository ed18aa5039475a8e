# Sourced by scripts/run and scripts/test: create .venv and install the project
# into it when pyproject.toml changed since the last install.
# Usage: ensure_venv [extra]   (extra: "test" for the test dependencies)

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
    local spec="."
    [ -n "$extra" ] && spec=".[$extra]"
    local stamp=".venv/.installed-${extra:-base}"
    local want
    want="$(cat pyproject.toml | sha256sum | cut -d' ' -f1)"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        echo "==> installing pump-predictor${extra:+ [$extra]} into .venv" >&2
        .venv/bin/python -m pip install --quiet --editable "$spec"
        echo "$want" > "$stamp"
    fi
}
