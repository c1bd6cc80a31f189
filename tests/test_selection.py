"""Relaxed selection (molecules.selection): relaxed draws, distinct basins, the Boltzmann draw; the product's and
the benchmark's use of it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from rdkit import Chem

from benchmarks.methods import METHODS, MethodSettings, _selected
from energy.mmff import mmff_energies, mmff_optimize, mmff_properties
from inference.model import SamplingRequest
from inference.torsional_sampling import TorsionalSampler, uniform_torsions
from molecules.diversity import torsion_fingerprints
from molecules.etkdg import embed
from molecules.selection import RelaxedSelection, boltzmann_pick, proportional_shares, select_relaxed
from molecules.smiles import mol_from_smiles
from molecules.stereo import find_unassigned_stereo
from molecules.structures import with_conformers
from molecules.torsion_relaxation import TorsionRelaxation
from molecules.torsions import configurations
from molecules.validity import check_conformer, stereo_spec

SHIPPED = Path(__file__).resolve().parent.parent / "checkpoints" / "torsional.pt"
SMILES = "CCCCOc1ccc(CC(=O)OCC)cc1"


def _min_gap(mol: Chem.Mol, x: np.ndarray) -> float:
    f = torsion_fingerprints(mol, x)
    d = np.linalg.norm(f[:, None] - f[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    return float(d.min())


def test_boltzmann_pick_is_the_lowest_when_cold_and_the_boltzmann_law_otherwise() -> None:
    rng = np.random.default_rng(0)
    e = np.array([3.0, -1.0, 7.0, 0.5, 2.0])
    np.testing.assert_array_equal(boltzmann_pick(e, 2, 0.0, rng), [1, 3])
    kt = 0.6  # two energies kt ln 3 apart: the lower one is kept in 3 of 4 draws of one
    picks = [int(boltzmann_pick(np.array([0.0, kt * np.log(3.0)]), 1, kt, rng)[0]) for _ in range(4000)]
    assert abs(picks.count(0) / 4000 - 0.75) < 0.03
    assert len(set(boltzmann_pick(e, 5, 1.0, rng))) == 5  # without replacement
    with pytest.raises(ValueError, match="kt"):
        boltzmann_pick(np.array([0.0, np.nan]), 1, 1.0, rng)


def test_selection_returns_relaxed_distinct_basins_and_cold_is_the_lowest_of_them() -> None:
    mol = mol_from_smiles(SMILES)
    draws = TorsionalSampler(SHIPPED).sample_positions(mol, 48, seed=2)
    selection = RelaxedSelection(oversample=3.0, kt_kcal_mol=0.0, torsion_first=None)
    x, energies = select_relaxed(mol, draws, 16, selection, np.random.default_rng(0))
    assert x.shape == (16, *draws.shape[1:])
    assert np.allclose(mmff_energies(mol, x), energies, atol=1e-6)  # the energies are the returned geometries'
    assert _min_gap(mol, x) >= selection.duplicate_gap
    # every draw relaxed alone: the kept are the lowest distinct basins among them
    relaxed = with_conformers(mol, draws)
    all_e = np.array([e for _, e in mmff_optimize(relaxed, max_iters=selection.max_iters)])
    assert np.isclose(energies.min(), all_e.min(), atol=1e-6)
    assert _min_gap(mol, np.stack([c.GetPositions() for c in relaxed.GetConformers()])) < selection.duplicate_gap
    hot = select_relaxed(mol, draws, 16, RelaxedSelection(kt_kcal_mol=50.0), np.random.default_rng(0))[1]
    assert hot.mean() > energies.mean()
    again = select_relaxed(mol, draws, 16, RelaxedSelection(kt_kcal_mol=50.0), np.random.default_rng(0))[1]
    np.testing.assert_array_equal(hot, again)  # one rng seed, one answer


def test_selection_refuses_what_it_cannot_do() -> None:
    for bad in ({"oversample": 0.5}, {"kt_kcal_mol": -1.0}, {"duplicate_gap": -0.1}, {"max_iters": 0}):
        with pytest.raises(ValueError):
            RelaxedSelection(**bad)
    assert RelaxedSelection(oversample=1.5).draws(5) == 8
    mol = mol_from_smiles(SMILES)
    with pytest.raises(ValueError, match="keep"):
        select_relaxed(mol, np.zeros((2, mol.GetNumAtoms(), 3)), 0, RelaxedSelection(), np.random.default_rng(0))


def test_the_sampler_with_selection_returns_k_relaxed_conformers_and_says_so() -> None:
    request = SamplingRequest(smiles=SMILES, num_conformers=12, seed=4)
    plain = TorsionalSampler(SHIPPED).sample(dataclasses.replace(request, relaxed_selection=False))
    chosen = TorsionalSampler(SHIPPED, selection=RelaxedSelection()).sample(request)
    assert TorsionalSampler(SHIPPED).default_select and "select" in TorsionalSampler(SHIPPED).sample(request).seconds
    assert chosen.num_conformers == plain.num_conformers == 12
    assert chosen.mmff_relaxed == 12 and "select" in chosen.seconds and "select" not in plain.seconds
    x = np.stack([c.GetPositions() for c in chosen.mol.GetConformers()])
    mol = mol_from_smiles(SMILES)
    assert _min_gap(mol, x) >= RelaxedSelection().duplicate_gap
    # without the fast relaxation there is nothing to select from: K draws, as without selection
    raw = TorsionalSampler(SHIPPED, selection=RelaxedSelection()).sample(
        SamplingRequest(smiles=SMILES, num_conformers=12, seed=4, mmff_relax=False)
    )
    assert raw.num_conformers == 12 and raw.mmff_relaxed == 0 and "select" not in raw.seconds


def test_the_benchmark_method_selects_without_a_refiner() -> None:
    method = METHODS["torsional+select"](MethodSettings(torsional_checkpoint=str(SHIPPED)))
    assert method.refiner is None
    out = method.generator.generate(mol_from_smiles(SMILES), 10, seed=3)
    assert out.GetNumConformers() == 10


def test_screened_selection_leaves_the_final_relaxation_to_the_pipeline() -> None:
    """With ``screen_iters`` the draws are judged after a short relaxation and the kept K are relaxed as without
    selection: by the sampler's fast MMFF94 relaxation (counted) or, in the benchmark, by the method's refiner."""
    screened = RelaxedSelection(screen_iters=20, torsion_first=None)
    sampled = TorsionalSampler(SHIPPED, selection=screened).sample(
        SamplingRequest(smiles=SMILES, num_conformers=10, seed=4)
    )
    assert sampled.num_conformers == 10 and sampled.mmff_relaxed == 10
    assert "select" in sampled.seconds and "mmff_relax" in sampled.seconds
    method = _selected(MethodSettings(torsional_checkpoint=str(SHIPPED)), screened)
    assert method.refiner is not None and "maxIters 20" in method.description
    assert _selected(MethodSettings(torsional_checkpoint=str(SHIPPED)), RelaxedSelection()).refiner is None
    with pytest.raises(ValueError, match="screen_iters"):
        RelaxedSelection(screen_iters=0)


def test_selection_sets_aside_draws_with_the_wrong_stereocentre() -> None:
    """Draws of the diastereomer (one centre inverted: no reflection fixes it) are kept only when too few others
    are valid, and then after every valid one."""
    mol = mol_from_smiles("C[C@H](O)[C@H](C)CCO")
    other = mol_from_smiles("C[C@H](O)[C@@H](C)CCO")  # same atom order, one centre inverted
    good, bad = embed(mol, 6, 1), embed(other, 10, 2)
    draws = np.concatenate([bad[:5], good, bad[5:]])
    spec = stereo_spec(mol)
    x, _ = select_relaxed(mol, draws, 4, RelaxedSelection(duplicate_gap=0.0), np.random.default_rng(0))
    assert all(check_conformer(mol, p, spec, allow_clashes=True).ok for p in x)
    x, _ = select_relaxed(mol, draws, 8, RelaxedSelection(duplicate_gap=0.0), np.random.default_rng(0))
    assert sum(check_conformer(mol, p, spec, allow_clashes=True).ok for p in x) == 6


def test_uniform_share_proposes_that_share_of_the_draws_with_uniform_torsions() -> None:
    """The draws are the sampler's then the control's (same seeds); shares 0 and 1 give one or the other alone."""
    mol = mol_from_smiles(SMILES)
    sampler = TorsionalSampler(SHIPPED)
    half = RelaxedSelection(uniform_share=0.5, oversample=2.0)
    assert (half.draws(5), half.uniform_draws(5)) == (10, 5)
    x = sampler.selection_draws(mol, 5, half, seed=3)
    np.testing.assert_allclose(x[:5], sampler.sample_positions(mol, 5, seed=3), atol=1e-9)
    uniform = uniform_torsions(mol, 5, seed=3 + 13, num_seeds=sampler.config.num_seeds)
    np.testing.assert_allclose(x[5:], uniform, atol=1e-9)
    none = sampler.selection_draws(mol, 5, RelaxedSelection(uniform_share=0.0, oversample=2.0), seed=3)
    np.testing.assert_allclose(none, sampler.sample_positions(mol, 10, seed=3), atol=1e-9)
    everything = sampler.selection_draws(mol, 5, RelaxedSelection(uniform_share=1.0, oversample=2.0), seed=3)
    np.testing.assert_allclose(everything, uniform_torsions(mol, 10, seed=16, num_seeds=sampler.config.num_seeds))
    with pytest.raises(ValueError, match="uniform_share"):
        RelaxedSelection(uniform_share=1.5)
    chosen = TorsionalSampler(SHIPPED, selection=half).sample(SamplingRequest(smiles=SMILES, num_conformers=8, seed=4))
    assert chosen.num_conformers == 8 and chosen.mmff_relaxed == 8


def test_screened_scoring_keeps_the_lowest_screened_basin_and_returns_mmff94_energies() -> None:
    mol = mol_from_smiles("OCCOCCO")  # a diol: vacuum MMFF94 favours its internally hydrogen-bonded folds
    draws = TorsionalSampler(SHIPPED).sample_positions(mol, 24, seed=2)
    cold = RelaxedSelection(kt_kcal_mol=0.0)
    every, _ = select_relaxed(mol, draws, 24, cold, np.random.default_rng(0))  # all relaxed, in the draws' order
    vacuum = mmff_energies(mol, every)
    screened = mmff_energies(mol, every, properties=mmff_properties(mol, electrostatics="screened"))
    assert np.argmin(vacuum) != np.argmin(screened)  # the two energies rank these basins differently
    for word, energies in (("vacuum", vacuum), ("screened", screened)):
        selection = RelaxedSelection(kt_kcal_mol=0.0, score_electrostatics=word)
        x, returned = select_relaxed(mol, draws, 1, selection, np.random.default_rng(0))
        np.testing.assert_allclose(x[0], every[np.argmin(energies)], atol=1e-9)
        assert np.isclose(returned[0], vacuum[np.argmin(energies)], atol=1e-6)  # MMFF94's own energy, as said
    with pytest.raises(ValueError, match="score_electrostatics"):
        RelaxedSelection(score_electrostatics="water")


def test_final_iters_relax_the_kept_further_and_report_their_energies() -> None:
    mol = mol_from_smiles(SMILES)
    draws = TorsionalSampler(SHIPPED).sample_positions(mol, 24, seed=4)
    plain = RelaxedSelection(kt_kcal_mol=1.0)
    x0, e0 = select_relaxed(mol, draws, 8, plain, np.random.default_rng(5))
    further = dataclasses.replace(plain, final_iters=60)
    x1, e1 = select_relaxed(mol, draws, 8, further, np.random.default_rng(5))
    np.testing.assert_allclose(mmff_energies(mol, x1), e1, atol=1e-6)  # the energies of the returned geometries
    assert (e1 <= e0 + 1e-6).all() and (e1 < e0 - 1e-3).any()  # the same K, each relaxed further
    assert np.sqrt(((x1 - x0) ** 2).sum(-1).mean(-1)).max() < 0.5  # each stays in its basin
    with pytest.raises(ValueError, match="final_iters"):
        RelaxedSelection(final_iters=-1)


def test_a_scorer_decides_the_draw_and_mmff94_stays_where_it_gives_nan() -> None:
    """``scorer``: the cold draw keeps the lowest basin by the scorer's energies (here MMFF94's negated, so the
    highest MMFF94 basin), the energies returned stay MMFF94's; a scorer with a ``nan`` leaves MMFF94's ranking."""
    mol = mol_from_smiles(SMILES)
    draws = TorsionalSampler(SHIPPED).sample_positions(mol, 24, seed=3)
    cold = RelaxedSelection(kt_kcal_mol=0.0)
    every, energies = select_relaxed(mol, draws, 24, cold, np.random.default_rng(0))
    top = int(np.argmax(energies))
    x, returned = select_relaxed(
        mol, draws, 1, cold, np.random.default_rng(0), scorer=lambda m, p: -mmff_energies(m, p)
    )
    np.testing.assert_allclose(x[0], every[top], atol=1e-9)
    assert np.isclose(returned[0], energies[top], atol=1e-6)
    partial = select_relaxed(
        mol, draws, 1, cold, np.random.default_rng(0), scorer=lambda m, p: np.full(len(p), np.nan)
    )[0]
    np.testing.assert_allclose(partial[0], every[np.argmin(energies)], atol=1e-9)


def test_energy_window_keeps_the_draw_within_it_and_the_lowest_when_too_few_are_inside() -> None:
    """``energy_window``: with at least K relaxed draws within W of the lowest, every one kept lies within it (at a
    temperature hot enough that without the window higher ones are drawn); with fewer inside, the K lowest."""
    mol = mol_from_smiles(SMILES)
    draws = TorsionalSampler(SHIPPED).sample_positions(mol, 32, seed=6)
    _, energies = select_relaxed(mol, draws, 32, RelaxedSelection(kt_kcal_mol=0.0), np.random.default_rng(0))
    window = float(np.sort(energies)[12] - energies.min())  # 13 draws inside
    hot = RelaxedSelection(kt_kcal_mol=100.0, duplicate_gap=0.0)
    _, free = select_relaxed(mol, draws, 8, hot, np.random.default_rng(1))
    assert free.max() > energies.min() + window  # the hot draw alone goes above the window
    _, inside = select_relaxed(mol, draws, 8, dataclasses.replace(hot, energy_window=window), np.random.default_rng(1))
    assert inside.max() <= energies.min() + window + 1e-9
    _, lowest = select_relaxed(mol, draws, 8, dataclasses.replace(hot, energy_window=0.0), np.random.default_rng(1))
    np.testing.assert_allclose(np.sort(lowest), np.sort(energies)[:8], atol=1e-6)
    with pytest.raises(ValueError, match="energy_window"):
        RelaxedSelection(energy_window=-1.0)


def test_merging_before_the_polish_polishes_distinct_basins_only_and_copies_change_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``merge_before_polish``: draws that descend into one basin are polished once; each draw given three times
    (copies side by side, so the kept copy keeps the draws' order) selects exactly what the draws given once do."""
    mol = mol_from_smiles(SMILES)
    draws = TorsionalSampler(SHIPPED).sample_positions(mol, 24, seed=8)
    merged = RelaxedSelection(kt_kcal_mol=2.0, merge_before_polish=True)
    polished: list[int] = []
    polish = TorsionRelaxation.polish

    def counted(self: TorsionRelaxation, mol: Chem.Mol, x: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, ...]:
        polished.append(len(x))
        return polish(self, mol, x, e)

    monkeypatch.setattr(TorsionRelaxation, "polish", counted)
    x1, e1 = select_relaxed(mol, draws, 8, merged, np.random.default_rng(3))
    x3, e3 = select_relaxed(mol, np.repeat(draws, 3, axis=0), 8, merged, np.random.default_rng(3))
    np.testing.assert_allclose(x3, x1, atol=1e-9)
    np.testing.assert_allclose(e3, e1, atol=1e-9)
    assert polished[0] == polished[1] < len(draws)  # the copies and the draws that met were polished once
    select_relaxed(mol, draws, 8, dataclasses.replace(merged, merge_before_polish=False), np.random.default_rng(3))
    assert polished[2] == len(draws)  # without it every draw is polished
    assert _min_gap(mol, x1) >= merged.duplicate_gap
    for c in x1:
        assert check_conformer(mol, c, stereo_spec(mol)).ok


