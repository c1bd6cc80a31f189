"""The conformer sampler end to end: train briefly (warm-up + one RAM round on MMFF), sample through the CLI."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from rdkit import Chem

from cli.conformers import write_conformers
from cli.main import main
from inference.conformer_sampling import ConformerSampler, SamplingRequest
from molecules.dataset import MoleculeFilter, held_out_keys, load_training_molecules
from molecules.etkdg import embed_many
from molecules.smiles import mol_from_smiles
from molecules.structures import with_conformers
from molecules.xyz import read_xyz
from sampler.egnn import EGNNConfig
from training.conformer_training import ConformerRunConfig, train_conformers
from training.paths import DEFAULT_DATA

pytestmark = pytest.mark.skipif(not (DEFAULT_DATA / "spice").is_dir(), reason="needs ../shared/data")


@pytest.fixture(scope="module")
def tiny_checkpoint(tiny_conformer_checkpoint: Path) -> Path:
    """The session's tiny checkpoint (``benchmarks.service_load.tiny_conformer_config``: warm-up + one RAM round)."""
    payload = torch.load(tiny_conformer_checkpoint, weights_only=True)
    assert payload["round"] == 1 and payload["energy_calls"] == 8
    return tiny_conformer_checkpoint


def test_held_out_molecules_never_train() -> None:
    keys = held_out_keys(DEFAULT_DATA)
    assert len(keys) > 1000  # 68 SPICE + 40 DRUGS + ~1000 GEOM-DRUGS connectivity keys
    mols = load_training_molecules(
        DEFAULT_DATA / "spice" / "spice_train.txt", data_dir=DEFAULT_DATA, selection=MoleculeFilter(), limit=50
    )
    for m in mols:
        key = Chem.MolToInchiKey(Chem.MolFromSmiles(m.smiles)).split("-")[0]
        assert key not in keys


def test_etkdg_keeps_atom_order() -> None:
    mol = mol_from_smiles("OCC(=O)N")
    (confs,) = embed_many([mol], 3, seed=0, show_progress=False)
    assert confs.shape == (3, mol.GetNumAtoms(), 3)
    assert abs(confs[0] - confs[1]).max() > 0.1  # distinct conformers (RDKit's randomSeed=0 would repeat one)
    # bonded atoms are ~1-1.6 Å apart in every conformer, in the input's atom order
    for b in mol.GetBonds():
        d = ((confs[:, b.GetBeginAtomIdx()] - confs[:, b.GetEndAtomIdx()]) ** 2).sum(-1) ** 0.5
        assert ((d > 0.9) & (d < 1.7)).all()


def test_config_round_trips_and_resume_refuses_other_config(tiny_checkpoint: Path, tmp_path: Path) -> None:
    payload = torch.load(tiny_checkpoint, weights_only=True)
    config = ConformerRunConfig.from_dict(payload["config"])
    assert config.to_dict() == payload["config"]
    other = dataclasses.replace(
        config, max_rounds=5, network=EGNNConfig(**{**payload["config"]["network"], "hidden": 8})
    )
    with pytest.raises(ValueError, match="different configuration"):
        train_conformers(other, data_dir=DEFAULT_DATA, seed=0, out=None, resume=tiny_checkpoint, show_progress=False)


def test_sampler_accounts_for_every_draw(tiny_checkpoint: Path) -> None:
    sampler = ConformerSampler(tiny_checkpoint, energy=None)
    result = sampler.sample(SamplingRequest(smiles="CCO", num_conformers=6, seed=1))
    assert result.num_conformers + sum(result.rejected.values()) == 6
    again = sampler.sample(SamplingRequest(smiles="CCO", num_conformers=6, seed=1))
    assert again.rejected == result.rejected  # seeded


def test_write_conformers_round_trips(tmp_path: Path) -> None:
    mol = mol_from_smiles("CCO")
    (confs,) = embed_many([mol], 3, seed=2, show_progress=False)
    with_confs = with_conformers(mol, confs)
    energies = [-1.0, -0.9, -0.5]
    write_conformers(tmp_path / "c.sdf", "CCO", with_confs, energies)
    records = list(Chem.SDMolSupplier(str(tmp_path / "c.sdf"), removeHs=False))
    assert [r.GetNumAtoms() for r in records] == [9, 9, 9]
    # the SD tag schema (docs/OUTPUT.md) writes relative energies with 4 decimals
    assert records[1].GetDoubleProp("relative_energy_kcal_mol") == pytest.approx(0.1 * 23.0605478, abs=1e-4)
    assert abs(records[2].GetConformer().GetPositions() - confs[2]).max() < 1e-3
    write_conformers(tmp_path / "c.json", "CCO", with_confs, energies)
    doc = json.loads((tmp_path / "c.json").read_text())
    assert doc["elements"][:3] == ["C", "C", "O"] and len(doc["conformers"]) == 3
    write_conformers(tmp_path / "c.xyz", "CCO", with_confs, energies)
    assert len(read_xyz(tmp_path / "c.xyz")) == 3


