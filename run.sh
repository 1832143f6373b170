#!/usr/bin/env bash
# omni-app launcher: virtual environment, build, model check, server start, browser.
# Works from any directory; bash 3.2 compatible (macOS): no associative arrays, no ${var,,}.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: ./run.sh [options] [-- extra server arguments]

Starts the MiniCPM-o 4.5 assistant: creates .venv on first run, builds the C++ engine when its sources
changed, finds the model directory, starts the server and opens the page in your browser.

Options:
  --simplex           turn-by-turn voice/text chat (default)
  --duplex            ask for full-duplex mode (experimental; the app says when it is not available)
  --model-dir DIR     model directory (default: $OMNI_MODEL_DIR, else models/MiniCPM-o-4_5-gguf or
                      another model directory under models/)
  --host H            address to bind (default 127.0.0.1; use 0.0.0.0 only on a trusted network)
  --port P            port (default 9060, or $PORT)
  --ref-audio FILE    reference voice for the system prompt (a WAV/FLAC/OGG clip; default: none, which
                      uses the text-only system prompt)
  --cuda              build the engine with CUDA (sets OMNI_CUDA=1; rebuilds if the last build was CPU-only)
  --no-browser        do not open a browser window
  -h, --help          show this help and exit

Environment:
  PYTHON              interpreter used to create .venv (default python3, needs >= 3.10)
  OMNI_MODEL_DIR      model directory when --model-dir is not given
  OMNI_START_TIMEOUT  seconds to wait for the server to answer /health (default 120)

Download the real model (models/README.md shows how to fetch only the Q4_K_M files):
  huggingface-cli download openbmb/MiniCPM-o-4_5-gguf --local-dir models/MiniCPM-o-4_5-gguf
EOF
}

# ---------------------------------------------------------------- output helpers
if [ -t 1 ] && [ -z "${NO_COLOR:-}" ] && [ "${TERM:-dumb}" != "dumb" ]; then
  C_RED=$'\033[31m'; C_YEL=$'\033[33m'; C_GRN=$'\033[32m'; C_BLD=$'\033[1m'; C_OFF=$'\033[0m'
else
  C_RED=""; C_YEL=""; C_GRN=""; C_BLD=""; C_OFF=""
fi
info() { printf '%s==>%s %s\n' "$C_GRN" "$C_OFF" "$*"; }
warn() { printf '%swarning:%s %s\n' "$C_YEL" "$C_OFF" "$*" >&2; }
die() {
  printf '%serror:%s %s\n' "$C_RED" "$C_OFF" "$*" >&2
  exit 1
}

DOWNLOAD_CMD="huggingface-cli download openbmb/MiniCPM-o-4_5-gguf --local-dir models/MiniCPM-o-4_5-gguf"

