"""The inference knobs of benchmarks.torsional_knobs: a scaled control is the model at 1 and the base process at 0;
oversampling keeps the lowest-energy draws; variant words are checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from rdkit import Chem

from benchmarks.methods import (
    METHODS,
    MethodSettings,
    RandomTorsionGenerator,
    RdkitMmffOptimizer,
    TorsionFirstMmffOptimizer,
)
from benchmarks.torsional_knobs import (
    DUPLICATE_GAP,
    ScaledControl,
    TunedTorsionalGenerator,
    _lowest_mmff,
    register_variant,
)
from energy.ani2xt import Ani2xtEnergy
from energy.mmff import mmff_energies, mmff_optimize
from inference.torsional_sampling import ISOMER_STARTS, uniform_torsions
from molecules.diversity import dihedrals, torsion_fingerprints
from molecules.etkdg import embed
from molecules.selection import RelaxedSelection
from molecules.smiles import mol_from_smiles
from molecules.structures import conformer_structures, with_conformers
from molecules.torsion_relaxation import TorsionRelaxation, torsion_first_relax

SHIPPED = Path(__file__).resolve().parent.parent / "checkpoints" / "torsional.pt"


class _Zero(torch.nn.Module):
    """A control that is zero everywhere: the untrained base process."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def graph_index(self, *args: object) -> object:
        return self.inner.graph_index(*args)  # type: ignore[operator]

    def forward(self, t: torch.Tensor, *args: torch.Tensor) -> torch.Tensor:
        return torch.zeros(args[5].shape[0], dtype=args[0].dtype)


def test_scaled_control_is_the_model_at_one_and_the_base_process_at_zero() -> None:
    torch.set_num_threads(1)
    from inference.torsional_sampling import TorsionalSampler

    sampler = TorsionalSampler(SHIPPED)
    mol = mol_from_smiles("CCOC(=O)c1ccc(OCCN)cc1")
    shipped = sampler.network
    model = sampler.sample_positions(mol, 6, seed=5)
    sampler.network = ScaledControl(shipped, 1.0, 1.0, torch.Generator().manual_seed(0))  # type: ignore[assignment]
    np.testing.assert_array_equal(sampler.sample_positions(mol, 6, seed=5), model)
    sampler.network = ScaledControl(shipped, 0.0, 0.0, torch.Generator().manual_seed(0))  # type: ignore[assignment]
    scaled0 = sampler.sample_positions(mol, 6, seed=5)
    sampler.network = _Zero(shipped)  # type: ignore[assignment]
    np.testing.assert_allclose(sampler.sample_positions(mol, 6, seed=5), scaled0, atol=1e-9)
    assert not np.allclose(scaled0, model, atol=1e-3)
    sampler.network = shipped


def test_oversampling_keeps_the_lowest_energy_draws() -> None:
    mol = mol_from_smiles("CCCCO")
    from molecules.etkdg import embed

    good = embed(mol, 3, seed=1)
    bad = good[0].copy()
    bad[1] = bad[0] + np.array([0.3, 0.0, 0.0])  # two carbons 0.3 Å apart: a huge MMFF94 energy
    positions = np.stack([bad, good[0], good[1], good[2]])
    np.testing.assert_array_equal(_lowest_mmff(mol, positions, 3), [1, 2, 3])
    gen = TunedTorsionalGenerator(str(SHIPPED), oversample=2.0, _tag="over2")
    out = gen.generate(mol_from_smiles("CCOCCN"), 4, seed=3)
    assert out.GetNumConformers() == 4


def test_variant_words_are_checked() -> None:
    assert register_variant("mmff150", SHIPPED) == "knob:mmff150"
    assert register_variant("mmff150", SHIPPED) == "knob:mmff150"  # registering twice is harmless
    for bad in ("mmff", "warp9", "over0.5", "ladder2", "relaxover2", "relaxover2@-1", "relaxover0.5@3"):
        with pytest.raises(ValueError, match="variant"):
            register_variant(bad, SHIPPED)


