"""The console script and its errors. Exit statuses and messages of a real process are checked through
``python -m cli.main`` (a subprocess, as a user runs it); the train -> sample -> files round trip and the energy
command's checks run in-process through ``cli.main.main`` (each process would pay the torch import again)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cli.main import main

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "cli.main", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_help_lists_subcommands() -> None:
    out = run("--help").stdout
    for sub in ("train", "sample", "energy", "bench"):
        assert sub in out


def test_missing_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    proc = run("sample", "--checkpoint", str(tmp_path / "nope.pt"), check=False)
    assert proc.returncode == 2
    assert "checkpoint not found" in proc.stderr and "Traceback" not in proc.stderr


def in_process(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``adjoint-sampling ARGS`` through ``cli.main.main``: exit status, stdout, stderr."""
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_train_then_sample_to_npy_and_xyz(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ck = tmp_path / "dw4.pt"
    code, _, err = in_process(capsys, "train", "--system", "dw4", "--out", str(ck), "--rounds", "1", "--weights-only")
    assert code == 0, err
    assert ck.is_file()
    code, out, err = in_process(
        capsys, "sample", "--checkpoint", str(ck), "-n", "7", "--steps", "10", "--out", str(tmp_path / "s.npy")
    )
    assert code == 0, err
    assert "DW4: 7 samples" in out
    x = np.load(tmp_path / "s.npy")
    assert x.shape == (7, 8) and np.isfinite(x).all()
    code, _, err = in_process(
        capsys, "sample", "--checkpoint", str(ck), "-n", "2", "--steps", "5", "--out", str(tmp_path / "s.xyz")
    )
    assert code == 0, err
    lines = (tmp_path / "s.xyz").read_text().splitlines()
    assert lines[0] == "4" and len(lines) == 2 * 6
    code, _, err = in_process(
        capsys, "sample", "--checkpoint", str(ck), "-n", "2", "--steps", "5", "--out", str(tmp_path / "s.csv")
    )
    assert code == 2 and ".npy or .xyz" in err
    code, _, err = in_process(
        capsys, "train", "--system", "dw4", "--out", str(tmp_path / "r.pt"), "--rounds", "2", "--resume", str(ck)
    )
    assert code == 2 and "cannot be resumed" in err


def test_energy_command_validates_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    np.save(tmp_path / "bad.npy", np.zeros((3, 5)))
    code, _, err = in_process(capsys, "energy", "--system", "lj13", str(tmp_path / "bad.npy"))
    assert code == 2 and "[n, 39]" in err
    np.save(tmp_path / "ok.npy", np.random.default_rng(0).normal(size=(3, 8)) * 2)
    code, out, err = in_process(capsys, "energy", "--system", "dw4", str(tmp_path / "ok.npy"))
    assert code == 0 and "3 samples" in out, err


@pytest.mark.parametrize("args", [["sample", "-n", "0"], ["train", "--system", "lj99", "--out", "x.pt"]])
def test_bad_arguments_exit_2(args: list[str]) -> None:
    assert run(*args, check=False).returncode == 2


@pytest.mark.skipif(not (ROOT.parent / "shared" / "data" / "spice").is_dir(), reason="needs ../shared/data")
def test_train_torsional_options_reach_the_run_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from training.checkpoint import load_checkpoint

    ck = tmp_path / "t.pt"
    common = ["train-torsional", "--out", str(ck), "--molecules", "3", "--seeds", "1", "--warmup-steps", "0"]
    common += ["--rounds", "1", "--sde-steps", "3", "--layers", "1", "--hidden", "8"]
    code, out, err = in_process(
        capsys, *common, "--window", "0.3", "--max-atoms", "30", "--max-heavy-atoms", "12", "--acyl-rule"
    )
    assert code == 0, err
    assert "round 1/1" in out
    config = load_checkpoint(ck)["config"]
    assert config["window_ev"] == 0.3 and config["acyl_rule"] is True
    assert config["selection"]["max_atoms"] == 30 and config["selection"]["max_heavy_atoms"] == 12
    code, _, err = in_process(capsys, *common, "--window", "-1")
    assert code == 2 and "window_ev must be >= 0" in err
