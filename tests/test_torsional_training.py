"""The torsional model end to end: training (warm-up + RAM) resumes exactly, the checkpoint loads by its kind,
and what it samples is valid by construction (bonds, angles and stereo of the seeds kept)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from training.paths import DEFAULT_DATA

pytestmark = pytest.mark.skipif(not (DEFAULT_DATA / "spice").is_dir(), reason="needs ../shared/data")


def tiny_config() -> object:
    from molecules.features import ATOM_FEATURES
    from molecules.torsions import BOND_FEATURES
    from sampler.torsion_network import TorsionControlConfig
    from training.torsional_training import TorsionalRunConfig

    return TorsionalRunConfig(
        num_molecules=5,
        num_seeds=2,
        network=TorsionControlConfig(
            node_features=ATOM_FEATURES, edge_features=BOND_FEATURES, num_layers=1, hidden=16, head_channels=4
        ),
        sde_steps=6,
        molecules_per_round=2,
        copies=2,
        gradient_steps=2,
        batch_size=4,
        buffer_size=64,
        warmup_conformers=3,
        warmup_steps=3,
        warmup_batch=4,
        max_rounds=3,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from training.torsional_training import train_torsional

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("torsional") / "full.pt"
    train_torsional(tiny_config(), data_dir=DEFAULT_DATA, seed=3, out=out, show_progress=False)  # type: ignore[arg-type]
    return out


def test_resume_continues_exactly(trained: Path, tmp_path: Path) -> None:
    """Bit-exact on one thread (two threads may reorder a float32 reduction by one ulp)."""
    torch.set_num_threads(1)
    from training.checkpoint import load_checkpoint
    from training.torsional_training import CHECKPOINT_KIND, train_torsional

    config = dataclasses.replace(tiny_config(), max_rounds=1)  # type: ignore[type-var]
    part = tmp_path / "part.pt"
    train_torsional(config, data_dir=DEFAULT_DATA, seed=3, out=part, show_progress=False)
    # the resumed run takes its config from the checkpoint, except the round budget, which we raise
    payload = torch.load(part, weights_only=True)
    payload["config"]["max_rounds"] = 3
    torch.save(payload, part)
    train_torsional(config, data_dir=DEFAULT_DATA, seed=0, out=part, resume=part, show_progress=False)
    a, b = load_checkpoint(trained), load_checkpoint(part)
    assert a["kind"] == b["kind"] == CHECKPOINT_KIND
    assert a["round"] == b["round"] == 3
    for key, value in a["control"].items():
        torch.testing.assert_close(value, b["control"][key], rtol=0, atol=0)


def test_resume_refuses_other_training_systems(trained: Path, tmp_path: Path) -> None:
    """A checkpoint written for other seeds (the seeding code changed) is refused by name, whether it records its
    systems or (older checkpoints) only their replay entries tell."""
    from training.torsional_training import train_torsional

    payload = torch.load(trained, weights_only=True)
    recorded = tmp_path / "recorded.pt"
    counts = [*payload["extra"]["torsions_per_system"], 1]
    changed = dict(payload, extra={**payload["extra"], "torsions_per_system": counts})
    torch.save(changed, recorded)
    with pytest.raises(ValueError, match="other training systems"):
        train_torsional(tiny_config(), data_dir=DEFAULT_DATA, seed=0, out=None, resume=recorded, show_progress=False)  # type: ignore[arg-type]
    older = tmp_path / "older.pt"
    extra = {k: v for k, v in payload["extra"].items() if k != "torsions_per_system"}
    entries = dict(payload["resume"]["buffer"]["entries"])
    entries["num_nodes"] = entries["num_nodes"] + 1
    buffer = {**payload["resume"]["buffer"], "entries": entries}
    torch.save(dict(payload, extra=extra, resume={**payload["resume"], "buffer": buffer}), older)
    with pytest.raises(ValueError, match="other training systems"):
        train_torsional(tiny_config(), data_dir=DEFAULT_DATA, seed=0, out=None, resume=older, show_progress=False)  # type: ignore[arg-type]


def test_relaxed_target_holds_the_torsions_and_lowers_every_energy() -> None:
    """``relax_iterations``: each sample's energy is taken after MMFF94 relaxation at its own torsions, so it is
    never above the rigid one, and the relaxed geometry keeps the sampled dihedrals."""
    from energy.mmff import MmffEnergy
    from sampler.torsion_geometry import dihedral, torsion_positions
    from training.torsional_training import TorsionalRunConfig, TorsionalTrainer, build_molecules

    torch.set_num_threads(1)
    config = dataclasses.replace(tiny_config(), num_molecules=3, relax_iterations=200)  # type: ignore[type-var]
    assert isinstance(config, TorsionalRunConfig)
    molecules, _ = build_molecules(config, DEFAULT_DATA, seed=1, show_progress=False)
    relaxed = TorsionalTrainer(config, molecules, MmffEnergy(), seed=0)
    rigid = TorsionalTrainer(dataclasses.replace(config, relax_iterations=0), molecules, MmffEnergy(), seed=0)
    batch, phi = relaxed.sample(list(range(len(relaxed.systems))))
    a, b = relaxed.evaluate(batch, phi), rigid.evaluate(batch, phi)
    assert a.num_samples == b.num_samples == batch.num_graphs
    assert bool((a.energies <= b.energies + 1e-4).all()) and bool((a.energies < b.energies - 1e-3).any())
    assert bool(torch.isfinite(a.adjoint).all()) and not torch.allclose(a.adjoint, b.adjoint)
    x = relaxed.relaxed_positions(batch.to(dtype=torch.float64), torsion_positions(batch, phi).double())
    turn = torch.remainder(dihedral(x, batch.torsion_atoms) - phi.double() + math.pi, 2 * math.pi) - math.pi
    assert float(turn.abs().max()) < math.radians(2.0)
    with pytest.raises(ValueError, match="MMFF94 training energy"):
        TorsionalRunConfig(energy_model="xtb", relax_iterations=10)


def test_flat_bottomed_target_is_the_base_score_below_the_ceiling_and_the_plain_target_far_above() -> None:
    """``window_ev``: a sample within the window of its seed's energy feels no energy gradient (its target is the
    base law's score alone: uniform density); one far above the ceiling gets the plain Boltzmann target."""
    from energy.mmff import MmffEnergy
    from training.torsional_training import TorsionalRunConfig, TorsionalTrainer, build_molecules

    torch.set_num_threads(1)
    config = dataclasses.replace(tiny_config(), num_molecules=3)  # type: ignore[type-var]
    assert isinstance(config, TorsionalRunConfig)
    molecules, _ = build_molecules(config, DEFAULT_DATA, seed=1, show_progress=False)
    plain = TorsionalTrainer(config, molecules, MmffEnergy(), seed=0)
    wide = TorsionalTrainer(dataclasses.replace(config, window_ev=1e3), molecules, MmffEnergy(), seed=0)
    narrow = TorsionalTrainer(dataclasses.replace(config, window_ev=1e-9), molecules, MmffEnergy(), seed=0)
    batch, phi = plain.sample(list(range(len(plain.systems))))
    a, w, n = plain.evaluate(batch, phi), wide.evaluate(batch, phi), narrow.evaluate(batch, phi)
    base_only = -plain.base.terminal_score(phi.double()).clamp(-config.max_grad, config.max_grad)
    torch.testing.assert_close(w.adjoint.double(), base_only.to(w.adjoint.dtype).double(), atol=1e-4, rtol=0)
    above = (a.energies.double() - narrow.seed_energies(batch)) > 30 * config.tau_ev  # [G]: far above the seed
    assert bool(above.any())
    sel = above[batch.torsion_batch]
    torch.testing.assert_close(n.adjoint[sel], a.adjoint[sel], atol=1e-4, rtol=1e-4)
    assert not torch.allclose(w.adjoint, a.adjoint, atol=1e-3)
    e0 = narrow.seed_energies(batch)
    assert len(narrow._seed_energies) == len(plain.systems) and torch.equal(e0, narrow.seed_energies(batch))
    with pytest.raises(ValueError, match="window_ev"):
        TorsionalRunConfig(window_ev=-0.1)


