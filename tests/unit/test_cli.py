"""The command line dispatch of omni_app.__main__ (the commands' own work is tested where it lives)."""

from __future__ import annotations

import pytest

from omni_app import __main__ as cli
from omni_app import bench, config


def test_bench_forwards_the_remaining_arguments(monkeypatch):
    seen = []
    monkeypatch.setattr(bench, "main", lambda argv: seen.append(argv) or 7)
    assert cli.main(["bench", "--model-dir", "bench", "--json", "out.json"]) == 7
    assert cli.main(["--log-level", "DEBUG", "bench"]) == 7
    assert seen == [["--model-dir", "bench", "--json", "out.json"], []]


def test_serve_without_a_model_directory_exits_2(monkeypatch, caplog):
    monkeypatch.setattr(config, "resolve_model_dir", lambda value: None)
    assert cli.main(["serve"]) == 2
    assert "no model directory found" in caplog.text


def test_serve_options_reach_the_server_settings(monkeypatch, tmp_path):
    from omni_app import server

    captured = []
    monkeypatch.setattr(server, "run_server", lambda settings: captured.append(settings) or 0)
    argv = ["serve", "--model-dir", str(tmp_path), "--port", "9999", "--duplex", "--n-ctx", "2048"]
    argv += ["--n-gpu-layers", "0", "--threads", "3", "--max-body-mb", "2.5", "--language", "en"]
    assert cli.main(argv) == 0
    settings = captured[0]
    assert (settings.model_dir, settings.host, settings.port, settings.duplex) == (
        tmp_path,
        "127.0.0.1",
        9999,
        True,
    )
    assert (settings.n_ctx, settings.n_gpu_layers, settings.n_threads) == (2048, 0, 3)
    assert (settings.max_body_bytes, settings.language, settings.tiny_demo) == (
        int(2.5 * 1024 * 1024),
        "en",
        False,
    )


@pytest.mark.parametrize("argv", [["serve", "--duplex", "--simplex"], ["serve", "--max-body-mb", "0"], []])
def test_bad_command_lines_exit_with_usage_errors(argv):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2


def test_check_models_exit_status(tmp_path, capsys):
    assert cli.main(["check-models", str(tmp_path / "missing")]) == 1
    assert "NOT USABLE" in capsys.readouterr().out


def test_check_models_accepts_the_tiny_directory(tiny_model_dir, capsys):
    assert cli.main(["check-models", str(tiny_model_dir)]) == 0
    assert "Result: OK" in capsys.readouterr().out