def test_one_mmff_cap_for_every_variant_but_mmffN() -> None:
    settings = MethodSettings()
    control = METHODS[register_variant("control4", SHIPPED, 800)](settings)
    assert control.name == "knob:control4@mmff800" and control.refiner == RdkitMmffOptimizer(800, "MMFF94", 1)
    seeds = METHODS[register_variant("seeds8", SHIPPED, 800)](settings)
    assert seeds.refiner == RdkitMmffOptimizer(800, "MMFF94", 1)
    own = METHODS[register_variant("mmff300", SHIPPED, 800)](settings)
    assert own.refiner == RdkitMmffOptimizer(300, "MMFF94", 1)  # the word's own cap wins
    with pytest.raises(ValueError, match="mmff_iters"):
        register_variant("seeds8", SHIPPED, 0)


def test_amide_isomer_words() -> None:
    settings = MethodSettings()
    off = METHODS[register_variant("amideoff", SHIPPED)](settings).generator
    assert isinstance(off, TunedTorsionalGenerator) and off.isomer_floor is None
    floor = METHODS[register_variant("amide0.1", SHIPPED)](settings).generator
    assert isinstance(floor, TunedTorsionalGenerator) and floor.isomer_floor == 0.1
    control = METHODS[register_variant("control4+amide0.05", SHIPPED)](settings).generator
    assert isinstance(control, RandomTorsionGenerator) and (control.num_seeds, control.isomer_floor) == (4, 0.05)
    for bad in ("amide0.7", "amidex", "control4+amidex", "control4+amide0.9"):
        with pytest.raises(ValueError, match="variant"):
            register_variant(bad, SHIPPED)


def test_stratified_words_and_the_stratified_product_restores_the_sampler() -> None:
    """``+lhs``: a stratified control, or the product with stratified integration noise; the shipped sampler is
    left unstratified afterwards, and the stratified samples differ from the plain ones."""
    settings = MethodSettings()
    control = METHODS[register_variant("control4+amide0+lhs", SHIPPED)](settings).generator
    assert isinstance(control, RandomTorsionGenerator) and control.stratified and control.isomer_floor == 0.0
    tuned = METHODS[register_variant("mmff200+lhs", SHIPPED)](settings).generator
    assert isinstance(tuned, TunedTorsionalGenerator) and tuned.stratified
    mol = mol_from_smiles("CCOC(=O)c1ccccc1NC(C)=O")
    lhs = np.stack([c.GetPositions() for c in tuned.generate(mol, 8, seed=3).GetConformers()])
    assert tuned._load().stratified is False
    plain = TunedTorsionalGenerator(str(SHIPPED), _tag="plain")
    ref = np.stack([c.GetPositions() for c in plain.generate(mol, 8, seed=3).GetConformers()])
    assert lhs.shape == ref.shape and not np.allclose(lhs, ref)
    with pytest.raises(ValueError, match="variant"):
        register_variant("controlx+lhs", SHIPPED)
    starts = METHODS[register_variant("isostarts8", SHIPPED)](settings).generator
    assert isinstance(starts, TunedTorsionalGenerator) and starts.isomer_starts == 8
    for bad in ("isostarts0", "isostartsx"):
        with pytest.raises(ValueError, match="variant"):
            register_variant(bad, SHIPPED)


def test_planar_word_flattens_acyl_torsions_and_restores_the_sampler() -> None:
    """``+planar`` (after ``+lhs`` if both): the ester and amide dihedrals of the draws take one value per isomer;
    the shipped sampler keeps its own setting afterwards; the control refuses the word."""
    settings = MethodSettings()
    tuned = METHODS[register_variant("mmff200+lhs+planar", SHIPPED)](settings).generator
    assert isinstance(tuned, TunedTorsionalGenerator) and tuned.stratified and tuned.acyl_planar is True
    mol = mol_from_smiles("CCOC(=O)c1ccccc1NC(C)=O")
    out = tuned.generate(mol, 12, seed=3)
    assert tuned._load().acyl_planar is False
    x = np.stack([c.GetPositions() for c in out.GetConformers()])
    plain = TunedTorsionalGenerator(str(SHIPPED), stratified=True, _tag="plain").generate(mol, 12, seed=3)
    x_plain = np.stack([c.GetPositions() for c in plain.GetConformers()])
    for atoms in ([5, 3, 2, 1], [10, 11, 12, 13]):  # c-C(=O)-O-C, c-N-C(=O)-C: heavy-atom dihedrals
        for positions, flat in ((x, True), (x_plain, False)):
            d = np.abs(np.degrees(dihedrals(positions, np.array([atoms]))[:, 0]))
            deviation = np.minimum(d, 180 - d)
            assert bool(deviation.max() < 15) is flat, deviation
    with pytest.raises(ValueError, match="variant"):
        register_variant("control4+planar", SHIPPED)