def test_acyl_rule_puts_fresh_samples_on_the_drawn_isomer_and_leaves_the_other_torsions() -> None:
    """``acyl_rule``: each fresh sample's amide is put on the isomer drawn at room temperature before its energy is
    taken (here a law that allows only syn), the sample is turned by exactly pi or kept, and every other torsion is
    the one the network drew; old configs (no such key) load with the rule off."""
    from energy.mmff import MmffEnergy
    from molecules.acyl_isomers import AcylIsomers
    from molecules.smiles import mol_from_smiles
    from training.torsional_training import (
        TorsionalRunConfig,
        TorsionalTrainer,
        config_from_dict,
        config_to_dict,
        molecule_systems,
    )

    torch.set_num_threads(1)
    ms = molecule_systems(mol_from_smiles("CC(=O)NCc1ccccc1"), num_seeds=2, first_id=0, seed=0)
    config = dataclasses.replace(tiny_config(), acyl_rule=True)  # type: ignore[type-var]
    assert isinstance(config, TorsionalRunConfig)
    ruled = TorsionalTrainer(config, [ms], MmffEnergy(), seed=0)
    plain = TorsionalTrainer(dataclasses.replace(config, acyl_rule=False), [ms], MmffEnergy(), seed=0)
    found = ruled.acyl_isomers(0)
    assert len(found) == 1 and math.isfinite(found[0].energy_syn) and math.isfinite(found[0].energy_anti)
    k = found[0].torsion
    ruled._isomers[0] = [AcylIsomers(k, energy_syn=0.0, energy_anti=50.0)]  # syn only
    ids = [s.system_id for s in ms.systems] * 16
    batch, phi = ruled.sample(ids)
    _, phi0 = plain.sample(ids)
    table, table0 = phi.reshape(len(ids), -1), phi0.reshape(len(ids), -1)
    assert bool((table[:, k].abs() < math.pi / 2).all())
    assert not bool((table0[:, k].abs() < math.pi / 2).all())  # the untrained network puts some on anti
    others = [j for j in range(table.shape[1]) if j != k]
    assert others and torch.equal(table[:, others], table0[:, others])
    turn = torch.remainder(table[:, k] - table0[:, k] + math.pi, 2 * math.pi) - math.pi
    assert bool(((turn.abs() < 1e-5) | ((turn.abs() - math.pi).abs() < 1e-5)).all())
    samples = ruled.evaluate(batch, phi)  # the energies are taken where the rule put the samples
    assert samples.num_samples == len(ids) and torch.equal(samples.phi, phi)
    stored = config_to_dict(config)
    assert config_from_dict(stored).acyl_rule
    assert not config_from_dict({key: v for key, v in stored.items() if key != "acyl_rule"}).acyl_rule