# ---------------------------------------------------------------- repo root (follow symlinks to the script)
SOURCE="${BASH_SOURCE[0]}"
while [ -h "$SOURCE" ]; do
  LINK_DIR="$(cd -P "$(dirname "$SOURCE")" && pwd)"
  SOURCE="$(readlink "$SOURCE")"
  case "$SOURCE" in /*) ;; *) SOURCE="$LINK_DIR/$SOURCE" ;; esac
done
ROOT="$(cd -P "$(dirname "$SOURCE")" && pwd)"
VENV="$ROOT/.venv"
VPY="$VENV/bin/python"
BUILD_LOG="$VENV/build.log"
BUILD_STAMP="$VENV/omni-build.stamp"
SERVER_LOG="$VENV/server.log"
DEFAULT_MODEL_DIR="$ROOT/models/MiniCPM-o-4_5-gguf"
TINY_MODEL_DIR="$ROOT/models/tiny-demo"

# ---------------------------------------------------------------- arguments
MODE="simplex"
MODEL_DIR=""
REF_AUDIO=""
HOST="127.0.0.1"
PORT="${PORT:-9060}"
OPEN_BROWSER=1
WANT_CUDA=0
EXTRA_ARGS=()

need_value() {
  if [ $# -lt 2 ] || [ -z "$2" ]; then
    printf '%serror:%s %s needs a value\n\n' "$C_RED" "$C_OFF" "$1" >&2
    usage >&2
    exit 2
  fi
}

while [ $# -gt 0 ]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --simplex) MODE="simplex" ;;
    --duplex) MODE="duplex" ;;
    --model-dir) need_value "$@"; MODEL_DIR="$2"; shift ;;
    --model-dir=*) MODEL_DIR="${1#*=}" ;;
    --ref-audio) need_value "$@"; REF_AUDIO="$2"; shift ;;
    --ref-audio=*) REF_AUDIO="${1#*=}" ;;
    --host) need_value "$@"; HOST="$2"; shift ;;
    --host=*) HOST="${1#*=}" ;;
    --port) need_value "$@"; PORT="$2"; shift ;;
    --port=*) PORT="${1#*=}" ;;
    --no-browser) OPEN_BROWSER=0 ;;
    --cuda) WANT_CUDA=1 ;;
    --) shift; while [ $# -gt 0 ]; do EXTRA_ARGS+=("$1"); shift; done; break ;;
    *)
      printf '%serror:%s unknown option: %s\n\n' "$C_RED" "$C_OFF" "$1" >&2
      usage >&2
      exit 2
      ;;
  esac
  shift
done

case "$PORT" in
  '' | *[!0-9]*) die "--port must be a number between 1 and 65535 (got '$PORT')" ;;
esac
if [ "$PORT" -lt 1 ] || [ "$PORT" -gt 65535 ]; then die "--port must be between 1 and 65535 (got $PORT)"; fi
case "${OMNI_CUDA:-}" in 1 | ON | on | On | TRUE | true | YES | yes) WANT_CUDA=1 ;; esac

# An explicit model directory that does not exist is a typo: say so before any slow step.
MODEL_DIR_SOURCE=""
if [ -n "$MODEL_DIR" ]; then
  MODEL_DIR_SOURCE="--model-dir"
elif [ -n "${OMNI_MODEL_DIR:-}" ]; then
  MODEL_DIR="$OMNI_MODEL_DIR"
  MODEL_DIR_SOURCE="OMNI_MODEL_DIR"
fi
if [ -n "$MODEL_DIR_SOURCE" ]; then
  case "$MODEL_DIR" in "~"/*) MODEL_DIR="$HOME/${MODEL_DIR#\~/}" ;; esac
  if [ ! -e "$MODEL_DIR" ]; then
    die "model directory '$MODEL_DIR' (from $MODEL_DIR_SOURCE) does not exist.
       Download the model with:
         $DOWNLOAD_CMD
       or run without --model-dir to use the models/ folder."
  fi
  [ -d "$MODEL_DIR" ] || die "'$MODEL_DIR' (from $MODEL_DIR_SOURCE) is not a directory"
  MODEL_DIR="$(cd "$MODEL_DIR" && pwd)"
fi

# ---------------------------------------------------------------- 1. virtual environment
python_ok() { # $1 = interpreter; true when it is Python >= 3.10
  "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' >/dev/null 2>&1
}
python_version() {
  "$1" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' 2>/dev/null || echo "unknown"
}

if [ ! -x "$VPY" ]; then
  BASE_PY="${PYTHON:-python3}"
  command -v "$BASE_PY" >/dev/null 2>&1 ||
    die "$BASE_PY not found. Install Python >= 3.10 (macOS: brew install python@3.12; Debian/Ubuntu:
       apt-get install python3 python3-venv) or set PYTHON=/path/to/python3.x"
  python_ok "$BASE_PY" ||
    die "omni-app needs Python >= 3.10, but $BASE_PY is $(python_version "$BASE_PY").
       Install a newer Python and run again with PYTHON=/path/to/python3.x ./run.sh"
  info "Creating the virtual environment in .venv (Python $(python_version "$BASE_PY"))"
  "$BASE_PY" -m venv "$VENV" ||
    die "could not create .venv with '$BASE_PY -m venv' (Debian/Ubuntu: apt-get install python3-venv)"
  info "Updating pip inside .venv (first run only)"
  "$VPY" -m pip install --upgrade pip ||
    die "pip could not be updated; check your network connection to PyPI"
fi
python_ok "$VPY" ||
  die ".venv uses Python $(python_version "$VPY"); omni-app needs >= 3.10. Delete .venv and run again."

# ---------------------------------------------------------------- 2. build when sources changed
source_hash() { # hash of the build inputs: pyproject.toml, CMakeLists.txt and everything under cpp/
  "$VPY" - "$ROOT" <<'PYEOF'
import hashlib
import pathlib
import sys

root = pathlib.Path(sys.argv[1])
files = [root / "pyproject.toml", root / "CMakeLists.txt"]
files += sorted(p for p in (root / "cpp").rglob("*") if p.is_file())
digest = hashlib.sha256()
for path in files:
    if path.is_file():
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
print(digest.hexdigest())
PYEOF
}
file_hash() {
  "$VPY" -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' "$1"
}
stamp_field() { # $1 = key; prints the value stored in the build stamp (empty if none)
  if [ -f "$BUILD_STAMP" ]; then sed -n "s/^$1=//p" "$BUILD_STAMP"; fi
}
cmake_ok() { # system cmake >= 3.21?
  command -v cmake >/dev/null 2>&1 || return 1
  cmake --version 2>/dev/null | head -n 1 | awk '{ split($3, v, "."); exit !((v[1] > 3) || (v[1] == 3 && v[2] >= 21)) }'
}

show_first_build_error() { # the first compiler/CMake error is more useful than pip's closing summary
  local line
  line="$(grep -n -m 1 -E 'CMake Error|error:|FAILED:|fatal error' "$BUILD_LOG" | cut -d: -f1 || true)"
  if [ -n "$line" ]; then
    printf '\n%sThe build failed.%s First error (line %s of the log):\n' "$C_RED" "$C_OFF" "$line" >&2
    sed -n "$((line > 3 ? line - 3 : 1)),$((line + 15))p" "$BUILD_LOG" >&2
  else
    printf '\n%sThe build failed.%s Last lines of the log:\n' "$C_RED" "$C_OFF" >&2
    tail -n 30 "$BUILD_LOG" >&2
  fi
}

CURRENT_SOURCES="$(source_hash)"
CURRENT_PYPROJECT="$(file_hash "$ROOT/pyproject.toml")"
LAST_CUDA="$(stamp_field cuda)"
if [ "$LAST_CUDA" = 1 ] && [ "$WANT_CUDA" = 0 ]; then
  WANT_CUDA=1 # --cuda is remembered; delete .venv/omni-build.stamp to go back to a CPU-only build
fi
BUILD_REASON=""
if [ ! -f "$BUILD_STAMP" ]; then
  BUILD_REASON="first build"
elif [ "$(stamp_field sources)" != "$CURRENT_SOURCES" ]; then
  BUILD_REASON="pyproject.toml, CMakeLists.txt or cpp/ changed since the last build"
elif [ "$WANT_CUDA" = 1 ] && [ "$LAST_CUDA" != 1 ]; then
  BUILD_REASON="--cuda given and the last build was CPU-only"
elif ! "$VPY" -c 'import omni_engine, omni_app' >/dev/null 2>&1; then
  BUILD_REASON="the installed engine does not import"
fi

if [ -n "$BUILD_REASON" ]; then
  info "Building the engine ($BUILD_REASON). This takes a few minutes the first time."
  if [ "$WANT_CUDA" = 1 ]; then
    export OMNI_CUDA=1
    command -v nvcc >/dev/null 2>&1 || warn "nvcc is not on PATH; the CUDA build will probably fail"
  else
    export OMNI_CUDA=OFF
  fi
  PIP_ARGS=(install -v --no-build-isolation -e "$ROOT")
  if [ "$(stamp_field pyproject)" = "$CURRENT_PYPROJECT" ]; then
    # Dependencies are unchanged: rebuild offline.
    PIP_ARGS=(install -v --no-build-isolation --no-deps -e "$ROOT")
  else
    BUILD_TOOLS=("scikit-build-core>=0.10" "pybind11>=2.12")
    cmake_ok || BUILD_TOOLS+=("cmake>=3.21")
    info "Installing build tools: ${BUILD_TOOLS[*]}"
    "$VPY" -m pip install "${BUILD_TOOLS[@]}" || die "could not install the build tools (network to PyPI?)"
  fi
  info "Full build log: $BUILD_LOG"
  if ! "$VPY" -m pip "${PIP_ARGS[@]}" 2>&1 | tee "$BUILD_LOG"; then
    show_first_build_error
    die "build failed; the full log is $BUILD_LOG"
  fi
  "$VPY" -c 'import omni_engine, omni_app' ||
    die "the build finished but 'import omni_engine' fails; see $BUILD_LOG"
  printf 'sources=%s\npyproject=%s\ncuda=%s\n' "$CURRENT_SOURCES" "$CURRENT_PYPROJECT" "$WANT_CUDA" >"$BUILD_STAMP"
  info "Build done"
fi

# ---------------------------------------------------------------- 3. model directory
check_models() { # $1 = dir; prints the report on failure and exits
  local report
  if report="$("$VPY" -m omni_app check-models "$1" 2>&1)"; then
    printf '%s\n' "$report" | grep -E '^(Stages|Result)' || true
    return 0
  fi
  printf '%s\n' "$report" >&2
  die "the model directory $1 is incomplete or damaged (see the list above).
       If a download was interrupted, run it again - it resumes:
         huggingface-cli download openbmb/MiniCPM-o-4_5-gguf --local-dir \"$1\""
}

has_llm_file() { # a top-level *.gguf (the LLM) in $1
  local f
  for f in "$1"/*.gguf; do
    if [ -f "$f" ]; then return 0; fi
  done
  return 1
}

find_model_dir() { # models/MiniCPM-o-4_5-gguf, else models/ itself, else another models/* with a gguf
  local d
  if [ -d "$DEFAULT_MODEL_DIR" ]; then
    echo "$DEFAULT_MODEL_DIR"
    return 0
  fi
  if has_llm_file "$ROOT/models"; then
    echo "$ROOT/models"
    return 0
  fi
  for d in "$ROOT"/models/*/; do
    d="${d%/}"
    if [ -d "$d" ] && [ "$d" != "$TINY_MODEL_DIR" ] && has_llm_file "$d"; then
      echo "$d"
      return 0
    fi
  done
  return 1
}

