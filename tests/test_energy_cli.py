"""``adjoint-sampling energy`` on SDF and XYZ conformer files, run in-process through ``cli.main.main``."""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from rdkit import Chem
from rdkit.Chem import rdDistGeom

from cli.main import main
from energy.mmff import KCAL_PER_MOL_IN_EV, MmffEnergy
from energy.relax import select_structures
from molecules.sdf import read_sdf, write_sdf
from molecules.topology import molecules_structures, read_conformers
from molecules.xyz import XyzFrame, write_xyz


def conformers(smiles: str, n: int, name: str, seed: int = 3) -> list[Chem.Mol]:
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    ids = list(rdDistGeom.EmbedMultipleConfs(mol, n, randomSeed=seed))
    out = []
    for k, cid in enumerate(ids):
        m = Chem.Mol(mol, confId=cid)
        m.SetProp("_Name", f"{name} {k}")
        out.append(m)
    return out


@pytest.fixture
def sdf(tmp_path: Path) -> Path:
    """Three butanol conformers, an acetate anion and a boronic acid (MMFF has no boron)."""
    mols = conformers("CCCCO", 3, "butanol") + conformers("CC(=O)[O-]", 1, "acetate") + conformers("OB(O)C", 1, "boro")
    return write_sdf(tmp_path / "in.sdf", mols)


def xyz_file(path: Path, mols: list[Chem.Mol]) -> Path:
    frames = [
        XyzFrame(tuple(a.GetSymbol() for a in m.GetAtoms()), m.GetConformer().GetPositions(), m.GetProp("_Name"))
        for m in mols
    ]
    return write_xyz(path, frames)