def test_checkpoint_refuses_wrong_kind(tiny_conformer_checkpoint: Path) -> None:
    from inference.torsional_sampling import TorsionalSampler

    with pytest.raises(ValueError, match="not a torsional sampler"):
        TorsionalSampler(tiny_conformer_checkpoint)


def test_samples_are_valid_by_construction(trained: Path) -> None:
    from rdkit.Chem import rdMolTransforms

    from inference.loading import load_sampler
    from inference.model import SamplingRequest
    from inference.torsional_sampling import TorsionalSampler
    from molecules.smiles import mol_from_smiles
    from molecules.structures import with_conformers
    from molecules.validity import check_conformer, stereo_spec

    sampler = load_sampler(trained)
    assert isinstance(sampler, TorsionalSampler)
    smiles = "C[C@H](N)C(=O)N/C=C/c1ccc(OC[C@@H](O)CC)cc1"
    mol = mol_from_smiles(smiles)
    x = sampler.sample_positions(mol, 24, seed=5)
    assert x.shape == (24, mol.GetNumAtoms(), 3) and np.isfinite(x).all()
    spec = stereo_spec(mol)
    checks = [check_conformer(mol, p, spec, allow_clashes=True) for p in x]
    assert all(c.ok for c in checks), [c.reason for c in checks if not c.ok]
    confs = with_conformers(mol, x)
    for bond in mol.GetBonds():
        i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        lengths = [rdMolTransforms.GetBondLength(c, i, j) for c in confs.GetConformers()]
        assert np.ptp(lengths) < 0.05  # seeds differ slightly; torsions never stretch a bond
    again = sampler.sample_positions(mol, 24, seed=5)
    np.testing.assert_array_equal(x, again)
    out = sampler.sample(SamplingRequest(smiles=smiles, num_conformers=8, seed=1))
    assert out.num_conformers == 8 and not out.rejected and out.repaired == 0