def test_mix_word_takes_a_share_of_the_draws_from_the_control() -> None:
    """``+mix1``: every draw is the control's (the same positions as the control with the sampler's seeds);
    ``+mix0.5``: the first half the network's, the rest the control's; out-of-range shares are refused."""
    settings = MethodSettings()
    mol = mol_from_smiles("CCOC(=O)c1ccccc1NC(C)=O")
    all_control = METHODS[register_variant("mmff200+mix1", SHIPPED)](settings).generator
    assert isinstance(all_control, TunedTorsionalGenerator) and all_control.control_share == 1.0
    x = np.stack([c.GetPositions() for c in all_control.generate(mol, 6, seed=3).GetConformers()])
    seeds = all_control._load().config.num_seeds
    np.testing.assert_allclose(x, uniform_torsions(mol, 6, seed=3 + 13, num_seeds=seeds), atol=1e-9)
    half = METHODS[register_variant("mmff200+mix0.5", SHIPPED)](settings).generator
    y = np.stack([c.GetPositions() for c in half.generate(mol, 6, seed=3).GetConformers()])
    np.testing.assert_allclose(y[3:], uniform_torsions(mol, 3, seed=3 + 13, num_seeds=seeds), atol=1e-9)
    model = all_control._load().sample_positions(mol, 3, seed=3)
    np.testing.assert_allclose(y[:3], model, atol=1e-9)
    for bad in ("mmff200+mix0", "mmff200+mix1.5", "mmff200+mixx", "control4+mix0.5"):
        with pytest.raises(ValueError, match="variant"):
            register_variant(bad, SHIPPED)


def _ring_shapes(mol: object, ring: list[int]) -> int:
    """Distinct ring geometries among the conformers (ring-atom distance matrices equal to 1e-3 Å)."""
    shapes: list[np.ndarray] = []
    for conf in mol.GetConformers():  # type: ignore[attr-defined]
        x = conf.GetPositions()[ring]
        d = np.linalg.norm(x[:, None] - x[None], axis=-1)
        if not any(np.abs(d - s).max() < 1e-3 for s in shapes):
            shapes.append(d)
    return len(shapes)


def test_seed_override_changes_the_ring_shapes_and_restores_the_sampler() -> None:
    """Rotatable torsions never move ring atoms relative to each other, so each seed is one ring shape."""
    mol = mol_from_smiles("OCCC1CCCCCCC1")  # cyclooctane: many ring shapes
    ring = [a.GetIdx() for a in mol.GetAtoms() if a.IsInRing()]
    one = TunedTorsionalGenerator(str(SHIPPED), num_seeds_override=1, _tag="seeds1")
    many = TunedTorsionalGenerator(str(SHIPPED), num_seeds_override=8, _tag="seeds8")
    assert _ring_shapes(one.generate(mol, 16, seed=5), ring) == 1
    assert _ring_shapes(many.generate(mol, 16, seed=5), ring) > 1
    stored = torch.load(SHIPPED, weights_only=True)["config"]["num_seeds"]
    assert many._load().config.num_seeds == stored != 8  # the checkpoint's own setting is back
    assert register_variant("seeds8", SHIPPED) == "knob:seeds8"
    assert register_variant("control8", SHIPPED) == "knob:control8"
    for bad in ("seeds0", "control0", "controlx"):
        with pytest.raises(ValueError, match="variant"):
            register_variant(bad, SHIPPED)


def test_relaxed_oversampling_returns_relaxed_lowest_draws_without_a_second_relaxation() -> None:
    method = METHODS[register_variant("relaxover2@0", SHIPPED)](MethodSettings())
    assert method.refiner is None
    mol = mol_from_smiles("CCOCCCN")
    out = method.generator.generate(mol, 4, 3)
    assert out.GetNumConformers() == 4
    energies = [e for _, e in mmff_optimize(out, max_iters=1)]  # one more step: already at the relaxed energies
    draws = TunedTorsionalGenerator(str(SHIPPED), _tag="plain").generate(mol, 8, 3)  # the same 8 draws
    relaxed = sorted(e for _, e in mmff_optimize(draws))
    np.testing.assert_allclose(sorted(energies), relaxed[:4], atol=0.05)


