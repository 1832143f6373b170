"""Command line: ``python -m omni_app {serve,make-tiny-models,check-models,bench}`` (or ``omni-app``)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from omni_app import __version__
from omni_app.images import DEFAULT_MAX_IMAGE_BYTES, DEFAULT_MAX_IMAGE_PIXELS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="omni-app", description="omni-app: local MiniCPM-o 4.5 assistant")
    parser.add_argument("--version", action="version", version=f"omni-app {__version__}")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_serve(commands)
    tiny = commands.add_parser("make-tiny-models", help="write a tiny random-weight model directory")
    tiny.add_argument("dir", help="output directory")
    tiny.add_argument("--seed", type=int, default=0)
    check = commands.add_parser(
        "check-models", help="validate a model directory (exit 1 if the LLM is unusable)"
    )
    check.add_argument("dir", nargs="?", default=None, help="default: $OMNI_MODEL_DIR, then ./models")
    commands.add_parser("bench", help="benchmarks (options: python -m omni_app bench --help)", add_help=False)
    return parser


def _add_serve(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser("serve", help="run the web app and HTTP API")
    serve.add_argument("--model-dir", default=None, help="default: $OMNI_MODEL_DIR, then ./models")
    serve.add_argument(
        "--llm-file", default="", help="explicit LLM gguf (default: auto, Q4_K_M > Q8_0 > F16)"
    )
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    serve.add_argument("--port", type=int, default=9060)
    mode = serve.add_mutually_exclusive_group()
    mode.add_argument("--duplex", dest="duplex", action="store_true", help="default session mode: duplex")
    mode.add_argument("--simplex", dest="duplex", action="store_false", help="default session mode: simplex")
    serve.set_defaults(duplex=False)
    serve.add_argument("--n-ctx", type=int, default=4096, help="LLM context length")
    serve.add_argument(
        "--n-gpu-layers", type=int, default=-1, help="-1 = all layers on the GPU, 0 = CPU only"
    )
    serve.add_argument("--threads", type=int, default=0, help="CPU threads (0 = auto)")
    serve.add_argument("--max-body-mb", type=_positive_float, default=32.0, help="request body limit (MB)")
    serve.add_argument(
        "--max-audio-seconds",
        type=_positive_float,
        default=60.0,
        help="longest audio clip one prefill accepts (longer: 413)",
    )
    serve.add_argument(
        "--max-image-bytes",
        type=_positive_int,
        default=DEFAULT_MAX_IMAGE_BYTES,
        help="largest encoded image one prefill accepts, in bytes (default 20 MiB; larger: 413)",
    )
    serve.add_argument(
        "--max-image-pixels",
        type=_positive_int,
        default=DEFAULT_MAX_IMAGE_PIXELS,
        help="most pixels (width x height) of one image (default 50 million; more: 413)",
    )
    serve.add_argument(
        "--ref-audio",
        default=None,
        metavar="PATH",
        help="reference voice for the system prompt when init sends none (a sound file soundfile reads, or "
        "raw float32 16 kHz samples; needs the audio stage)",
    )
    serve.add_argument("--language", choices=["zh", "en"], default="zh", help="default prompt language")
    serve.add_argument(
        "--session-idle-timeout",
        type=float,
        default=120.0,
        help="seconds after which another client may take over an idle session",
    )
    serve.add_argument("--open-browser", action="store_true", help="open the page once the server listens")


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    bench_at = _bench_position(argv)
    if bench_at is not None:  # bench parses its own options: forward everything after the word
        _configure_logging(parser.parse_args([*argv[:bench_at], "check-models"]).log_level)
        from omni_app import bench

        return bench.main(argv[bench_at + 1 :])
    args = parser.parse_args(argv)
    _configure_logging(args.log_level)
    if args.command == "serve":
        from omni_app import server

        return server.serve(args)
    if args.command == "make-tiny-models":
        return _make_tiny_models(Path(args.dir), args.seed)
    return _check_models(args.dir)


def _bench_position(argv: list[str]) -> int | None:
    index = 0
    while index < len(argv) and argv[index].startswith("--log-level"):
        index += 1 if "=" in argv[index] else 2
    return index if index < len(argv) and argv[index] == "bench" else None


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")


def _make_tiny_models(out_dir: Path, seed: int) -> int:
    from omni_app.tiny_models import write_tiny_model_dir

    write_tiny_model_dir(out_dir, seed=seed)
    print(f"tiny random-weight model directory written to {out_dir}")
    return 0


def _check_models(value: str | None) -> int:
    from omni_app import config

    model_dir = config.resolve_model_dir(value)
    if model_dir is None:
        print(
            "no model directory: pass DIR, set OMNI_MODEL_DIR, or put the models in ./models", file=sys.stderr
        )
        return 1
    report = config.validate_model_dir(Path(model_dir))
    print(config.check_models_report_text(report))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