def test_a_molecule_over_the_atom_limit_is_refused_before_any_embedding(trained: Path) -> None:
    from inference.model import SamplingRequest
    from inference.torsional_sampling import TorsionalSampler
    from molecules.graph import MAX_ATOMS, TooManyAtomsError

    sampler = TorsionalSampler(trained)
    chain = "C" * ((MAX_ATOMS - 2) // 3 + 1)  # C_n H_2n+2: 3n + 2 atoms, one carbon over the limit
    with pytest.raises(TooManyAtomsError, match=f"{3 * len(chain) + 2} atoms .* limit of {MAX_ATOMS}"):
        sampler.sample(SamplingRequest(smiles=chain, num_conformers=2, seed=1))
    out = sampler.sample(SamplingRequest(smiles=chain[:-1], num_conformers=2, seed=1, relaxed_selection=False))
    assert out.num_conformers >= 1  # one carbon less is sampled (ETKDG's random-coordinate fallback, if needed)


def test_benchmark_methods_share_the_seeds(trained: Path) -> None:
    from benchmarks.methods import MethodSettings, build_methods
    from molecules.smiles import mol_from_smiles

    methods = build_methods(
        ["torsional", "torsional+mmff", "torsion-control"], MethodSettings(torsional_checkpoint=str(trained))
    )
    assert methods[0].generator == methods[1].generator
    assert methods[2].generator.name == "random-torsions[2 seeds]"  # the checkpoint's seed count
    mol = mol_from_smiles("CCOC(=O)c1ccccc1NC(C)=O")
    for m in (methods[0], methods[2]):
        assert m.generator.generate(mol, 6, seed=2).GetNumConformers() == 6


def test_clashes_are_reported_not_confused_with_broken_bonds() -> None:
    from inference.torsional_sampling import uniform_torsions
    from molecules.smiles import mol_from_smiles
    from molecules.validity import check_conformer, covalent_bonds_intact, stereo_spec

    mol = mol_from_smiles("C[C@H](N)C(=O)N/C=C/c1ccc(OC[C@@H](O)CC)cc1")
    spec = stereo_spec(mol)
    x = uniform_torsions(mol, 24, seed=5, num_seeds=2)
    strict = [check_conformer(mol, p, spec) for p in x]
    lenient = [check_conformer(mol, p, spec, allow_clashes=True) for p in x]
    assert all(c.ok for c in lenient)  # torsions never break a bond or invert a centre
    clashing = [c for c in lenient if c.clash is not None]
    assert clashing, "uniform torsions of this molecule should produce some steric clashes"
    assert sum(not c.ok for c in strict) == len(clashing)  # exactly the clashes are what the strict check rejects
    assert all(c.clash.startswith("steric clash") for c in clashing)  # type: ignore[union-attr]
    # a stretched bond is a broken molecule, clash or not
    broken = x[0].copy()
    h = next(a.GetIdx() for a in mol.GetAtoms() if a.GetSymbol() == "H")
    broken[h] += 3.0
    assert not covalent_bonds_intact(mol, broken)
    bad = check_conformer(mol, broken, spec, allow_clashes=True)
    assert not bad.ok and bad.reason is not None and bad.reason.startswith("connectivity")


def test_refine_fine_tunes_a_copy_toward_lower_energy(trained: Path) -> None:
    """``--refine`` in torsion space: RAM rounds on the requested molecule alone, at a cold temperature, lower
    the mean energy of what is drawn; the loaded network is untouched; no energy model, a clear error."""
    from energy.registry import build_energy_model
    from inference.model import SamplingRequest
    from inference.torsional_sampling import TorsionalSampler, seed_systems
    from molecules.smiles import mol_from_smiles
    from molecules.structures import conformer_structures, with_conformers

    torch.set_num_threads(1)
    mmff = build_energy_model("mmff")
    sampler = TorsionalSampler(trained, energy=mmff)
    sampler.config = dataclasses.replace(
        sampler.config, tau_ev=0.02, molecules_per_round=2, copies=16, gradient_steps=20, batch_size=16
    )
    before = {k: v.clone() for k, v in sampler.network.state_dict().items()}
    mol = mol_from_smiles("OCCCCCCO")
    systems = seed_systems(mol, sampler.config.num_seeds, 4, sampler.config.torch_dtype)
    refined = sampler.refined_network(mol, systems, 3, seed=4)
    assert any(not torch.equal(v, before[k]) for k, v in refined.state_dict().items())
    assert all(torch.equal(v, before[k]) for k, v in sampler.network.state_dict().items())

    def mean_energy(rounds: int) -> float:
        x = sampler.sample_positions(mol, 32, seed=11, refine_rounds=rounds)
        return float(mmff.evaluate(conformer_structures(with_conformers(mol, x))).energies.mean())

    refined_e, plain_e = mean_energy(3), mean_energy(0)
    assert refined_e < plain_e
    out = sampler.sample(SamplingRequest(smiles="OCCCO", num_conformers=2, seed=2, refine_rounds=1))
    assert out.num_conformers == 2 and "refine" in out.seconds
    with pytest.raises(ValueError, match="needs an energy model"):
        TorsionalSampler(trained).refined_network(mol, systems, 1, seed=0)


def test_stratified_control_puts_one_angle_in_each_arc_per_torsion() -> None:
    """``uniform_torsions(stratified=True)``: over the K conformers, each torsion's dihedrals fall one in each of K
    equal arcs (a Latin hypercube), where independent uniform draws leave arcs empty."""
    from inference.torsional_sampling import seed_systems, uniform_torsions
    from molecules.smiles import mol_from_smiles
    from sampler.torsion_geometry import dihedral

    mol = mol_from_smiles("CCOC(=O)c1ccccc1NC(C)=O")
    atoms = seed_systems(mol, 1, 3, torch.float64)[0].torsion_atoms
    count = 24

    def arcs(x: np.ndarray) -> torch.Tensor:
        d = torch.stack([dihedral(torch.as_tensor(p), atoms) for p in x])  # [K, m]
        return torch.floor((d + math.pi) / (2 * math.pi) * count).long().clamp(0, count - 1)

    lhs = arcs(uniform_torsions(mol, count, seed=3, stratified=True))
    iid = arcs(uniform_torsions(mol, count, seed=3))
    assert lhs.shape[1] >= 3
    for j in range(lhs.shape[1]):
        assert sorted(lhs[:, j].tolist()) == list(range(count))
    assert any(len(set(iid[:, j].tolist())) < count for j in range(iid.shape[1]))