def test_thin_word_keeps_k_of_more_draws_the_least_crowded_and_the_default_isomer_starts() -> None:
    """``thinF``: ceil(F K) draws of the product, K returned, chosen by thinning in torsion space; other tuned
    variants keep the sampler's own isomer starts (the default pipeline's) rather than zero."""
    settings = MethodSettings()
    thin = METHODS[register_variant("thin2", SHIPPED)](settings).generator
    assert isinstance(thin, TunedTorsionalGenerator) and thin.thin == 2.0 and thin.isomer_starts is None
    mol = mol_from_smiles("CCCCOc1ccc(CC(=O)OCC)cc1")
    sampler = thin._load()
    draws = sampler.sample_positions(mol, 12, seed=5)
    kept = np.stack([c.GetPositions() for c in thin.generate(mol, 6, seed=5).GetConformers()])
    assert kept.shape == (6, *draws.shape[1:])
    # every kept conformer is one of the 12 draws, and the thinned set is less crowded than the first 6 draws
    match = [int(np.argmin(np.abs(draws - k).reshape(12, -1).max(1))) for k in kept]
    assert all(np.abs(draws[m] - k).max() < 1e-9 for m, k in zip(match, kept, strict=True))

    def min_gap(x: np.ndarray) -> float:
        f = torsion_fingerprints(mol, x)
        d = np.linalg.norm(f[:, None] - f[None], axis=-1)
        np.fill_diagonal(d, np.inf)
        return float(d.min())

    assert min_gap(kept) >= min_gap(draws[:6])
    assert sampler.isomer_starts == ISOMER_STARTS
    for bad in ("thin1", "thin0.5", "thinx"):
        with pytest.raises(ValueError, match="variant"):
            register_variant(bad, SHIPPED)


def test_relaxthin_word_relaxes_every_draw_and_returns_k_less_crowded_basins() -> None:
    """``relaxthinF``: ceil(F K) draws relaxed by MMFF94 (so no second relaxation), thinned to K in torsion space:
    the returned conformers sit at MMFF94 minima, less crowded than the plain pipeline's K."""
    settings = MethodSettings()
    method = METHODS[register_variant("relaxthin2", SHIPPED)](settings)
    assert method.refiner is None and isinstance(method.generator, TunedTorsionalGenerator)
    mol = mol_from_smiles("CCCCOc1ccc(CC(=O)OCC)cc1")
    out = method.generator.generate(mol, 24, seed=3)
    assert out.GetNumConformers() == 24
    again = [e for _, e in mmff_optimize(Chem.Mol(out), max_iters=200)]
    before = mmff_energies(out, np.stack([c.GetPositions() for c in out.GetConformers()]))
    # at (200-iteration) minima: a further relaxation barely moves most of them, and moves raw draws by far more
    assert np.median(before - np.array(again)) < 0.05
    raw = method.generator._load().sample_positions(mol, 24, seed=3)
    raw_mol = with_conformers(mol, raw)
    assert np.median(mmff_energies(raw_mol, raw) - [e for _, e in mmff_optimize(raw_mol, max_iters=200)]) > 1.0

    def crowding(m: Chem.Mol) -> float:
        """The median distance from a conformer to its nearest neighbour, in torsion space (lower: more crowded)."""
        f = torsion_fingerprints(mol, np.stack([c.GetPositions() for c in m.GetConformers()]))
        d = np.linalg.norm(f[:, None] - f[None], axis=-1)
        np.fill_diagonal(d, np.inf)
        return float(np.median(d.min(1)))

    plain = METHODS[register_variant("mmff200", SHIPPED)](settings)
    assert plain.refiner is not None
    relaxed = plain.refiner.refine(plain.generator.generate(mol, 24, seed=3)).mol
    assert crowding(out) > crowding(relaxed)
    pre = METHODS[register_variant("relaxthin2@30", SHIPPED)](settings)
    assert isinstance(pre.generator, TunedTorsionalGenerator) and pre.generator.prerelax_iters == 30
    assert pre.refiner is not None  # the kept conformers are relaxed as the default pipeline's are
    for bad in ("relaxthin1", "relaxthin2@0", "relaxthin2@x"):
        with pytest.raises(ValueError, match="variant"):
            register_variant(bad, SHIPPED)


