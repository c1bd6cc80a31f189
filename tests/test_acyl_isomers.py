"""Acyl isomers (amides, esters, acids) at room temperature: relaxed energies of both isomers, their Boltzmann
law, and the turn of sampled torsions onto the isomer drawn."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from rdkit.Chem import rdMolTransforms

from benchmarks.acyl_planarity import off_planar
from energy.mmff import mmff_energies
from inference.torsional_sampling import TorsionalSampler, uniform_torsions
from molecules.acyl_isomers import (
    ROOM_TEMPERATURE_KT,
    AcylIsomers,
    acyl_isomers,
    choose_acyl_isomers,
    is_acyl_torsion,
)
from molecules.smiles import mol_from_smiles
from molecules.structures import with_conformers
from molecules.torsions import TorsionRules, embed_seeds, find_torsions

SHIPPED = Path(__file__).resolve().parent.parent / "checkpoints" / "torsional.pt"


def _heavy_dihedral(mol: object, positions: np.ndarray, torsion_atoms: tuple[int, ...]) -> float:
    """The dihedral (degrees) between the heavy substituents of C and N across an amide torsion ``b–c``."""
    m = with_conformers(mol, positions[None])  # type: ignore[arg-type]
    b, c = torsion_atoms[1], torsion_atoms[2]

    def heavy_neighbour(i: int, other: int) -> int:
        atom = m.GetAtomWithIdx(i)
        return next(
            n.GetIdx()
            for n in atom.GetNeighbors()
            if n.GetIdx() != other and n.GetAtomicNum() == 6  # the carbon substituent, not O or H
        )

    return rdMolTransforms.GetDihedralDeg(m.GetConformer(), heavy_neighbour(b, c), b, c, heavy_neighbour(c, b))


def test_n_methylacetamide_prefers_trans_by_a_few_kcal() -> None:
    """Known answer: the trans (Z) isomer of a secondary amide, its two carbon substituents anti, is the lower
    one; MMFF94 puts cis 2-3 kcal/mol above (experiment: about 2.5 in water), so at 298 K cis is rare."""
    mol = mol_from_smiles("CC(=O)NC")
    seeds = embed_seeds(mol, 2, seed=3, mmff_relax=True)
    (iso,) = acyl_isomers(mol, seeds)
    torsion = find_torsions(mol, TorsionRules())[iso.torsion]  # the system's torsions (default rules)
    gap = abs(iso.energy_syn - iso.energy_anti)
    assert 1.0 < gap < 5.0
    # which of "syn"/"anti" is trans depends on the torsion's atoms a and d: check it on a structure
    x = seeds[0].copy()
    m = with_conformers(mol, x[None])
    syn_now = abs(rdMolTransforms.GetDihedralRad(m.GetConformer(), *torsion.atoms)) < math.pi / 2
    trans_now = abs(_heavy_dihedral(mol, x, torsion.atoms)) > 90
    lower_is_syn = iso.energy_syn < iso.energy_anti
    assert lower_is_syn == (syn_now == trans_now)
    p = iso.p_syn()
    assert min(p, 1 - p) < 0.05


def test_symmetric_tertiary_amide_has_equal_isomers_and_primary_amides_none() -> None:
    """N,N-dimethylacetamide: turning the C–N bond by pi swaps the two methyls, the same structure."""
    mol = mol_from_smiles("CC(=O)N(C)C")
    (iso,) = acyl_isomers(mol, embed_seeds(mol, 1, seed=1, mmff_relax=True))
    assert abs(iso.energy_syn - iso.energy_anti) < 1e-3
    assert iso.p_syn() == pytest.approx(0.5, abs=1e-3)
    primary = mol_from_smiles("CCC(N)=O")
    assert acyl_isomers(primary, embed_seeds(primary, 1, seed=1)) == []  # turning swaps two hydrogens
    assert acyl_isomers(mol_from_smiles("CCCO"), embed_seeds(mol_from_smiles("CCCO"), 1)) == []


def _syn_partner_dihedral(mol: object, positions: np.ndarray, carbonyl_o: int, b: int, c: int, partner: int) -> float:
    m = with_conformers(mol, positions[None])  # type: ignore[arg-type]
    return rdMolTransforms.GetDihedralDeg(m.GetConformer(), carbonyl_o, b, c, partner)


@pytest.mark.parametrize(
    ("smiles", "partner_symbol"),
    [("CC(=O)OCC", "C"), ("CCC(=O)O", "H")],  # ethyl propanoate's alkyl, propanoic acid's hydrogen
)
def test_esters_and_acids_prefer_the_z_isomer(smiles: str, partner_symbol: str) -> None:
    """Known answer: an ester's alkyl and an acid's hydrogen sit syn to the carbonyl oxygen (Z), several
    kcal/mol below the E isomer; the relaxation from either start finds both isomers."""
    mol = mol_from_smiles(smiles)
    seeds = embed_seeds(mol, 1, seed=2, mmff_relax=True)
    torsions = find_torsions(mol, TorsionRules())
    (iso,) = acyl_isomers(mol, seeds)
    torsion = torsions[iso.torsion]
    assert math.isfinite(iso.energy_syn) and math.isfinite(iso.energy_anti)
    assert abs(iso.energy_syn - iso.energy_anti) > 2.0
    b, c = torsion.atoms[1:3]
    carbon, oxygen = (b, c) if mol.GetAtomWithIdx(b).GetAtomicNum() == 6 else (c, b)
    carbonyl_o = next(
        n.GetIdx() for n in mol.GetAtomWithIdx(carbon).GetNeighbors() if n.GetIdx() != oxygen and n.GetAtomicNum() == 8
    )
    partner = next(
        n.GetIdx()
        for n in mol.GetAtomWithIdx(oxygen).GetNeighbors()
        if n.GetIdx() != carbon and n.GetSymbol() == partner_symbol
    )
    x = seeds[0]
    m = with_conformers(mol, x[None])
    syn_now = abs(rdMolTransforms.GetDihedralRad(m.GetConformer(), *torsion.atoms)) < math.pi / 2
    z_now = abs(_syn_partner_dihedral(mol, x, carbonyl_o, carbon, oxygen, partner)) < 90
    assert (iso.energy_syn < iso.energy_anti) == (syn_now == z_now)


def test_which_torsions_are_acyl() -> None:
    def kinds(smiles: str) -> list[bool]:
        mol = mol_from_smiles(smiles)
        return [is_acyl_torsion(mol, t) for t in find_torsions(mol, TorsionRules())]

    assert kinds("CC(=O)NC") == [True]  # the methyl tops are frozen; the amide is acyl
    assert kinds("CCC(N)=O") == [False, False]  # a primary amide's turn swaps two hydrogens
    assert sorted(kinds("COc1ccccc1C(=O)C")) == [False, False]  # aryl ether and ketone: not acyl
    assert sorted(kinds("CCOC(=O)c1ccccc1")) == [False, False, True]  # the ester C(=O)-O only


def test_boltzmann_law_and_floor() -> None:
    iso = AcylIsomers(0, energy_syn=1.0, energy_anti=0.0)
    assert iso.p_syn() == pytest.approx(1 / (1 + math.exp(1.0 / ROOM_TEMPERATURE_KT)))
    assert iso.p_syn(kt=1e6) == pytest.approx(0.5, abs=1e-6)
    assert AcylIsomers(0, 50.0, 0.0).p_syn(floor=0.05) == pytest.approx(0.05)
    assert AcylIsomers(0, 0.0, 50.0).p_syn(floor=0.05) == pytest.approx(0.95)
    assert AcylIsomers(0, math.inf, 0.0).p_syn() == 0.0
    assert AcylIsomers(0, 0.0, math.inf).p_syn() == 1.0
    assert AcylIsomers(0, math.inf, math.inf).p_syn() == 0.5
    with pytest.raises(ValueError, match="floor"):
        iso.p_syn(floor=0.6)
    with pytest.raises(ValueError, match="kt"):
        iso.p_syn(kt=0.0)


def test_bad_seeds_and_untypable_molecules_are_refused() -> None:
    mol = mol_from_smiles("CC(=O)NC")
    seeds = embed_seeds(mol, 1, seed=1)
    bad = seeds.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        acyl_isomers(mol, bad)
    with pytest.raises(ValueError, match="seeds must be"):
        acyl_isomers(mol, seeds[:, :3])


def test_turned_samples_land_on_the_drawn_isomer_and_keep_their_deviation() -> None:
    g = torch.Generator().manual_seed(0)
    phi = torch.tensor([0.1, 3.0, -3.0, 0.2, 2.9, -0.3], dtype=torch.float64)  # 3 samples x 2 torsions
    out = choose_acyl_isomers(phi, 3, [AcylIsomers(1, energy_syn=0.0, energy_anti=10.0)], g)
    torch.testing.assert_close(out[0::2], phi[0::2])  # torsion 0 is not an amide: untouched
    torch.testing.assert_close(out[1::2], torch.tensor([3.0 - math.pi, 0.2, -0.3], dtype=torch.float64))
    anti = choose_acyl_isomers(phi, 3, [AcylIsomers(1, energy_syn=10.0, energy_anti=0.0)], g)
    torch.testing.assert_close(anti[1::2], torch.tensor([3.0, 0.2 - math.pi, math.pi - 0.3], dtype=torch.float64))
    many = torch.zeros(4000, dtype=torch.float64)
    floored = choose_acyl_isomers(many, 4000, [AcylIsomers(0, 0.0, 50.0)], g, floor=0.25)
    assert abs(float((floored.abs() > math.pi / 2).double().mean()) - 0.25) < 0.03
    with pytest.raises(ValueError, match="samples"):
        choose_acyl_isomers(phi, 4, [AcylIsomers(0, 0.0, 1.0)], g)


def test_planar_puts_each_acyl_torsion_at_its_drawn_isomers_planar_angle() -> None:
    phi = torch.tensor([0.1, 3.0, -3.0, 0.7, 2.9, -1.2], dtype=torch.float64)  # 3 samples x 2 torsions
    syn = choose_acyl_isomers(
        phi, 3, [AcylIsomers(1, energy_syn=0.0, energy_anti=10.0)], torch.Generator().manual_seed(0), planar=True
    )
    torch.testing.assert_close(syn[0::2], phi[0::2])  # torsion 0 is not acyl: untouched
    torch.testing.assert_close(syn[1::2], torch.zeros(3, dtype=torch.float64))
    anti = choose_acyl_isomers(
        phi, 3, [AcylIsomers(1, energy_syn=10.0, energy_anti=0.0)], torch.Generator().manual_seed(0), planar=True
    )
    torch.testing.assert_close(anti[1::2], torch.full((3,), -math.pi, dtype=torch.float64))
    # the isomers drawn are the same with and without planar: only the angle on the isomer differs
    draws = torch.linspace(-math.pi, math.pi - 1e-3, 400, dtype=torch.float64)
    iso = [AcylIsomers(0, energy_syn=0.0, energy_anti=0.3)]
    kept = choose_acyl_isomers(draws, 400, iso, torch.Generator().manual_seed(3))
    flat = choose_acyl_isomers(draws, 400, iso, torch.Generator().manual_seed(3), planar=True)
    assert torch.equal(kept.abs() < math.pi / 2, flat.abs() < math.pi / 2)
    assert set(flat.tolist()) == {0.0, -math.pi}


def test_planar_sampler_draws_a_planar_amide_on_the_same_isomers() -> None:
    mol = mol_from_smiles("CC(=O)Nc1ccccc1CCO")
    (torsion,) = [t for t in find_torsions(mol, TorsionRules()) if t.amide.value == "secondary"]
    kept = TorsionalSampler(SHIPPED, isomer_floor=0.5).sample_positions(mol, 32, seed=4)
    flat = TorsionalSampler(SHIPPED, isomer_floor=0.5, acyl_planar=True).sample_positions(mol, 32, seed=4)
    angles = np.array([_heavy_dihedral(mol, x, torsion.atoms) for x in flat])
    # one angle per isomer: the seed's own small deviation of the heavy-atom dihedral from planarity
    deviation = np.minimum(np.abs(angles), 180 - np.abs(angles))
    assert np.ptp(deviation) < 1e-3 and deviation.max() < 10
    twisted = np.array([_heavy_dihedral(mol, x, torsion.atoms) for x in kept])
    assert np.minimum(np.abs(twisted), 180 - np.abs(twisted)).max() > 20  # the network's angles are not
    assert np.array_equal(np.abs(angles) > 90, np.abs(twisted) > 90)


def test_sampler_puts_a_secondary_amide_on_its_room_temperature_isomer() -> None:
    """With floor 0 an anilide's conformers are the trans amide but for its Boltzmann share of cis (below 1 % from
    these seeds, 2.8 kcal/mol); with floor 0.5 both isomers appear about equally."""
    mol = mol_from_smiles("CC(=O)Nc1ccccc1CCO")
    (torsion,) = [t for t in find_torsions(mol, TorsionRules()) if t.amide.value == "secondary"]
    cold = TorsionalSampler(SHIPPED, isomer_floor=0.0).sample_positions(mol, 48, seed=4)
    assert sum(abs(_heavy_dihedral(mol, x, torsion.atoms)) > 90 for x in cold) >= 45
    plain = TorsionalSampler(SHIPPED, isomer_floor=None).sample_positions(mol, 48, seed=4)
    assert sum(abs(_heavy_dihedral(mol, x, torsion.atoms)) > 90 for x in plain) < 45  # the network alone
    even = TorsionalSampler(SHIPPED, isomer_floor=0.5).sample_positions(mol, 48, seed=4)
    trans = sum(abs(_heavy_dihedral(mol, x, torsion.atoms)) > 90 for x in even)
    assert 8 < trans < 40


def test_control_ablation_draws_isomers_like_the_product() -> None:
    """The random-torsion control gets the same isomer rule only when asked (an ablation); alone it is uniform."""
    mol = mol_from_smiles("CC(=O)NCc1ccccc1")
    (torsion,) = [t for t in find_torsions(mol, TorsionRules()) if t.amide.value == "secondary"]
    ruled = uniform_torsions(mol, 200, seed=2, isomer_floor=0.0)
    plain = uniform_torsions(mol, 200, seed=2)
    assert sum(abs(_heavy_dihedral(mol, x, torsion.atoms)) > 90 for x in ruled) >= 185  # trans: about 98 %
    assert 70 < sum(abs(_heavy_dihedral(mol, x, torsion.atoms)) > 90 for x in plain) < 130


def test_the_answer_counts_the_turned_isomers() -> None:
    """One chunk: the integration is the same with and without the rule (the draws come after it), so the count
    is the number of conformers whose amide isomer differs between the two."""
    mol = mol_from_smiles("CC(=O)Nc1ccccc1CCO")
    (torsion,) = [t for t in find_torsions(mol, TorsionRules()) if t.amide.value == "secondary"]
    counts: dict[str, int] = {}
    ruled = TorsionalSampler(SHIPPED, isomer_floor=0.0).sample_positions(mol, 40, seed=6, counts=counts)
    plain = TorsionalSampler(SHIPPED, isomer_floor=None).sample_positions(mol, 40, seed=6)
    differ = sum(
        (abs(_heavy_dihedral(mol, a, torsion.atoms)) > 90) != (abs(_heavy_dihedral(mol, b, torsion.atoms)) > 90)
        for a, b in zip(ruled, plain, strict=True)
    )
    assert counts["acyl_isomers_turned"] == differ > 0


def test_an_untypable_molecule_is_refused_by_name() -> None:
    """MMFF94 has no parameters for this boronic acid: a clear error (the sampler's seeds need MMFF94 too, so the
    torsional model refuses such a molecule before the rule is reached)."""
    mol = mol_from_smiles("CC(=O)NCCB(O)O")
    with pytest.raises(ValueError, match="MMFF94"):
        acyl_isomers(mol, embed_seeds(mol, 1, seed=1))


def test_extra_starts_only_lower_each_isomers_energy() -> None:
    """Each isomer's relaxed energy is a minimum over its starts: more ETKDG starts can only lower it."""
    from inference.torsional_sampling import seed_systems
    from molecules.acyl_isomers import acyl_isomers_or_none

    mol = mol_from_smiles("[NH3+]CCCCCc1nnc(SCC(=O)Nc2cccc(Cl)c2)o1")  # drugs_dev: one seed kept, far from the minimum
    systems = seed_systems(mol, 4, 7, torch.float64)
    alone = acyl_isomers_or_none(mol, systems)
    more = acyl_isomers_or_none(mol, systems, extra_starts=8, seed=43)
    assert len(alone) == len(more) == 1 and alone[0].torsion == more[0].torsion
    assert more[0].energy_syn <= alone[0].energy_syn + 1e-6 and more[0].energy_anti <= alone[0].energy_anti + 1e-6
    assert min(more[0].energy_syn, more[0].energy_anti) < min(alone[0].energy_syn, alone[0].energy_anti) - 1.0


