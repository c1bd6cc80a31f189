"""``adjoint-sampling sample -i FILE -o OUT``: a batch with broken lines, a salt and an open stereocentre runs to
the end with one SDF (titles = IDs, input properties carried), a report and a failures file with every reason;
``--jobs 2`` gives the same file as one process; ``-o`` is ``--out``; stereo is refused (exit 2) or enumerated."""

from __future__ import annotations

import csv
import gzip
import json
import re
from pathlib import Path

import pytest
import torch
from rdkit import Chem
from rdkit.Chem import rdDistGeom

from cli.main import main
from molecules.xyz import read_xyz

BATCH = """\
# a comment line, then molecules with IDs
CCO ethanol
C1CC broken-ring
OCCCC(=O)N hydroxybutanamide
C(C)(C)(C)(C)C pentavalent
[Na+].[O-]C(=O)c1ccccc1 sodium-benzoate
CC(O)CC butan-2-ol
CC[Se]C selenide
"""
GOOD = ["ethanol", "hydroxybutanamide"]
REASONS = {
    "broken-ring": "cannot parse SMILES",
    "pentavalent": "invalid chemistry",
    "sodium-benzoate": "disconnected fragments",
    "butan-2-ol": "stereocentre (C1)",
    "selenide": "unsupported element",
}


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _sample(checkpoint: Path, *args: str) -> int:
    return main(["sample", *args, "--checkpoint", str(checkpoint), "--energy-model", "mmff", "-n", "4", "--seed", "3"])


def test_batch_with_broken_lines_and_a_salt_runs_to_the_end(tiny_conformer_checkpoint: Path, tmp_path: Path) -> None:
    source = tmp_path / "batch.smi"
    source.write_text(BATCH)
    out = tmp_path / "out.sdf"
    assert _sample(tiny_conformer_checkpoint, "-i", str(source), "-o", str(out), "--no-progress") == 0

    report = _rows(tmp_path / "out.report.csv")
    assert [r["id"] for r in report] == [*GOOD[:1], "broken-ring", GOOD[1], *list(REASONS)[1:]]  # input order
    by_id = {r["id"]: r for r in report}
    for name in GOOD:
        row = by_id[name]
        assert row["status"] == "ok" and int(row["conformers_returned"]) >= 1 and row["energy_model"] == "mmff"
        assert float(row["seconds"]) > 0
    assert by_id["broken-ring"]["line"] == "3" and by_id["hydroxybutanamide"]["smiles"] == "OCCCC(=O)N"

    failures = {r["id"]: r for r in _rows(tmp_path / "out.failures.csv")}
    assert set(failures) == set(REASONS)
    for name, words in REASONS.items():
        assert words in failures[name]["reason"], failures[name]
        assert by_id[name]["status"] == "failed" and words in by_id[name]["message"]
    assert "--stereo enumerate" in failures["butan-2-ol"]["reason"]

    mols = list(Chem.SDMolSupplier(str(out), removeHs=False))
    assert all(m is not None for m in mols)
    titles = [m.GetProp("_Name") for m in mols]
    assert titles == sorted(titles, key=GOOD.index)  # one molecule's records together, in input order
    for name in GOOD:
        assert titles.count(name) == int(by_id[name]["conformers_returned"])
    weights: dict[str, float] = {}
    for m in mols:
        weights[m.GetProp("_Name")] = weights.get(m.GetProp("_Name"), 0.0) + m.GetDoubleProp("boltzmann_weight")
        assert m.GetProp("energy_model") == "mmff" and m.HasProp("relative_energy_kcal_mol")
    assert weights == pytest.approx(dict.fromkeys(GOOD, 1.0), abs=1e-5)