tiny_warning() {
  printf '%s%s' "$C_RED" "$C_BLD" >&2
  cat >&2 <<EOF

  !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
  !!  NO REAL MODEL FOUND - USING RANDOM DEMO WEIGHTS ($TINY_MODEL_DIR)
  !!
  !!  The app runs end to end, but every answer is NOISE. To get the real assistant,
  !!  download the model and start again (models/README.md: how to fetch only Q4_K_M):
  !!
  !!    $DOWNLOAD_CMD
  !!
  !!  (run it from $ROOT, or pass --model-dir DIR)
  !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!

EOF
  printf '%s' "$C_OFF" >&2
}

if [ -z "$MODEL_DIR" ]; then
  if MODEL_DIR="$(find_model_dir)"; then
    info "Model directory: $MODEL_DIR"
  else
    MODEL_DIR="$TINY_MODEL_DIR"
    if [ ! -d "$MODEL_DIR" ] || ! has_llm_file "$MODEL_DIR"; then
      info "No model found under models/: generating tiny random demo weights in models/tiny-demo"
      "$VPY" -m omni_app make-tiny-models "$MODEL_DIR" ||
        die "could not generate the demo model in $MODEL_DIR"
    fi
    tiny_warning
  fi
else
  info "Model directory ($MODEL_DIR_SOURCE): $MODEL_DIR"