def test_proportional_shares_by_largest_remainders() -> None:
    assert proportional_shares(np.array([6, 3, 3]), 4).tolist() == [2, 1, 1]
    assert proportional_shares(np.array([5, 5]), 3).tolist() == [2, 1]  # a tie goes to the earlier group
    assert proportional_shares(np.array([1, 9]), 10).tolist() == [1, 9]
    assert proportional_shares(np.array([7]), 0).tolist() == [0]
    with pytest.raises(ValueError, match="share"):
        proportional_shares(np.array([2, 2]), 5)


def test_unassigned_stereo_configurations_get_their_share_of_the_k_whatever_their_energies() -> None:
    # two unassigned stereocentres: ETKDG draws four configurations (two diastereomer pairs). A scorer that puts
    # one configuration 100 kcal/mol up: one energy draw over all keeps none of it; per configuration it keeps
    # its share of the draws, as a random configuration per conformer would
    mol = mol_from_smiles("CC(O)C(C)CCc1ccccc1")
    assert len(find_unassigned_stereo(mol).centres) == 2
    draws = embed(mol, 24, 5)
    keys = configurations(mol, draws, find_unassigned_stereo(mol))
    penalised = keys[0]

    def scorer(m: Chem.Mol, x: np.ndarray) -> np.ndarray:
        e = mmff_energies(m, x)
        return e + 100.0 * np.array([k == penalised for k in configurations(m, x, find_unassigned_stereo(m))])

    keep = 8
    fast = RelaxedSelection(kt_kcal_mol=3.0, per_configuration=True)
    per = select_relaxed(mol, draws, keep, fast, np.random.default_rng(1), scorer=scorer)[0]
    one = select_relaxed(
        mol, draws, keep, dataclasses.replace(fast, per_configuration=False), np.random.default_rng(1), scorer=scorer
    )[0]
    unassigned = find_unassigned_stereo(mol)
    relaxed_keys = configurations(mol, draws, unassigned)  # relaxation keeps each draw's configuration
    groups = list(dict.fromkeys(relaxed_keys))
    expected = proportional_shares(np.array([relaxed_keys.count(g) for g in groups]), keep)
    got = [configurations(mol, per, unassigned).count(g) for g in groups]
    assert got == expected.tolist() and got[groups.index(penalised)] >= 1
    assert configurations(mol, one, unassigned).count(penalised) == 0


def test_one_configuration_is_selected_as_before() -> None:
    # nothing unassigned: sharing per configuration changes nothing, the same rng draws the same K
    mol = mol_from_smiles(SMILES)
    draws = embed(mol, 12, 3)
    a = select_relaxed(mol, draws, 4, RelaxedSelection(per_configuration=True), np.random.default_rng(2))[0]
    b = select_relaxed(mol, draws, 4, RelaxedSelection(), np.random.default_rng(2))[0]
    np.testing.assert_array_equal(a, b)
