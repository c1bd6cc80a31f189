"""The chemistry conventions every front end shares: ensemble energies, duplicates, stereo, tags, inputs.

Known answers throughout: Boltzmann weights against ``exp(−ΔE/kT)`` by hand, duplicates built by
symmetry operations (removed) and by a torsion turned just past the threshold (kept), stereoisomer
counts of textbook molecules, and small batch files whose good and bad lines are known.
"""

from __future__ import annotations

import gzip
import math
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import rdDepictor, rdDistGeom, rdMolTransforms

from molecules.ensemble import (
    CREST_LIKE,
    DEFAULT_DUPLICATES,
    DuplicateCriteria,
    boltzmann_weights,
    conformer_ranks,
    relative_energies_kcal_mol,
    remove_duplicates,
)
from molecules.inputs import (
    InputError,
    InputRecord,
    csv_records,
    input_format,
    input_records,
    sdf_records,
    smi_records,
)
from molecules.rmsd import HeavyAtomRmsd, kabsch_rmsd
from molecules.sdf import sdf_text
from molecules.smiles import mol_from_smiles
from molecules.stereo import (
    UnassignedStereoError,
    count_stereoisomers,
    enumerate_stereoisomers,
    find_unassigned_stereo,
    require_assigned_stereo,
)
from molecules.tags import (
    CONFORMER_TAGS,
    TAG_BOLTZMANN_WEIGHT,
    TAG_ENERGY,
    TAG_RANK,
    TAG_RELATIVE_ENERGY,
    crest_energy_ev,
    crest_xyz_text,
    tag_conformers,
    write_crest_xyz,
)
from molecules.xyz import read_xyz

GEOM_TEST_CSV = Path("/work/shared/data/geom/DRUGS_test_smiles_corrected.csv")
K_B_EV = 8.617333262e-5
EV_IN_KCAL_MOL = 23.060547830619


# --- energies -----------------------------------------------------------------------------------------------


def test_boltzmann_weights_match_the_formula_by_hand() -> None:
    energies = [-1000.0, -1000.0 + 0.02, -1000.0 - 0.01, -1000.0 + 0.3]
    for temperature in (298.15, 500.0):
        kt = K_B_EV * temperature
        lowest = min(energies)
        terms = [math.exp(-(e - lowest) / kt) for e in energies]
        expected = [t / sum(terms) for t in terms]
        got = boltzmann_weights(energies, temperature)
        assert got.sum() == pytest.approx(1.0, abs=1e-15)
        np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert boltzmann_weights(energies).tolist() == pytest.approx(boltzmann_weights(energies, 298.15).tolist())


def test_boltzmann_weights_are_stable_and_shift_invariant() -> None:
    far = np.array([-5.0e5, -5.0e5 + 30.0, -5.0e5 + 1.0e-3])  # exp(−E/kT) itself would overflow
    weights = boltzmann_weights(far)
    assert np.isfinite(weights).all() and weights.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(weights, boltzmann_weights(far + 5.0e5), rtol=1e-6)
    assert weights[1] == 0.0  # 30 eV above: underflows to zero, harmlessly
    assert boltzmann_weights([-3.0]).tolist() == [1.0]
    assert boltzmann_weights([]).shape == (0,)
    with pytest.raises(ValueError, match="non-finite"):
        boltzmann_weights([0.0, float("nan")])
    with pytest.raises(ValueError, match="kelvin"):
        boltzmann_weights([0.0], temperature_k=0.0)


def test_relative_energies_in_kcal_mol_and_ranks() -> None:
    energies = [-2.0, -3.0, -2.5, -2.5]
    expected = np.array([1.0, 0.0, 0.5, 0.5]) * EV_IN_KCAL_MOL
    np.testing.assert_allclose(relative_energies_kcal_mol(energies), expected, rtol=1e-12)
    assert conformer_ranks(energies).tolist() == [4, 1, 2, 3]  # ties: input order


