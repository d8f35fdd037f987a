"""GPTVIZ_* settings: defaults, sizes in MiB, whole numbers, and clear errors for bad values."""

import pytest

from gptviz.settings import MIB, env_int, env_mib


def test_unset_or_blank_means_the_default(monkeypatch):
    monkeypatch.delenv("GPTVIZ_X", raising=False)
    assert env_mib("GPTVIZ_X", 24) == 24 * MIB
    assert env_int("GPTVIZ_X", 2) == 2
    monkeypatch.setenv("GPTVIZ_X", "  ")
    assert env_mib("GPTVIZ_X", 1.5) == int(1.5 * MIB)


@pytest.mark.parametrize("raw, expected", [("700", 700 * MIB), ("0.5", MIB // 2), ("0", 0), (" 1e3 ", 1000 * MIB)])
def test_sizes_in_mib(monkeypatch, raw, expected):
    monkeypatch.setenv("GPTVIZ_X", raw)
    assert env_mib("GPTVIZ_X", 1) == expected


@pytest.mark.parametrize("raw", ["abc", "-1", "nan", "inf", "12MB"])
def test_a_bad_size_names_the_variable(monkeypatch, raw):
    monkeypatch.setenv("GPTVIZ_TRACE_CACHE_MB", raw)
    with pytest.raises(ValueError, match=r"GPTVIZ_TRACE_CACHE_MB must be a size in MiB .*got"):
        env_mib("GPTVIZ_TRACE_CACHE_MB", 256)


@pytest.mark.parametrize("raw, ok", [("2", 2), ("2.0", 2), ("1", 1), ("0", None), ("2.5", None), ("two", None)])
def test_whole_numbers(monkeypatch, raw, ok):
    monkeypatch.setenv("GPTVIZ_TORCH_THREADS", raw)
    if ok is None:
        with pytest.raises(ValueError, match="GPTVIZ_TORCH_THREADS must be a whole number"):
            env_int("GPTVIZ_TORCH_THREADS", 1)
    else:
        assert env_int("GPTVIZ_TORCH_THREADS", 1) == ok


@pytest.mark.parametrize("name", ["GPTVIZ_PROMPT_CACHE_MB", "GPTVIZ_INIT_CACHE_MB"])
def test_the_app_refuses_a_bad_setting_at_start_with_its_name(name):
    """Imported with a bad value, the UI module stops with the variable's name (a subprocess:
    this test process has the module imported already). The init cache's bound is otherwise
    read only when a model is written, in a background thread, where an error would go unseen."""
    import os
    import subprocess
    import sys

    env = {**os.environ, name: "lots"}
    done = subprocess.run([sys.executable, "-c", "import gptviz.ui"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode != 0
    assert f"{name} must be a size in MiB" in done.stderr
