"""The console script, run as a user would (a subprocess), with its errors."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

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


def test_train_then_sample_to_npy_and_xyz(tmp_path: Path) -> None:
    ck = tmp_path / "dw4.pt"
    run("train", "--system", "dw4", "--out", str(ck), "--rounds", "1", "--weights-only")
    assert ck.is_file()
    out = run("sample", "--checkpoint", str(ck), "-n", "7", "--steps", "10", "--out", str(tmp_path / "s.npy"))
    assert "DW4: 7 samples" in out.stdout
    x = np.load(tmp_path / "s.npy")
    assert x.shape == (7, 8) and np.isfinite(x).all()
    run("sample", "--checkpoint", str(ck), "-n", "2", "--steps", "5", "--out", str(tmp_path / "s.xyz"))
    lines = (tmp_path / "s.xyz").read_text().splitlines()
    assert lines[0] == "4" and len(lines) == 2 * 6
    bad = run(
        "sample", "--checkpoint", str(ck), "-n", "2", "--steps", "5", "--out", str(tmp_path / "s.csv"), check=False
    )
    assert bad.returncode == 2 and ".npy or .xyz" in bad.stderr
    resume = run(
        "train", "--system", "dw4", "--out", str(tmp_path / "r.pt"), "--rounds", "2", "--resume", str(ck), check=False
    )
    assert resume.returncode == 2 and "cannot be resumed" in resume.stderr


def test_energy_command_validates_shape(tmp_path: Path) -> None:
    np.save(tmp_path / "bad.npy", np.zeros((3, 5)))
    proc = run("energy", "--system", "lj13", str(tmp_path / "bad.npy"), check=False)
    assert proc.returncode == 2 and "[n, 39]" in proc.stderr
    np.save(tmp_path / "ok.npy", np.random.default_rng(0).normal(size=(3, 8)) * 2)
    assert "3 samples" in run("energy", "--system", "dw4", str(tmp_path / "ok.npy")).stdout


@pytest.mark.parametrize("args", [["sample", "-n", "0"], ["train", "--system", "lj99", "--out", "x.pt"]])
def test_bad_arguments_exit_2(args: list[str]) -> None:
    assert run(*args, check=False).returncode == 2