# --- duplicates ---------------------------------------------------------------------------------------------

SMILES_WITH_SYMMETRY = "CC(C)CCCO"  # isopropyl methyls (atoms 0 and 2) are equivalent; O6 on a free torsion


@pytest.fixture(scope="module")
def conformer() -> tuple[Chem.Mol, np.ndarray]:
    mol = mol_from_smiles(SMILES_WITH_SYMMETRY)
    assert rdDistGeom.EmbedMolecule(mol, randomSeed=11) == 0
    return mol, mol.GetConformer().GetPositions()


def _rotation(seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def _methyl_swap(mol: Chem.Mol) -> tuple[int, ...]:
    """An automorphism of the all-atom graph that exchanges the two isopropyl methyls (and their H)."""
    for match in mol.GetSubstructMatches(mol, uniquify=False, maxMatches=10_000):
        if match[0] == 2 and match[2] == 0:
            return tuple(match)
    raise AssertionError("no automorphism swapping the methyls")


def test_symmetry_equivalent_copy_is_removed(conformer: tuple[Chem.Mol, np.ndarray]) -> None:
    mol, pos = conformer
    swap = _methyl_swap(mol)
    copy = pos[list(swap)] @ _rotation(3).T + np.array([4.0, -2.0, 7.5])
    heavy = [a.GetIdx() for a in mol.GetAtoms() if a.GetAtomicNum() > 1]
    assert kabsch_rmsd(pos[heavy], copy[heavy]) > 0.3  # in fixed numbering the copy looks different
    result = remove_duplicates(mol, np.stack([copy, pos]), [-10.0 + 1e-4, -10.0])
    assert result.kept == (1,)
    assert result.duplicate_of == {0: 1} and result.num_removed == 1


def _with_torsion(mol: Chem.Mol, degrees: float) -> np.ndarray:
    out = Chem.Mol(mol)
    rdMolTransforms.SetDihedralDeg(out.GetConformer(), 3, 4, 5, 6, degrees)
    return out.GetConformer().GetPositions()


def test_pair_just_above_the_threshold_is_kept(conformer: tuple[Chem.Mol, np.ndarray]) -> None:
    mol, pos = conformer
    threshold = DEFAULT_DUPLICATES.rmsd_threshold_angstrom
    engine = HeavyAtomRmsd(mol)
    start = rdMolTransforms.GetDihedralDeg(mol.GetConformer(), 3, 4, 5, 6)
    below = above = None
    for step in range(1, 181):
        turned = _with_torsion(mol, start + step)
        rmsd = float(engine.matrix(pos[None], turned[None])[0, 0])
        if rmsd > threshold:
            above = (turned, rmsd)
            break
        below = (turned, rmsd)
    assert above is not None and below is not None
    assert threshold < above[1] < threshold + 0.05 and below[1] <= threshold
    energies = [-1.0, -0.9]
    assert remove_duplicates(mol, np.stack([pos, above[0]]), energies).kept == (0, 1)
    assert remove_duplicates(mol, np.stack([pos, below[0]]), energies).kept == (0,)
    # without energies: the same verdicts, by RMSD alone, in input order
    assert remove_duplicates(mol, np.stack([above[0], pos])).kept == (0, 1)
    assert remove_duplicates(mol, np.stack([below[0], pos])).kept == (0,)


def test_energy_tolerance_and_switching_off(conformer: tuple[Chem.Mol, np.ndarray]) -> None:
    mol, pos = conformer
    near = _with_torsion(mol, rdMolTransforms.GetDihedralDeg(mol.GetConformer(), 3, 4, 5, 6) + 2.0)
    both = np.stack([pos, near, pos + 1.0])
    one_kcal = 1.0 / EV_IN_KCAL_MOL
    energies = [0.0, one_kcal, 0.01 * one_kcal]
    assert remove_duplicates(mol, both, energies).kept == (0,)  # RMSD alone: both are copies
    crest = remove_duplicates(mol, both, energies, criteria=CREST_LIKE)
    assert crest.kept == (0, 1) and crest.duplicate_of == {2: 0}  # 1 kcal/mol apart: a different conformer
    off = remove_duplicates(mol, both, energies, criteria=DuplicateCriteria(rmsd_threshold_angstrom=0.0))
    assert off.kept == (0, 2, 1) and off.num_removed == 0  # energy order
    with pytest.raises(ValueError, match="non-negative"):
        DuplicateCriteria(rmsd_threshold_angstrom=-0.1)
    with pytest.raises(ValueError, match="2 energies for 3 conformers"):
        remove_duplicates(mol, both, energies[:2])


# --- stereo -------------------------------------------------------------------------------------------------


@pytest.fixture(params=[True, False], ids=["legacy-perception", "new-perception"])
def perception(request: pytest.FixtureRequest) -> Iterator[bool]:
    before = Chem.GetUseLegacyStereoPerception()
    Chem.SetUseLegacyStereoPerception(request.param)
    yield request.param
    Chem.SetUseLegacyStereoPerception(before)


def test_unassigned_centre_and_double_bond_are_found_and_named(perception: bool) -> None:
    smiles = "CC(O)C/C=C/CC=CC(F)Cl"  # C1 and C9 open, C4=C5 given (E), C7=C8 open
    mol = mol_from_smiles(smiles)
    found = find_unassigned_stereo(mol)
    assert found.centres == (1, 9) and found.bonds == ((7, 8),)
    assert found.names == ("C1", "C9", "C7=C8")
    legacy = Chem.FindMolChiralCenters(mol, includeUnassigned=True, useLegacyImplementation=perception)
    assert sorted(i for i, label in legacy if label == "?") == list(found.centres)
    with pytest.raises(UnassignedStereoError) as caught:
        require_assigned_stereo(mol, smiles)
    message = str(caught.value)
    assert "C1, C9" in message and "C7=C8" in message and "double bond" in message and smiles in message
    assert isinstance(caught.value, ValueError) and caught.value.unassigned == found


def test_assigned_input_passes(perception: bool) -> None:
    for smiles in ("C[C@H](O)CC", "C/C=C/C", "C[C@@H]1CC[C@H](C)CC1", "CCO", "c1ccccc1C(C)(C)C"):
        require_assigned_stereo(mol_from_smiles(smiles))
    ring = find_unassigned_stereo(mol_from_smiles("CC1CCC(C)CC1"))  # cis/trans ring stereo, no chiral atom
    assert ring.centres == (1, 4)


def test_enumeration_counts_and_cap(perception: bool) -> None:
    assert len(enumerate_stereoisomers("CC(O)C(O)CC")) == 4
    assert len(enumerate_stereoisomers("OC(=O)C(O)C(O)C(=O)O")) == 3  # tartaric acid: R,R; S,S; meso
    assert len(enumerate_stereoisomers("CC1CCC(C)CC1")) == 2  # cis and trans
    assert enumerate_stereoisomers("C[C@H](O)CC") == [Chem.MolToSmiles(Chem.MolFromSmiles("C[C@H](O)CC"))]
    partial = enumerate_stereoisomers("C[C@H](O)C(O)CC")  # the given centre is kept
    assert len(partial) == 2 and set(partial) <= set(enumerate_stereoisomers("CC(O)C(O)CC"))
    crowded = "CC(F)C(Cl)C(Br)C=CC"
    assert count_stereoisomers(crowded) == 16
    capped = enumerate_stereoisomers(crowded, max_isomers=5)
    assert len(capped) == 5 == len(set(capped)) and capped == enumerate_stereoisomers(crowded, max_isomers=5)
    full = enumerate_stereoisomers(crowded, max_isomers=100)
    assert len(full) == 16 and capped == full[:5]
    for smiles in full:
        assert not find_unassigned_stereo(mol_from_smiles(smiles))
    with pytest.raises(ValueError, match="at least 1"):
        enumerate_stereoisomers(crowded, max_isomers=0)


# --- tags and CREST XYZ -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ensemble() -> tuple[Chem.Mol, np.ndarray]:
    mol = mol_from_smiles("OCCCl")
    ids = list(rdDistGeom.EmbedMultipleConfs(mol, numConfs=3, randomSeed=5))
    assert len(ids) == 3
    return mol, np.array([-100.0, -100.2, -100.1])


def test_sd_tags_and_titles(ensemble: tuple[Chem.Mol, np.ndarray]) -> None:
    mol, energies = ensemble
    records = tag_conformers(
        mol,
        "chloroethanol",
        energies_ev=energies,
        energy_model="mmff94",
        checks_passed=["connectivity", "stereochemistry"],
        input_smiles="OCCCl",
        input_properties={"vendor": "ACME", TAG_RANK: "clash"},
    )
    supplier = Chem.SDMolSupplier()
    supplier.SetData(sdf_text(records), removeHs=False)
    back = list(supplier)
    assert [m.GetProp("_Name") for m in back] == ["chloroethanol"] * 3
    assert [m.GetProp(TAG_RANK) for m in back] == ["1", "2", "3"]
    assert [float(m.GetProp(TAG_ENERGY)) for m in back] == [-100.2, -100.1, -100.0]
    assert float(back[0].GetProp(TAG_RELATIVE_ENERGY)) == 0.0
    assert float(back[2].GetProp(TAG_RELATIVE_ENERGY)) == pytest.approx(0.2 * EV_IN_KCAL_MOL, abs=1e-4)
    assert sum(float(m.GetProp(TAG_BOLTZMANN_WEIGHT)) for m in back) == pytest.approx(1.0, abs=1e-5)
    first = back[0].GetPropsAsDict()
    assert set(CONFORMER_TAGS) <= set(first) and first["vendor"] == "ACME"
    assert back[0].GetProp("checks_passed") == "connectivity,stereochemistry"
    np.testing.assert_allclose(back[0].GetConformer().GetPositions(), mol.GetConformer(1).GetPositions(), atol=1e-4)
    bare = tag_conformers(mol, "x")
    assert len(bare) == 3 and not set(bare[0].GetPropNames()) & {TAG_ENERGY, TAG_RANK, TAG_BOLTZMANN_WEIGHT}


@pytest.mark.parametrize("name", ["crest_conformers.xyz", "crest_conformers.xyz.gz"])
def test_crest_xyz_layout_reads_back(ensemble: tuple[Chem.Mol, np.ndarray], tmp_path: Path, name: str) -> None:
    mol, energies = ensemble
    symbols = [a.GetSymbol() for a in mol.GetAtoms()]
    positions = np.stack([c.GetPositions() for c in mol.GetConformers()])
    path = write_crest_xyz(tmp_path / name, symbols, positions, energies)
    frames = read_xyz(path)
    assert len(frames) == 3
    order = [1, 2, 0]  # by energy
    for frame, k in zip(frames, order, strict=True):
        assert frame.symbols == tuple(symbols)
        np.testing.assert_allclose(frame.positions, positions[k], atol=1e-9)
        assert re.fullmatch(r" +-?\d+\.\d{8}", frame.comment)  # the bare energy, nothing else
        assert float(frame.comment) == pytest.approx(energies[k] / 27.211386245988, abs=1e-8)
        assert crest_energy_ev(frame) == pytest.approx(energies[k], abs=1e-6)
    text = crest_xyz_text(symbols, positions, energies)
    assert text.splitlines()[0] == f"  {len(symbols)}"
    with pytest.raises(ValueError, match="one energy per frame"):
        crest_xyz_text(symbols, positions, energies[:2])


# --- input readers ------------------------------------------------------------------------------------------


def _errors(items: list) -> list[InputError]:
    return [i for i in items if isinstance(i, InputError)]


def _records(items: list) -> list[InputRecord]:
    return [i for i in items if isinstance(i, InputRecord)]


def test_smi_reader_keeps_going(tmp_path: Path) -> None:
    path = tmp_path / "batch.smi"
    path.write_text(
        "smiles name\n"  # 1 header
        "# a comment\n"  # 2
        "CCO ethanol\n"  # 3
        "\n"  # 4
        "C1CC broken ring\n"  # 5
        "CC(=O)[O-].[Na+] sodium acetate\n"  # 6
        "c1ccccc1\n"  # 7: no ID
        "   \t\n"  # 8
        "C[C@H](N)C(=O)O\talanine\n"  # 9
    )
    items = list(smi_records(path))
    assert [(type(i).__name__, i.id, i.line) for i in items] == [
        ("InputRecord", "ethanol", 3),
        ("InputError", "broken ring", 5),
        ("InputError", "sodium acetate", 6),
        ("InputRecord", "mol4", 7),
        ("InputRecord", "alanine", 9),
    ]
    errors = _errors(items)
    assert "C1CC" in errors[0].message
    assert "2 disconnected fragments" in errors[1].message and "largest" in errors[1].message
    assert str(errors[0]).startswith("line 5 (broken ring): ")
    ethanol = _records(items)[0]
    assert ethanol.smiles == "CCO" and ethanol.mol.GetNumAtoms() == 9
    largest = _records(list(smi_records(path, fragments="largest")))
    acetate = next(r for r in largest if r.id == "sodium acetate")
    assert Chem.MolToSmiles(Chem.RemoveHs(acetate.mol)) == "CC(=O)[O-]" and acetate.dropped_fragments == ("[Na+]",)


def test_sdf_reader_turns_bad_records_into_errors(tmp_path: Path) -> None:
    good = mol_from_smiles("C[C@H](O)CC")
    assert rdDistGeom.EmbedMolecule(good, randomSeed=2) == 0
    good.SetProp("_Name", "butanol")
    good.SetProp("source", "vendor A")
    flat = Chem.MolFromSmiles("c1ccncc1")  # 2D, no title
    rdDepictor.Compute2DCoords(flat)
    flat.SetProp("_Name", "")
    overvalent = "fluorine\n  hand\n\n  2  1  0  0  0  0  0  0  0  0999 V2000\n" + (
        "    0.0000    0.0000    0.0000 F   0  0  0  0  0  0\n"
        "    1.3000    0.0000    0.0000 F   0  0  0  0  0  0\n"
        "  1  2  3  0\nM  END\n$$$$\n"
    )
    salt = Chem.MolFromSmiles("C[NH3+].[Cl-]")
    rdDepictor.Compute2DCoords(salt)
    salt.SetProp("_Name", "methylammonium chloride")
    text = sdf_text([good]) + overvalent + "junk\nnot a molfile\n$$$$\n" + sdf_text([flat, salt])
    path = tmp_path / "batch.sdf.gz"
    with gzip.open(path, "wt") as fh:
        fh.write(text)
    items = list(sdf_records(path))
    assert [(type(i).__name__, i.id) for i in items] == [
        ("InputRecord", "butanol"),
        ("InputError", "fluorine"),
        ("InputError", "junk"),
        ("InputRecord", "mol4"),
        ("InputError", "methylammonium chloride"),
    ]
    butanol, pyridine = _records(items)
    assert butanol.line == 1 and butanol.properties == {"source": "vendor A"}
    assert butanol.smiles == "CC[C@H](C)O"  # stereo from the 3D coordinates
    assert butanol.mol.GetNumAtoms() == 15 and butanol.mol.GetConformer().Is3D()
    assert pyridine.smiles == "c1ccncc1" and pyridine.mol.GetNumAtoms() == 11  # hydrogens added
    fluorine, junk, chloride = _errors(items)
    assert "valence" in fluorine.message.lower() and fluorine.line == text.splitlines().index("fluorine") + 1
    assert "mol block" in junk.message
    assert "disconnected fragments" in chloride.message


def test_csv_reader(tmp_path: Path) -> None:
    path = tmp_path / "batch.csv"
    path.write_text(
        "Name,SMILES,logP\n"  # 1
        "ethanol,CCO,-0.31\n"  # 2
        "bad,C(C,1.0\n"  # 3
        "\n"  # 4
        "empty,,2.0\n"  # 5
        "salt,CC(=O)O.[Na+],0\n"  # 6
        '"quoted, name",c1ccccc1,2.13\n'  # 7
        "short,CC\n"  # 8
        ",CCN,-0.13\n",  # 9: no ID
        encoding="utf-8-sig",  # Excel's byte-order mark
    )
    items = list(csv_records(path))
    assert [(type(i).__name__, i.id, i.line) for i in items] == [
        ("InputRecord", "ethanol", 2),
        ("InputError", "bad", 3),
        ("InputError", "empty", 5),
        ("InputError", "salt", 6),
        ("InputRecord", "quoted, name", 7),
        ("InputError", "short", 8),
        ("InputRecord", "mol7", 9),
    ]
    assert _records(items)[0].properties == {"logP": "-0.31"}
    messages = [e.message for e in _errors(items)]
    assert "empty SMILES" in messages[1] and "fragments" in messages[2] and "2 fields" in messages[3]
    assert [i.id for i in input_records(path) if isinstance(i, InputRecord)] == ["ethanol", "quoted, name", "mol7"]

    two = tmp_path / "two.csv"
    two.write_text("smiles,corrected_smiles,id\nCC,CCC,a\n")
    with pytest.raises(ValueError, match="several columns look like SMILES"):
        csv_records(two)
    (only,) = csv_records(two, smiles_column="Corrected_SMILES")
    assert isinstance(only, InputRecord) and only.smiles == "CCC" and only.properties == {"smiles": "CC"}
    with pytest.raises(ValueError, match="no SMILES column 'nope'"):
        csv_records(two, smiles_column="nope")
    none = tmp_path / "none.csv"
    none.write_text("name,formula\nx,C2H6O\n")
    with pytest.raises(ValueError, match="no SMILES column"):
        csv_records(none)


@pytest.mark.skipif(not GEOM_TEST_CSV.is_file(), reason="needs the GEOM-DRUGS test SMILES in ../shared/data")
def test_geom_drugs_test_csv_parses() -> None:
    with pytest.raises(ValueError, match="corrected_smiles"):
        csv_records(GEOM_TEST_CSV)  # 'smiles' and 'corrected_smiles': ambiguous, the user must choose
    items = list(csv_records(GEOM_TEST_CSV, smiles_column="corrected_smiles"))
    assert len(items) == 1000 and not _errors(items)
    first = _records(items)[0]
    assert first.id == "mol1" and first.line == 2 and set(first.properties) == {"smiles", "n_conformers"}


def test_input_format_dispatch(tmp_path: Path) -> None:
    assert [input_format(n) for n in ("a.smi", "A.SDF", "b.csv.gz", "c.tsv", "d.sdf.gz")] == [
        "smi",
        "sdf",
        "csv",
        "csv",
        "sdf",
    ]
    with pytest.raises(ValueError, match="unknown input format"):
        input_format("molecules.txt")
    with pytest.raises(FileNotFoundError):
        input_records(tmp_path / "missing.smi")
    path = tmp_path / "x.smi"
    path.write_text("CCO\n")
    with pytest.raises(ValueError, match="CSV input"):
        input_records(path, smiles_column="smiles")
    tsv = tmp_path / "x.tsv"
    tsv.write_text("id\tsmiles\nm1\tCCO\n")
    assert [i.id for i in input_records(tsv)] == ["m1"]