def test_relaxdedup_word_drops_relaxed_duplicates_then_draws_k_by_energy() -> None:
    settings = MethodSettings()
    method = METHODS[register_variant("relaxdedup2@3", SHIPPED)](settings)
    generator = method.generator
    assert method.refiner is None and isinstance(generator, TunedTorsionalGenerator) and generator.dedup_kt == 3.0
    mol = mol_from_smiles("CCCCOc1ccc(CC(=O)OCC)cc1")
    out = generator.generate(mol, 16, seed=3)
    f = torsion_fingerprints(mol, np.stack([c.GetPositions() for c in out.GetConformers()]))
    d = np.linalg.norm(f[:, None] - f[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    assert out.GetNumConformers() == 16 and d.min() >= DUPLICATE_GAP  # 32 relaxed draws hold 16 distinct basins
    for bad in ("relaxdedup2", "relaxdedup2@-1", "relaxdedup0.5@3"):
        with pytest.raises(ValueError, match="variant"):
            register_variant(bad, SHIPPED)


def test_tfr_word_relaxes_in_torsion_space_first_for_the_product_and_the_control() -> None:
    """``+tfr<P>[e<E>]``: relaxed selection's draws, or the control's conformers, relaxed by torsion-space descent
    (``E`` evaluations) and ``P`` Cartesian iterations; the energies are those of the returned geometries."""
    settings = MethodSettings()
    method = METHODS[register_variant("relaxdedup2@0+tfr30e25+mix0.5", SHIPPED)](settings)
    generator = method.generator
    assert isinstance(generator, TunedTorsionalGenerator) and generator.control_share == 0.5
    assert generator.torsion_first == TorsionRelaxation(polish_iters=30, max_evals=25)
    mol = mol_from_smiles("CCCCOc1ccc(CC(=O)OCC)cc1")
    out = generator.generate(mol, 8, seed=3)
    x = np.stack([c.GetPositions() for c in out.GetConformers()])
    draws = generator._load().selection_draws(mol, 8, RelaxedSelection(uniform_share=0.5, oversample=2.0), seed=3)
    relaxed = torsion_first_relax(mol, draws, generator.torsion_first)[1]
    energies = mmff_energies(mol, x)
    assert all(np.isclose(relaxed, e, atol=1e-6).any() for e in energies)  # each one of the torsion-first relaxed
    assert np.isclose(energies.min(), relaxed.min(), atol=1e-6)  # cold: the lowest basin is kept
    control = METHODS[register_variant("control2+tfr40", SHIPPED)](settings)
    assert isinstance(control.refiner, TorsionFirstMmffOptimizer)
    assert control.refiner.relaxation == TorsionRelaxation(polish_iters=40)
    for bad in ("mmff200+tfr30", "steps6+tfr30"):
        with pytest.raises(ValueError, match="tfr"):
            register_variant(bad, SHIPPED)


def test_ele_word_sets_the_selections_electrostatics_and_refuses_what_it_cannot_mean() -> None:
    method = METHODS[register_variant("relaxdedup3@3+tfr30+mix0.35+elescreened", SHIPPED)](MethodSettings())
    generator = method.generator
    assert isinstance(generator, TunedTorsionalGenerator) and generator.score_electrostatics == "screened"
    assert "screened electrostatics" in method.description
    plain = METHODS[register_variant("relaxdedup3@3+tfr30+mix0.35", SHIPPED)](MethodSettings()).generator
    assert isinstance(plain, TunedTorsionalGenerator) and plain.score_electrostatics == "vacuum"
    for bad in ("relaxdedup3@3+elewater", "control2+eleoff", "mmff200+elescreened"):
        with pytest.raises(ValueError, match="ele"):
            register_variant(bad, SHIPPED)


def test_final_word_relaxes_the_kept_further() -> None:
    method = METHODS[register_variant("relaxdedup3@3+tfr30+mix0.35+final30", SHIPPED)](MethodSettings())
    assert isinstance(method.generator, TunedTorsionalGenerator) and method.generator.final_iters == 30
    assert "30 more Cartesian iterations" in method.description
    for bad in ("control2+final30", "relaxdedup3@3+final0"):
        with pytest.raises(ValueError, match="final"):
            register_variant(bad, SHIPPED)


def test_gap_word_sets_what_counts_as_one_basin() -> None:
    """``+gap<G>``: relaxed selection's duplicate distance; a gap wider than any two draws thins to the K most
    spread, so the kept conformers lie further apart in torsion space than with the default gap."""
    method = METHODS[register_variant("relaxdedup3@0+tfr30+mix0.35+gap9", SHIPPED)](MethodSettings())
    wide = method.generator
    assert isinstance(wide, TunedTorsionalGenerator) and wide.duplicate_gap == 9.0
    assert "distance 9" in method.description
    plain = METHODS[register_variant("relaxdedup3@0+tfr30+mix0.35", SHIPPED)](MethodSettings()).generator
    assert isinstance(plain, TunedTorsionalGenerator) and plain.duplicate_gap == RelaxedSelection().duplicate_gap
    mol = mol_from_smiles("CCCCOc1ccc(CC(=O)OCC)cc1")

    def closest_pair(generator: TunedTorsionalGenerator) -> float:
        out = generator.generate(mol, 6, seed=5)
        f = torsion_fingerprints(mol, np.stack([c.GetPositions() for c in out.GetConformers()]))
        d = np.linalg.norm(f[:, None] - f[None], axis=-1)
        return float(d[np.triu_indices(len(f), 1)].min())

    assert closest_pair(wide) > closest_pair(plain)
    for bad in ("control2+gap0.4", "mmff200+gap0.4"):
        with pytest.raises(ValueError, match="gap"):
            register_variant(bad, SHIPPED)


def test_scoreani_word_ranks_by_ani2xt_in_kcal_and_says_nan_where_it_does_not_apply() -> None:
    method = METHODS[register_variant("relaxdedup3@2+tfr30+mix0.35+scoreani", SHIPPED)](MethodSettings())
    generator = method.generator
    assert isinstance(generator, TunedTorsionalGenerator) and generator.score_ani
    assert "ANI-2xt" in method.description
    mol = mol_from_smiles("CCOC(=O)CC")
    x = embed(mol, 3, seed=1)
    scores = generator._ani_scores(mol, x)
    ev = Ani2xtEnergy(dtype="float64").evaluate(conformer_structures(with_conformers(mol, x))).energies.numpy()
    np.testing.assert_allclose(scores - scores[0], (ev - ev[0]) * 23.0605, atol=0.02)  # eV -> kcal/mol
    bromo = mol_from_smiles("CCOC(=O)CBr")
    xb = embed(bromo, 2, seed=1)
    assert np.isnan(generator._ani_scores(bromo, xb)).all()
    with pytest.raises(ValueError, match="scoreani"):
        register_variant("control2+scoreani", SHIPPED)


def test_win_word_sets_the_selections_energy_window() -> None:
    method = METHODS[register_variant("relaxdedup3@3+tfr30+mix0.35+win10", SHIPPED)](MethodSettings())
    assert isinstance(method.generator, TunedTorsionalGenerator) and method.generator.energy_window == 10.0
    assert "within 10 kcal/mol" in method.description
    for bad in ("control2+win10", "mmff200+win10"):
        with pytest.raises(ValueError, match="win"):
            register_variant(bad, SHIPPED)


def test_merge_word_merges_before_the_polish_and_needs_the_torsion_descent() -> None:
    method = METHODS[register_variant("relaxdedup3@3+tfr30+mix0.35+merge", SHIPPED)](MethodSettings())
    assert isinstance(method.generator, TunedTorsionalGenerator) and method.generator.merge_before_polish
    assert "before the Cartesian polish" in method.description
    for bad in ("relaxdedup3@3+mix0.35+merge", "mmff200+merge"):
        with pytest.raises(ValueError, match="merge"):
            register_variant(bad, SHIPPED)
