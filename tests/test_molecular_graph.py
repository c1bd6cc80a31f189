"""Chemistry module: graph features, and the connectivity / stereo checks of generated conformers."""

import numpy as np
import pytest
import torch
from rdkit import Chem
from rdkit.Chem import rdDistGeom

from molecules.features import ATOM_FEATURES, PAIR_FEATURES, UnsupportedElementError, rotatable_bonds
from molecules.graph import TooManyAtomsError, molecular_system
from molecules.validity import check_conformer, stereo_spec

CHIRAL_EZ = "C[C@H](N)C(=O)O/C=C/C[C@@H](F)Cl"


def _embedded(smiles: str, seed: int = 3) -> Chem.Mol:
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    assert rdDistGeom.EmbedMolecule(mol, randomSeed=seed) == 0
    return mol


def test_feature_widths_and_bond_table() -> None:
    mol = Chem.AddHs(Chem.MolFromSmiles("c1ccccc1C(=O)[O-]"))
    system = molecular_system(mol, system_id=4)
    n = mol.GetNumAtoms()
    assert system.graph.node_features.shape == (n, ATOM_FEATURES)
    assert system.graph.edge_features.shape == (n * (n - 1), PAIR_FEATURES)
    assert system.system_id == 4 and system.chemistry.total_charge == -1
    ei, ea = system.graph.edge_index, system.graph.edge_features
    bonded = ea[:, 0] == 0  # column 0 is "no bond"
    assert int(bonded.sum()) == 2 * mol.GetNumBonds()
    # topological distance one-hot: bonded pairs are exactly the 1-hop pairs
    assert torch.equal(ea[:, PAIR_FEATURES - 4] == 1, bonded)
    assert torch.all(ea[:, -4:].sum(1) == 1)
    # aromatic bonds flagged aromatic (column 4)
    aromatic = {(b.GetBeginAtomIdx(), b.GetEndAtomIdx()) for b in mol.GetBonds() if b.GetIsAromatic()}
    flagged = {(int(i), int(j)) for i, j in ei[:, ea[:, 4] == 1].T}
    assert {(i, j) for i, j in aromatic} <= flagged and len(flagged) == 2 * len(aromatic)


def test_features_permute_with_atoms() -> None:
    mol = Chem.AddHs(Chem.MolFromSmiles("CC(=O)Nc1ccc(O)cc1"))
    perm = np.random.default_rng(0).permutation(mol.GetNumAtoms()).tolist()
    renum = Chem.RenumberAtoms(mol, perm)  # new atom k is old atom perm[k]
    a, b = molecular_system(mol).graph, molecular_system(renum).graph
    assert torch.equal(b.node_features, a.node_features[perm])
    n = mol.GetNumAtoms()
    dense_a = torch.zeros(n, n, PAIR_FEATURES)
    dense_a[a.edge_index[0], a.edge_index[1]] = a.edge_features
    dense_b = torch.zeros(n, n, PAIR_FEATURES)
    dense_b[b.edge_index[0], b.edge_index[1]] = b.edge_features
    p = torch.tensor(perm)
    assert torch.equal(dense_b, dense_a[p][:, p])


def test_rotatable_bonds_ignore_terminal_groups() -> None:
    mol = Chem.AddHs(Chem.MolFromSmiles("CCCC"))  # butane: one rotatable bond (the central one)
    assert rotatable_bonds(mol) == [(1, 2)]
    assert rotatable_bonds(Chem.AddHs(Chem.MolFromSmiles("c1ccccc1"))) == []


def test_unsupported_element_and_size_limits() -> None:
    with pytest.raises(UnsupportedElementError, match="Se"):
        molecular_system(Chem.AddHs(Chem.MolFromSmiles("C[Se]C")))
    with pytest.raises(TooManyAtomsError, match="limit"):
        molecular_system(Chem.AddHs(Chem.MolFromSmiles("C" * 80)), max_atoms=200)


def test_embedded_conformer_passes_and_mirror_is_reflected() -> None:
    mol = _embedded(CHIRAL_EZ)
    x = mol.GetConformer().GetPositions()
    assert stereo_spec(mol).centres == {1: "S", 9: "S"} and stereo_spec(mol).double_bonds == {6: "E"}
    ok = check_conformer(mol, x)
    assert ok.ok and not ok.reflected and ok.reason is None
    mirror = check_conformer(mol, -x)
    assert mirror.ok and mirror.reflected
    fixed = check_conformer(mol, mirror.positions)
    assert fixed.ok and not fixed.reflected


def test_wrong_double_bond_and_broken_bond_are_rejected() -> None:
    mol = _embedded(CHIRAL_EZ)
    z_isomer = _embedded(CHIRAL_EZ.replace("/C=C/", "/C=C\\"))
    bad = check_conformer(mol, z_isomer.GetConformer().GetPositions())
    assert not bad.ok and "E/Z" in (bad.reason or "")
    x = mol.GetConformer().GetPositions().copy()
    x[0] += np.array([4.0, 0.0, 0.0])  # pull the methyl carbon away
    broken = check_conformer(mol, x)
    assert not broken.ok and "missing bonds C0-C1" in (broken.reason or "")
    nan = x.copy()
    nan[3, 1] = np.nan
    assert check_conformer(mol, nan).reason == "non-finite coordinates"


def test_one_inverted_centre_of_two_is_not_reflected() -> None:
    mol = _embedded(CHIRAL_EZ)
    other = _embedded(CHIRAL_EZ.replace("[C@@H](F)Cl", "[C@H](F)Cl"))
    res = check_conformer(mol, other.GetConformer().GetPositions())
    assert not res.ok and "1 of 2 stereocentres" in (res.reason or "")


def test_unspecified_stereo_accepts_either_mirror_image() -> None:
    mol = _embedded("CC(N)C(=O)O")  # stereocentre not specified
    x = mol.GetConformer().GetPositions()
    assert stereo_spec(mol).centres == {}
    for pos in (x, -x):
        res = check_conformer(mol, pos)
        assert res.ok and not res.reflected


def test_fragments_are_rejected_or_the_largest_kept_never_silently(caplog: pytest.LogCaptureFixture) -> None:
    from molecules.smiles import SmilesError, mol_from_smiles

    salt = "CC(=O)Oc1ccccc1C(=O)[O-].[Na+].O"
    with pytest.raises(SmilesError, match="3 disconnected fragments"):
        mol_from_smiles(salt)
    with caplog.at_level("WARNING", logger="molecules.smiles"):
        mol = mol_from_smiles(salt, fragments="largest")
    assert Chem.MolToSmiles(Chem.RemoveHs(mol)) == Chem.MolToSmiles(Chem.MolFromSmiles("CC(=O)Oc1ccccc1C(=O)[O-]"))
    assert mol.GetNumAtoms() == 20  # 13 heavy atoms + 7 hydrogens, the anion's charge kept
    assert sorted(mol.GetProp("dropped_fragments").split(".")) == ["O", "[Na+]"]
    assert "kept the largest fragment" in caplog.text
    with pytest.raises(ValueError, match="fragments must be one of"):
        mol_from_smiles("CCO", fragments="all")


@pytest.mark.parametrize("smiles", ["CC\u00e9O", "C\u2013C", "\U0001f600", "c1ccccc1\u00b7Cl"])
def test_non_ascii_smiles_is_a_clear_error(smiles: str) -> None:
    from molecules.smiles import SmilesError, mol_from_smiles

    with pytest.raises(SmilesError, match="non-ASCII character"):
        mol_from_smiles(smiles)