def test_off_planar_measures_degrees_from_the_nearer_planar_angle() -> None:
    def chain(angle_deg: float) -> np.ndarray:
        a = math.radians(angle_deg)
        return np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.5], [math.cos(a), math.sin(a), 1.5]])

    x = np.stack([chain(d) for d in (0.0, 10.0, 90.0, 170.0, -150.0)])
    np.testing.assert_allclose(off_planar(x, np.array([[0, 1, 2, 3]]))[:, 0], [0.0, 10.0, 90.0, 10.0, 30.0], atol=1e-9)


def test_a_scorer_gives_the_isomer_energies_and_mmff94_stays_where_it_gives_nan() -> None:
    """``scorer``: each isomer's energy is the scorer's minimum over the MMFF94-relaxed starts (here MMFF94's own
    energies negated: the trans amide becomes the higher isomer); a ``nan`` leaves MMFF94's energies. The sampler
    draws its isomers by the scorer's law (``isomer_scorer``)."""
    mol = mol_from_smiles("CC(=O)Nc1ccccc1CCO")
    seeds = embed_seeds(mol, 2, seed=3, mmff_relax=True)
    (plain,) = acyl_isomers(mol, seeds)
    (flipped,) = acyl_isomers(mol, seeds, scorer=lambda m, x: -mmff_energies(m, x))
    assert np.sign(flipped.energy_syn - flipped.energy_anti) == -np.sign(plain.energy_syn - plain.energy_anti)
    (same,) = acyl_isomers(mol, seeds, scorer=lambda m, x: np.full(len(x), np.nan))
    assert same == plain
    (torsion,) = [t for t in find_torsions(mol, TorsionRules()) if t.amide.value == "secondary"]
    sampler = TorsionalSampler(SHIPPED, isomer_floor=0.0, isomer_scorer=lambda m, x: -mmff_energies(m, x))
    cis = sum(abs(_heavy_dihedral(mol, x, torsion.atoms)) < 90 for x in sampler.sample_positions(mol, 48, seed=4))
    assert cis >= 45  # the trans amide of the MMFF94 law is now the rare isomer
