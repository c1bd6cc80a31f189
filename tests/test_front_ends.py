"""One request, three front ends: the command line, the HTTP service (a real uvicorn server) and the Python API
give the same conformers for the same seed and checkpoint, under the same defaults; stereochemistry is refused
(exit 2 / 422 naming the field and atoms / UnassignedStereoError) or enumerated the same way in each."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from rdkit import Chem

from cli.main import main
from inference.api import generate_conformers
from inference.options import DEFAULTS
from molecules.stereo import UnassignedStereoError
from service.settings import ServiceSettings
from tests.helpers import live_server

pytestmark = pytest.mark.redis

MOLECULE = "OCCCC(=O)N"
REQUEST: dict[str, Any] = {"smiles": MOLECULE, "num_conformers": 8, "seed": 11, "energy_model": "mmff"}


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)  # the server's sampling threads run one torch thread too


@pytest.fixture(scope="module")
def api(tiny_conformer_checkpoint: Path, redis_url: str) -> Iterator[httpx.Client]:
    settings = ServiceSettings(
        checkpoint=tiny_conformer_checkpoint,
        redis_url=redis_url,
        redis_prefix="front-ends",
        energy_model="xtb",
        energy_models=("xtb", "mmff"),
        sampling_threads=1,
        torch_threads=1,
        inprocess_workers=1,
    )
    with live_server(settings) as url, httpx.Client(base_url=url, timeout=120) as client:
        yield client


def test_cli_http_and_python_give_the_same_conformers(
    api: httpx.Client, tiny_conformer_checkpoint: Path, tmp_path: Path
) -> None:
    answer = api.post("/v1/conformers", json=REQUEST).json()
    http = np.array([c["positions"] for c in answer["conformers"]])
    post = answer["provenance"]["post_processing"]
    # the service's defaults are the Python API's and the CLI's, with select resolved to this (Cartesian) model's
    assert post == {**DEFAULTS.to_dict(), "select": False}

    mol = generate_conformers(
        MOLECULE, num_conformers=8, seed=11, energy_model="mmff", checkpoint=tiny_conformer_checkpoint
    )
    python = np.array([c.GetPositions() for c in mol.GetConformers()])

    out = tmp_path / "cli.sdf"
    argv = ["sample", MOLECULE, "-n", "8", "--seed", "11", "--energy-model", "mmff", "-o", str(out)]
    assert main([*argv, "--checkpoint", str(tiny_conformer_checkpoint)]) == 0
    records = list(Chem.SDMolSupplier(str(out), removeHs=False))
    cli = np.array([m.GetConformer().GetPositions() for m in records])

    assert len(http) == len(python) == len(cli) >= 1
    assert answer["checks"]["pruned"] == mol.GetIntProp("duplicates_removed")
    np.testing.assert_allclose(http, python, atol=1e-4)  # JSON: 5 decimals
    np.testing.assert_allclose(cli, python, atol=1e-3)  # SDF: 4 decimals
    energies = [c.GetDoubleProp("energy_eV") for c in mol.GetConformers()]
    assert [c["energy_ev"] for c in answer["conformers"]] == pytest.approx(energies, abs=1e-6)
    assert [float(m.GetProp("energy_eV")) for m in records] == pytest.approx(energies, abs=1e-6)
    weights = [c["boltzmann_weight"] for c in answer["conformers"]]
    assert sum(weights) == pytest.approx(1.0)
    assert [float(m.GetProp("boltzmann_weight")) for m in records] == pytest.approx(weights, abs=1e-5)
    assert [c["conformer_rank"] for c in answer["conformers"]] == [int(m.GetProp("conformer_rank")) for m in records]

    sdf = api.post("/v1/conformers", json={**REQUEST, "format": "sdf"})  # the same tags as the CLI's file
    served = list(Chem.ForwardSDMolSupplier(io.BytesIO(sdf.content), removeHs=False))
    assert [m.GetPropsAsDict() for m in served] == [m.GetPropsAsDict() for m in records]
    assert served[0].GetProp("_Name") == records[0].GetProp("_Name") == MOLECULE
    assert {m.GetProp("pipeline") for m in records} == {"MMFF94-repaired draws"}  # the Cartesian model's default


def test_unassigned_stereo_is_refused_everywhere(
    api: httpx.Client, tiny_conformer_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    r = api.post("/v1/conformers", json={**REQUEST, "smiles": "CC=CC(O)CC"})
    assert r.status_code == 422
    (detail,) = r.json()["detail"]
    assert detail["field"] == "smiles" and detail["type"] == "molecule"
    assert "1 stereocentre (C3) and 1 double bond (C1=C2)" in detail["msg"] and '"stereo": "enumerate"' in detail["msg"]
    jobs = api.post("/v1/jobs", json={"smiles": ["CCO", "CC(O)CC"]})
    assert jobs.status_code == 422 and jobs.json()["detail"][0]["field"] == "smiles[1]"

    argv = ["sample", "CC=CC(O)CC", "--energy-model", "mmff", "--checkpoint", str(tiny_conformer_checkpoint)]
    assert main(argv) == 2
    assert "1 stereocentre (C3) and 1 double bond (C1=C2)" in capsys.readouterr().err
    with pytest.raises(UnassignedStereoError, match=r"1 stereocentre \(C3\) and 1 double bond \(C1=C2\)"):
        generate_conformers("CC=CC(O)CC", energy_model="mmff", checkpoint=tiny_conformer_checkpoint)


def test_relaxed_selection_needs_the_torsional_model_everywhere(
    api: httpx.Client, tiny_conformer_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    r = api.post("/v1/conformers", json={**REQUEST, "select": True})
    assert r.status_code == 422 and "needs the torsional model" in r.text
    for asked in (None, False):  # the Cartesian model's default is off, and asking for off is no error
        r = api.post("/v1/conformers", json={**REQUEST, "select": asked})
        assert r.status_code == 200 and r.json()["provenance"]["post_processing"]["select"] is False
    argv = ["sample", MOLECULE, "--select", "--energy-model", "mmff", "--checkpoint", str(tiny_conformer_checkpoint)]
    assert main(argv) == 2
    assert "needs the torsional model" in capsys.readouterr().err
    with pytest.raises(ValueError, match="needs the torsional model"):
        generate_conformers(MOLECULE, energy_model="mmff", checkpoint=tiny_conformer_checkpoint, select=True)


def test_enumerated_stereoisomers_over_http(api: httpx.Client) -> None:
    body = {**REQUEST, "smiles": "CC(O)CC", "num_conformers": 3, "stereo": "enumerate"}
    doc = api.post("/v1/conformers", json=body).json()
    assert doc["smiles"] == "CC(O)CC" and [s["stereoisomer"] for s in doc["stereoisomers"]] == [1, 2]
    assert [s["smiles"] for s in doc["stereoisomers"]] == ["CC[C@H](C)O", "CC[C@@H](C)O"]
    assert all(s["input_smiles"] == "CC(O)CC" and s["elements"][:3] == ["C", "C", "O"] for s in doc["stereoisomers"])
    sdf = api.post("/v1/conformers", json={**body, "format": "sdf"})
    mols = list(Chem.ForwardSDMolSupplier(io.BytesIO(sdf.content), removeHs=False))
    assert {m.GetProp("isomeric_smiles") for m in mols} == {"CC[C@H](C)O", "CC[C@@H](C)O"}
    for m in mols:  # the 3D coordinates carry each isomer's configuration
        Chem.AssignStereochemistryFrom3D(m)
        assert Chem.MolToSmiles(Chem.RemoveHs(m)) == m.GetProp("isomeric_smiles")

    job = api.post("/v1/jobs", json={**body, "smiles": ["CC(O)CC", "CCO"]}).json()
    deadline = time.monotonic() + 60
    while api.get(f"/v1/jobs/{job['id']}").json()["status"] not in ("done", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    results = api.get(f"/v1/jobs/{job['id']}/result").json()["results"]
    assert [len(r["stereoisomers"]) for r in results] == [2, 1] and results[0]["result"] is None


def test_no_select_flag_is_the_python_apis_select_false(tmp_path: Path) -> None:
    """The CLI with the torsional model: no flag is relaxed selection (``select=None``, the model's default),
    ``--no-select`` the fast pipeline (``select=False``): each the Python API's conformers, not each other's."""
    shipped = Path(__file__).resolve().parent.parent / "checkpoints" / "torsional.pt"
    written = {}
    for flags, select in (([], None), (["--no-select"], False)):
        out = tmp_path / f"{select}.sdf"
        argv = ["sample", "CCOC(C)=O", "-n", "6", "--seed", "3", "--energy-model", "mmff", "--dedup-rmsd", "0"]
        assert main([*argv, "--checkpoint", str(shipped), "-o", str(out), *flags]) == 0
        records = list(Chem.SDMolSupplier(str(out), removeHs=False))
        cli = np.array([m.GetConformer().GetPositions() for m in records])
        expected = "MMFF94-relaxed draws" if select is False else "relaxed selection (MMFF94)"
        assert {m.GetProp("pipeline") for m in records} == {expected}
        mol = generate_conformers(
            "CCOC(C)=O", num_conformers=6, seed=3, energy_model="mmff", dedup_rmsd=0, checkpoint=shipped, select=select
        )
        np.testing.assert_allclose(cli, np.array([c.GetPositions() for c in mol.GetConformers()]), atol=1e-3)
        written[select] = cli
    assert written[None].shape == written[False].shape and not np.allclose(written[None], written[False], atol=1e-2)