fi
check_models "$MODEL_DIR"

# ---------------------------------------------------------------- 4. port
PROBE_HOST="$HOST"
case "$HOST" in 0.0.0.0 | "::" | "[::]") PROBE_HOST="127.0.0.1" ;; esac
if ! "$VPY" - "$HOST" "$PORT" <<'PYEOF'; then
import socket
import sys

host, port = sys.argv[1].strip("[]"), int(sys.argv[2])
family = socket.AF_INET6 if ":" in host else socket.AF_INET
with socket.socket(family, socket.SOCK_STREAM) as probe:
    try:
        probe.bind((host, port))
    except OSError as exc:
        print(f"cannot bind {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        sys.exit(1)
PYEOF
  die "port $PORT on $HOST is not free (another omni-app or program is using it).
       Stop it, or choose another port: ./run.sh --port $((PORT + 1))"
fi

# ---------------------------------------------------------------- 5. server
URL_HOST="$PROBE_HOST"
case "$URL_HOST" in *:*) URL_HOST="[$URL_HOST]" ;; esac
URL="http://$URL_HOST:$PORT/"
SERVER_ARGS=(serve --model-dir "$MODEL_DIR" --host "$HOST" --port "$PORT")
[ "$MODE" = "duplex" ] && SERVER_ARGS+=(--duplex)
[ -n "$REF_AUDIO" ] && SERVER_ARGS+=(--ref-audio "$REF_AUDIO") # the server checks and decodes the file

SERVER_PID=""
TAIL_PID=""
STOP_REQUESTS=0