def test_cli_sample_reports_every_draw(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.sdf"
    args = ["sample", "CCO", "-n", "4", "--checkpoint", str(tiny_checkpoint), "--energy-model", "mmff"]
    assert main([*args, "--out", str(out)]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    summary = json.loads(line.split("returned", 1)[1])
    # near-duplicates are removed by default (`pruned`): every draw is still accounted for
    assert summary["returned"] + sum(summary["rejected"].values()) + summary["pruned"] == 4
    assert out.exists() == (summary["returned"] > 0)


@pytest.mark.parametrize(
    ("smiles", "message"),
    [("C1CC", "cannot parse"), ("C[Se]C", "unsupported element"), ("CCO.O", "fragments")],
)
def test_cli_sample_bad_smiles(
    tiny_checkpoint: Path, smiles: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sample", smiles, "--checkpoint", str(tiny_checkpoint), "--energy-model", "none"]) == 2
    assert message in capsys.readouterr().err


def test_cli_sample_missing_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sample", "CCO", "--checkpoint", str(tmp_path / "nope.pt"), "--energy-model", "none"]) == 2
    assert "not found" in capsys.readouterr().err


def test_init_from_copies_the_weights(tiny_checkpoint: Path, tmp_path: Path) -> None:
    payload = torch.load(tiny_checkpoint, weights_only=True)
    config = dataclasses.replace(ConformerRunConfig.from_dict(payload["config"]), max_rounds=0, warmup_steps=0)
    out = tmp_path / "fine.pt"
    trainer = train_conformers(
        config, data_dir=DEFAULT_DATA, seed=1, out=out, init_from=tiny_checkpoint, show_progress=False
    )
    assert trainer.round == 0
    assert torch.load(out, weights_only=True)["extra"]["init_from"]["path"] == str(tiny_checkpoint)
    for name, value in trainer.control.state_dict().items():
        assert torch.equal(value, payload["control"][name]), name
    other = dataclasses.replace(config, network=dataclasses.replace(config.network, hidden=8))
    with pytest.raises(ValueError, match="cannot start from its weights"):
        train_conformers(other, data_dir=DEFAULT_DATA, seed=1, out=None, init_from=tiny_checkpoint, show_progress=False)


def test_adjoint_benchmark_method_returns_the_unfiltered_samples(tiny_checkpoint: Path) -> None:
    from benchmarks.methods import GenerationError, MethodSettings, build_methods

    (method,) = build_methods(["adjoint"], MethodSettings(checkpoint=str(tiny_checkpoint), sampling_steps=5))
    mol = mol_from_smiles("CC(=O)Nc1ccc(O)cc1")
    out = method.generator.generate(mol, 3, seed=7)
    assert out.GetNumConformers() == 3 and out.GetNumAtoms() == mol.GetNumAtoms()
    expected = ConformerSampler(tiny_checkpoint).sample_positions(mol, 3, seed=7, steps=5)
    assert abs(out.GetConformer(2).GetPositions() - expected[2]).max() < 1e-5  # seeded, unfiltered
    with pytest.raises(GenerationError, match="unsupported element"):
        method.generator.generate(mol_from_smiles("C[Se]C"), 2, seed=7)


def test_refine_fine_tunes_a_copy_on_the_requested_molecule(tiny_checkpoint: Path) -> None:
    from energy.mmff import MmffEnergy

    sampler = ConformerSampler(tiny_checkpoint, energy=MmffEnergy())
    before = {k: v.clone() for k, v in sampler.control.state_dict().items()}
    mol = mol_from_smiles("OCC(=O)N")
    refined = sampler.refined_control(mol, 2, seed=3)
    changed = [k for k, v in refined.state_dict().items() if not torch.equal(v, before[k])]
    assert changed  # the copy was trained ...
    for k, v in sampler.control.state_dict().items():
        assert torch.equal(v, before[k]), k  # ... and the shared model was not
    result = sampler.sample(SamplingRequest(smiles="OCC(=O)N", num_conformers=4, seed=3, refine_rounds=1))
    assert "refine" in result.seconds and result.num_conformers + sum(result.rejected.values()) == 4
    with pytest.raises(ValueError, match="needs an energy model"):
        ConformerSampler(tiny_checkpoint).refined_control(mol, 1, seed=0)


def test_repair_optimizes_every_raw_sample_before_the_checks(tiny_checkpoint: Path) -> None:
    sampler = ConformerSampler(tiny_checkpoint)
    plain = sampler.sample(SamplingRequest(smiles="OCC(=O)N", num_conformers=5, seed=4))
    fixed = sampler.sample(SamplingRequest(smiles="OCC(=O)N", num_conformers=5, seed=4, repair=True, repair_iters=500))
    assert plain.repaired == 0 and fixed.repaired == 5 and "repair" in fixed.seconds
    assert fixed.num_conformers + sum(fixed.rejected.values()) == 5
    assert fixed.num_conformers >= plain.num_conformers  # MMFF restores the bond graph the tiny model misses
    boron = sampler.sample(SamplingRequest(smiles="CB(C)C", num_conformers=2, seed=4, repair=True))
    assert boron.repaired == 0 and boron.repair_skipped and "cannot type" in boron.repair_skipped