def test_csv_and_sdf_inputs_carry_their_properties(tiny_conformer_checkpoint: Path, tmp_path: Path) -> None:
    table = tmp_path / "in.csv"
    table.write_text("name,smiles,corrected_smiles,vendor\nA1,CCO,CCO,ACME\nA2,CCN,CCN,Sigma\n")
    out = tmp_path / "csv.sdf.gz"
    args = ["-i", str(table), "-o", str(out), "--smiles-column", "corrected_smiles", "--no-progress"]
    assert _sample(tiny_conformer_checkpoint, *args) == 0
    with gzip.open(out, "rb") as fh:
        mols = list(Chem.ForwardSDMolSupplier(fh, removeHs=False))
    assert {m.GetProp("_Name") for m in mols} == {"A1", "A2"}
    assert {m.GetProp("_Name"): m.GetProp("vendor") for m in mols} == {"A1": "ACME", "A2": "Sigma"}
    assert all(m.GetProp("smiles") == m.GetProp("input_smiles") for m in mols)  # other columns carried
    assert (tmp_path / "csv.report.csv").exists()

    records = tmp_path / "in.sdf"
    embedded = Chem.AddHs(Chem.MolFromSmiles("OCCN"))
    rdDistGeom.EmbedMolecule(embedded, randomSeed=2)
    embedded.SetProp("_Name", "ethanolamine")
    embedded.SetProp("batch", "7")
    with Chem.SDWriter(str(records)) as writer:
        writer.write(embedded)
    with open(records, "a") as fh:
        fh.write("garbage\n  not a mol block\n$$$$\n")
    out_sdf = tmp_path / "from-sdf.sdf"
    assert _sample(tiny_conformer_checkpoint, "-i", str(records), "-o", str(out_sdf), "--no-progress") == 0
    back = list(Chem.SDMolSupplier(str(out_sdf), removeHs=False))
    assert back and {m.GetProp("_Name") for m in back} == {"ethanolamine"} and back[0].GetProp("batch") == "7"
    assert [a.GetSymbol() for a in back[0].GetAtoms()] == [a.GetSymbol() for a in embedded.GetAtoms()]
    assert [r["status"] for r in _rows(tmp_path / "from-sdf.report.csv")] == ["ok", "failed"]


def test_parallel_jobs_write_the_same_file_as_one_process(tiny_conformer_checkpoint: Path, tmp_path: Path) -> None:
    source = tmp_path / "three.smi"
    source.write_text("CCO a\nC1CC b\nOCCCC(=O)N c\nCCN d\n")
    one, two = tmp_path / "one.xyz", tmp_path / "two.xyz"
    assert _sample(tiny_conformer_checkpoint, "-i", str(source), "-o", str(one), "--no-progress") == 0
    args = ["-i", str(source), "-o", str(two), "--jobs", "2", "--no-progress"]
    assert _sample(tiny_conformer_checkpoint, *args) == 0
    assert one.read_text() == two.read_text()
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in _rows(tmp_path / "two.report.csv")]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in _rows(tmp_path / "one.report.csv")]
    frames = read_xyz(one)  # CREST layout, each comment: the energy in Hartree, then the molecule's ID
    assert frames and all(re.fullmatch(r" +-?\d+\.\d{8}  [acd]", f.comment) for f in frames)


def test_short_out_flag_and_stereo_from_the_command_line(
    tiny_conformer_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "single.sdf"
    assert _sample(tiny_conformer_checkpoint, "OCCCC(=O)N", "-o", str(out)) == 0
    assert out.exists() and "wrote" in capsys.readouterr().out
    mols = list(Chem.SDMolSupplier(str(out), removeHs=False))
    assert mols[0].GetProp("_Name") == "OCCCC(=O)N" and mols[0].GetProp("conformer_rank") == "1"

    assert _sample(tiny_conformer_checkpoint, "CC(O)CC", "-o", str(tmp_path / "x.sdf")) == 2
    err = capsys.readouterr().err
    assert "1 stereocentre (C1)" in err and "--stereo enumerate" in err
    assert not (tmp_path / "x.sdf").exists()

    out_json = tmp_path / "isomers.json"
    assert _sample(tiny_conformer_checkpoint, "CC(O)CC", "--stereo", "enumerate", "-o", str(out_json)) == 0
    doc = json.loads(out_json.read_text())
    assert doc["smiles"] == "CC(O)CC" and len(doc["stereoisomers"]) == 2
    assert {s["isomeric_smiles"] for s in doc["stereoisomers"]} == {"CC[C@H](C)O", "CC[C@@H](C)O"}
    assert [s["stereoisomer"] for s in doc["stereoisomers"]] == [1, 2]

    assert main(["sample", "CCO", "-i", str(out)]) == 2  # a SMILES or a file, not both
    assert main(["sample", "-i", str(tmp_path / "none.smi"), "-o", str(out)]) == 2
    assert "none.smi" in capsys.readouterr().err