# shellcheck disable=SC2317  # cleanup and on_signal run from traps
cleanup() {
  if [ -n "$TAIL_PID" ]; then kill "$TAIL_PID" 2>/dev/null || true; fi
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then kill -TERM "$SERVER_PID" 2>/dev/null || true; fi
}
# shellcheck disable=SC2317
on_signal() {
  STOP_REQUESTS=$((STOP_REQUESTS + 1))
  if [ -z "$SERVER_PID" ]; then exit 130; fi
  if [ "$STOP_REQUESTS" -eq 1 ]; then
    printf '\n' >&2
    info "Stopping the server (press Ctrl-C again to kill it)"
    kill -TERM "$SERVER_PID" 2>/dev/null || true
  else
    warn "killing the server"
    kill -KILL "$SERVER_PID" 2>/dev/null || true
  fi
}
trap cleanup EXIT
trap on_signal INT TERM

info "Starting the server on $URL ($MODE mode); log: $SERVER_LOG"
[ "$MODE" = "duplex" ] && warn "duplex mode is experimental; the page says so when it is not available yet"
: >"$SERVER_LOG"
# The server gets its own process group, so a terminal Ctrl-C reaches only this script, which then stops
# the server once, cleanly.
"$VPY" -c 'import os, sys; os.setpgrp(); os.execv(sys.argv[1], sys.argv[1:])' \
  "$VPY" -m omni_app "${SERVER_ARGS[@]}" ${EXTRA_ARGS[@]+"${EXTRA_ARGS[@]}"} >>"$SERVER_LOG" 2>&1 &
SERVER_PID=$!

health_ok() {
  if command -v curl >/dev/null 2>&1; then
    curl -fsS -m 2 -o /dev/null "${URL}health" 2>/dev/null
  else
    "$VPY" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2).read()' \
      "${URL}health" >/dev/null 2>&1
  fi
}

TIMEOUT="${OMNI_START_TIMEOUT:-120}"
printf 'Waiting for the server '
WAITED=0
until health_ok; do
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    STATUS=0
    wait "$SERVER_PID" || STATUS=$?
    SERVER_PID=""
    printf '\n'
    printf '%sThe server exited (status %s) before it answered.%s Last lines of %s:\n' \
      "$C_RED" "$STATUS" "$C_OFF" "$SERVER_LOG" >&2
    tail -n 40 "$SERVER_LOG" >&2
    exit 1
  fi
  if [ "$STOP_REQUESTS" -gt 0 ]; then break; fi
  if [ "$WAITED" -ge "$TIMEOUT" ]; then
    printf '\n'
    tail -n 40 "$SERVER_LOG" >&2
    die "the server did not answer ${URL}health within ${TIMEOUT} s (set OMNI_START_TIMEOUT to wait longer)"
  fi
  printf '.'
  sleep 1
  WAITED=$((WAITED + 1))
done
printf '\n'

if [ "$STOP_REQUESTS" -eq 0 ]; then
  printf '\n  %somni-app is running:%s %s\n  Model: %s\n  Press Ctrl-C to stop.\n\n' \
    "$C_BLD" "$C_OFF" "$URL" "$MODEL_DIR"
  tail -n +1 -f "$SERVER_LOG" &
  TAIL_PID=$!

  # ---------------------------------------------------------------- 6. browser
  if [ "$OPEN_BROWSER" = 1 ]; then
    if [ "$(uname -s)" = "Darwin" ] && command -v open >/dev/null 2>&1; then
      open "$URL" >/dev/null 2>&1 || warn "could not open a browser; open $URL yourself"
    elif [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ] && command -v xdg-open >/dev/null 2>&1; then
      xdg-open "$URL" >/dev/null 2>&1 &
    else
      info "No display found; open $URL in a browser"
    fi
  fi
fi

# ---------------------------------------------------------------- 7. wait for the server
# `wait` returns early (status > 128) when a trapped signal arrives; wait again until the server is gone.
STATUS=0
while :; do
  STATUS=0
  wait "$SERVER_PID" || STATUS=$?
  if [ "$STATUS" -gt 128 ] && kill -0 "$SERVER_PID" 2>/dev/null; then continue; fi
  break
done
SERVER_PID=""
if [ "$STOP_REQUESTS" -gt 0 ]; then
  info "Server stopped"
  exit 0
fi
if [ "$STATUS" -ne 0 ]; then
  printf '%sThe server exited with status %s.%s Log: %s\n' "$C_RED" "$STATUS" "$C_OFF" "$SERVER_LOG" >&2
fi
exit "$STATUS"
