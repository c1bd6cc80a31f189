"""Reference-ensemble readers: SPICE (RDKit order, energies), GEOM-DRUGS (graph-isomorphism mapping),
failures with reasons, the corpus reader, and SMILES parsing errors."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import rdDistGeom

from molecules.references import (
    CorpusEntry,
    load_references,
    map_atoms,
    perceive_bonds,
    read_corpus,
)
from molecules.smiles import SmilesError, mol_from_smiles
from molecules.xyz import XyzFrame, write_xyz

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "drugs").is_dir(), reason="shared data not available")


def _conformers(smiles: str, n: int, seed: int = 5) -> Chem.Mol:
    mol = mol_from_smiles(smiles)
    params = rdDistGeom.ETKDGv3()
    setattr(params, "randomSeed", seed)  # noqa: B010 (RDKit's stubs mistype the attribute)
    rdDistGeom.EmbedMultipleConfs(mol, numConfs=n, params=params)
    return mol


def _frames(mol: Chem.Mol, order: list[int] | None = None, comments: list[str] | None = None) -> list[XyzFrame]:
    order = list(range(mol.GetNumAtoms())) if order is None else order
    symbols = tuple(mol.GetAtomWithIdx(i).GetSymbol() for i in order)
    return [
        XyzFrame(symbols, c.GetPositions()[order], comments[k] if comments else "0")
        for k, c in enumerate(mol.GetConformers())
    ]


def _distances(mol: Chem.Mol, cid: int, atoms: list[int]) -> np.ndarray:
    pos = mol.GetConformer(cid).GetPositions()[atoms]
    return np.linalg.norm(pos[:, None] - pos[None], axis=-1)


def _dataset(root: Path, kind: str, rows: list[tuple[str, str]], frames: dict[str, list[XyzFrame]]) -> Path:
    folder = root / kind / "conformers"
    folder.mkdir(parents=True)
    index = "spice/spice_test.txt" if kind == "spice" else "drugs/drugs_dev.txt"
    lines = ["Rotatable_Bonds\tSMILES\tHash_Name", *[f"3\t{smi}\t{name}" for name, smi in rows]]
    (root / index).write_text("\n".join(lines) + "\n")
    for name, fr in frames.items():
        write_xyz(folder / f"{name}.xyz.gz", fr)
    return root


def test_drugs_atoms_mapped_by_graph_isomorphism(tmp_path: Path) -> None:
    smiles = "CC(=O)Nc1ccc(O)cc1"  # paracetamol
    mol = _conformers(smiles, 3)
    order = np.random.default_rng(0).permutation(mol.GetNumAtoms()).tolist()  # a foreign atom order
    _dataset(tmp_path, "drugs", [("rot3_test", smiles)], {"rot3_test": _frames(mol, order)})
    refs = load_references("drugs_dev", tmp_path)
    assert not refs.failures
    (ens,) = refs.ensembles
    assert ens.num_conformers == 3 and ens.energies_hartree is None
    assert Chem.MolToSmiles(Chem.RemoveHs(ens.mol)) == Chem.MolToSmiles(Chem.MolFromSmiles(smiles))
    # every bond of the SMILES has a bond length in the mapped coordinates
    for conf in ens.mol.GetConformers():
        pos = conf.GetPositions()
        for b in ens.mol.GetBonds():
            assert np.linalg.norm(pos[b.GetBeginAtomIdx()] - pos[b.GetEndAtomIdx()]) < 1.6
    # heavy atoms land exactly where RDKit had them (the molecule has no heavy-atom symmetry but the ring flip)
    heavy = [a.GetIdx() for a in ens.mol.GetAtoms() if a.GetAtomicNum() > 1]
    d = np.linalg.norm(
        ens.mol.GetConformer(0).GetPositions()[heavy] - mol.GetConformer(0).GetPositions()[heavy], axis=1
    )
    assert np.sort(d)[: len(heavy) - 4].max() < 1e-6  # all but the 4 flippable ring CH carbons


def test_drugs_cap_keeps_file_order_and_failures_carry_reasons(tmp_path: Path) -> None:
    good = _conformers("OCCc1ccccc1", 5)
    broken = _conformers("CCOC(C)=O", 2)
    frames = _frames(broken)
    stretched = frames[0].positions.copy()
    stretched[1] += 3.0  # pull one carbon away: a SMILES bond is missing in every frame
    frames = [XyzFrame(f.symbols, stretched, "0") for f in frames]
    _dataset(
        tmp_path,
        "drugs",
        [("a", "OCCc1ccccc1"), ("b", "CCOC(C)=O"), ("c", "CC(C)(C"), ("d", "CCN")],
        {"a": _frames(good), "b": frames},  # "d" has no file
    )
    refs = load_references("drugs_dev", tmp_path, max_refs=3)
    (ens,) = refs.ensembles
    assert ens.name == "a" and ens.num_conformers == 3 and ens.frames_in_file == 5
    heavy = [a.GetIdx() for a in ens.mol.GetAtoms() if a.GetAtomicNum() > 1]
    for cid in range(3):  # the first three frames, in file order (compared by heavy-atom distance matrices)
        np.testing.assert_allclose(_distances(ens.mol, cid, heavy), _distances(good, cid, heavy), atol=1e-6)
    reasons = {f.name: f.reason for f in refs.failures}
    assert set(reasons) == {"b", "c", "d"}
    assert "miss at least one SMILES bond" in reasons["b"]
    assert "cannot parse SMILES" in reasons["c"]
    assert "not found" in reasons["d"]


def test_spice_sorted_by_energy_capped_and_order_checked(tmp_path: Path) -> None:
    smiles = "CCOCCO"
    mol = _conformers(smiles, 4)
    energies = ["-231.5", "-231.9", "-231.7", "-231.6"]
    _dataset(
        tmp_path,
        "spice",
        [("s1", smiles), ("s2", "OCCOCC")],
        {"s1": _frames(mol, comments=energies), "s2": _frames(mol, comments=energies)},  # s2: same formula, wrong order
    )
    refs = load_references("spice_test", tmp_path, max_refs=2)
    (ens,) = refs.ensembles
    np.testing.assert_allclose(ens.energies_hartree, [-231.9, -231.7])
    np.testing.assert_allclose(ens.mol.GetConformer(0).GetPositions(), mol.GetConformer(1).GetPositions(), atol=1e-6)
    np.testing.assert_allclose(ens.mol.GetConformer(1).GetPositions(), mol.GetConformer(2).GetPositions(), atol=1e-6)
    ((name, reason),) = [(f.name, f.reason) for f in refs.failures]
    assert name == "s2" and "not in RDKit AddHs order" in reason


def test_map_atoms_rejects_other_molecules_and_perceive_bonds() -> None:
    mol = _conformers("CCO", 1)
    frame = _frames(mol)[0]
    adj = perceive_bonds(frame.symbols, frame.positions)
    assert adj.sum() // 2 == mol.GetNumBonds() and (adj == adj.T).all()
    assert map_atoms(mol, frame) is not None
    other = _frames(_conformers("COC", 1))[0]  # same atoms, other graph
    assert map_atoms(mol, other) is None


def test_unknown_dataset_and_bad_index(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown dataset"):
        load_references("qm9", tmp_path)
    (tmp_path / "drugs").mkdir()
    (tmp_path / "drugs" / "drugs_dev.txt").write_text("smiles,name\nCCO,x\n")
    with pytest.raises(ValueError, match="header"):
        load_references("drugs_dev", tmp_path)
    with pytest.raises(FileNotFoundError):
        load_references("spice_test", tmp_path)


def test_corpus_reader(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("smiles,n_conformers,corrected_smiles\nCC[NH3+],3,CCN\nc1ccccc1,1,c1ccccc1\n")
    assert read_corpus(path) == [CorpusEntry("geom_0000", "CCN"), CorpusEntry("geom_0001", "c1ccccc1")]
    bad = tmp_path / "bad.csv"
    bad.write_text("smiles\nCC\n")
    with pytest.raises(ValueError, match="corrected_smiles"):
        read_corpus(bad)


@pytest.mark.parametrize(
    ("smiles", "message"),
    [
        ("", "empty"),
        ("CC(C", "cannot parse SMILES 'CC\\(C': extra open parentheses"),
        ("C(C)(C)(C)(C)C", "invalid chemistry.*valence"),
        ("CC.O", "2 disconnected fragments"),
        ("CCO ethanol", "whitespace"),
    ],
)
def test_smiles_errors_are_specific(smiles: str, message: str) -> None:
    with pytest.raises(SmilesError, match=message):
        mol_from_smiles(smiles)


def test_smiles_atom_order_is_rdkit_addhs() -> None:
    mol = mol_from_smiles("OC(=O)c1ccccc1")
    ref = Chem.AddHs(Chem.MolFromSmiles("OC(=O)c1ccccc1"))
    assert [a.GetSymbol() for a in mol.GetAtoms()] == [a.GetSymbol() for a in ref.GetAtoms()]
    assert mol_from_smiles("CCO", add_hs=False).GetNumAtoms() == 3


@needs_data
@pytest.mark.slow
def test_shared_datasets_read_completely() -> None:
    """Every molecule of both shared datasets reads and maps (the GEOM-DRUGS zwitterion included)."""
    drugs = load_references("drugs_dev", DATA, max_refs=2)
    spice = load_references("spice_test", DATA, max_refs=2)
    assert (len(drugs.ensembles), len(drugs.failures)) == (40, 0)
    assert (len(spice.ensembles), len(spice.failures)) == (68, 0)
    zwitterion = next(e for e in drugs.ensembles if e.name == "rot9_b614d12306")
    assert any("close contacts" in n for n in zwitterion.notes)
    with gzip.open(DATA / "spice" / "conformers" / f"{spice.ensembles[0].name}.xyz.gz", "rt") as fh:
        first_energy = float(fh.readlines()[1])
    assert spice.ensembles[0].energies_hartree is not None
    assert spice.ensembles[0].energies_hartree[0] <= first_energy