def run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    code = main(["energy", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_sdf_energies_match_the_model(sdf: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.sdf"
    code, stdout, _ = run(capsys, sdf, "--model", "mmff", "--out", out)
    assert code == 0, stdout
    assert "mmff94: 5 conformers" in stdout and "butanol 2" in stdout
    assert "invalid: unsupported element(s) B (Z=5)" in stdout
    direct = MmffEnergy().evaluate(molecules_structures(read_sdf(sdf)))
    written = read_sdf(out)
    assert len(written) == 5
    for k, mol in enumerate(written[:4]):
        assert mol.GetDoubleProp("energy_eV") == pytest.approx(float(direct.energies[k]), rel=1e-12)
        assert mol.GetDoubleProp("energy_kcal_mol") == pytest.approx(float(direct.energies[k]) / KCAL_PER_MOL_IN_EV)
    butanol = [m.GetDoubleProp("relative_energy_kcal_mol") for m in written[:3]]
    e = direct.energies[:3].numpy()
    np.testing.assert_allclose(butanol, (e - e.min()) / KCAL_PER_MOL_IN_EV, atol=1e-9)
    assert written[3].GetDoubleProp("relative_energy_kcal_mol") == 0.0  # alone in its composition
    assert written[4].GetIntProp("valid") == 0 and "B (Z=5)" in written[4].GetProp("reason")
    assert Chem.MolToSmiles(written[3]) == Chem.MolToSmiles(read_sdf(sdf)[3])  # the charge survives


def test_xyz_relax_writes_converged_minima(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mols = conformers("CCCCO", 2, "butanol") + conformers("CC(=O)Nc1ccc(O)cc1", 1, "paracetamol")
    path = xyz_file(tmp_path / "in.xyz.gz", mols)
    assert gzip.open(path, "rt").readline().strip() == "15"
    out = tmp_path / "relaxed.sdf"
    code, stdout, _ = run(capsys, path, "--model", "mmff", "--relax", "--fmax", "0.02", "--out", out)
    assert code == 0, stdout
    assert "(relaxed)" in stdout and stdout.count(" yes ") == 3
    written = read_sdf(out)
    s = molecules_structures(written)
    result = MmffEnergy().evaluate(s)
    assert bool(result.valid.all())
    for k, mol in enumerate(written):
        assert mol.GetIntProp("converged") == 1 and mol.GetIntProp("relax_steps") > 0
        # the SDF keeps 4 decimals of the coordinates: energies and forces move slightly
        assert mol.GetDoubleProp("energy_eV") == pytest.approx(float(result.energies[k]), abs=1e-4)
        assert mol.GetDoubleProp("energy_eV") < mol.GetDoubleProp("initial_energy_eV")
        one = select_structures(s, torch.arange(3) == k)
        assert float(MmffEnergy().evaluate(one).forces.norm(dim=-1).max()) <= 0.02 + 0.01
    # the perceived topology is the original molecule's
    assert [Chem.MolToSmiles(Chem.RemoveHs(m)) for m in written] == [Chem.MolToSmiles(Chem.RemoveHs(m)) for m in mols]


def test_step_limit_and_xyz_output(sdf: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.xyz"
    code, stdout, _ = run(capsys, sdf, "--model", "mmff", "--relax", "--max-steps", "2", "--out", out)
    assert code == 0 and " no " in stdout
    frames = read_conformers(out).names
    assert frames[0].startswith("butanol 0 model=mmff94") and "converged=False relax_steps=2" in frames[0]


def test_wrong_charge_is_reported_per_frame(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = xyz_file(tmp_path / "acetate.xyz", conformers("CC(=O)[O-]", 1, "acetate"))
    code, stdout, _ = run(capsys, path, "--model", "mmff")  # default charge 0: no valid bond orders
    assert code == 0
    assert "no connection table" in stdout and "bond perception failed with total charge 0" in stdout
    code, stdout, _ = run(capsys, path, "--model", "mmff", "--charge", "-1")
    assert code == 0 and stdout.rstrip().endswith("ok")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{tmp}/missing.sdf", "--model", "mmff"], "file not found"),
        (["{sdf}", "--model", "uff"], "unknown energy model 'uff'"),
        (["{bad}", "--model", "mmff"], "record 2 (line"),
        (["{sdf}", "--model", "mmff", "--out", "{tmp}/x.csv"], "use .sdf or .xyz"),
        (["{sdf}", "--model", "mmff", "--checkpoint", "{tmp}/c.pt"], "--checkpoint applies to --model fairchem"),
        (["{sdf}", "--model", "mmff", "--charge", "1"], "record 1 has formal charges summing to 0"),
        (["{sdf}", "--model", "mmff", "--fmax", "-1"], "fmax must be positive"),
        (["{sdf}", "--system", "dw4"], "apply to synthetic .npy samples only"),
        (["{npy}"], "give --system dw4|lj13"),
        (["{tmp}/nope.xyz"], "file not found"),
        (["{txt}", "--model", "mmff"], "give --system"),
    ],
)
def test_clear_errors(
    args: list[str], message: str, sdf: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = sdf.read_text()
    bad = tmp_path / "bad.sdf"
    first = text.split("$$$$\n")[0]
    bad.write_text(first + "$$$$\n" + "broken\n\n\n  x  y  0  0  0  0  0  0  0  0999 V2000\nM  END\n$$$$\n")
    np.save(tmp_path / "s.npy", np.zeros((2, 8)))
    (tmp_path / "x.txt").write_text("1\n\nC 0 0 0\n")
    paths = {"tmp": tmp_path, "sdf": sdf, "bad": bad, "npy": tmp_path / "s.npy", "txt": tmp_path / "x.txt"}
    code, _, err = run(capsys, *[a.format(**paths) for a in args])
    assert code == 2 and message in err and "Traceback" not in err, err


def test_synthetic_path_still_works(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    np.save(tmp_path / "ok.npy", np.random.default_rng(0).normal(size=(3, 8)) * 2)
    code, stdout, _ = run(capsys, "--system", "dw4", tmp_path / "ok.npy")
    assert code == 0 and "3 samples" in stdout


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("tblite") is None, reason="tblite not installed")
def test_default_model_is_gfn2_xtb(sdf: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from energy.xtb import XtbEnergy

    one = sdf.parent / "one.sdf"
    write_sdf(one, read_sdf(sdf)[3:4])  # the acetate anion: charge -1 from the formal charges
    code, stdout, _ = run(capsys, one)
    assert code == 0 and stdout.startswith("GFN2-xTB: 1 conformers")
    with XtbEnergy(workers=0) as model:
        expected = float(model.evaluate(molecules_structures(read_sdf(one))).energies[0])
    assert f"{expected:.6f}" in stdout
