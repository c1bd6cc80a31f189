"""COV-R/COV-P/AMR on hand-made RMSD matrices with known answers, aggregation, failures, and the
benchmark harness end to end on a tiny run (RDKit only)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from benchmarks.coverage import REPORT_THRESHOLDS, THRESHOLDS, failed_score, recall_by_group, score_matrix, summarize
from benchmarks.methods import METHODS, EtkdgGenerator, MethodSettings, build_methods, register_method
from molecules.smiles import mol_from_smiles

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def test_threshold_grid_is_the_published_one() -> None:
    assert len(THRESHOLDS) == 20
    assert THRESHOLDS[0] == 0.0 and THRESHOLDS[-1] == 2.375
    np.testing.assert_allclose(np.diff(THRESHOLDS), 0.125)
    assert set(REPORT_THRESHOLDS) <= set(THRESHOLDS)


def test_known_answers_on_a_hand_made_matrix() -> None:
    # 3 references x 4 generated
    d = np.array(
        [
            [0.40, 1.30, 2.00, 0.90],  # best 0.40
            [1.10, 0.80, 1.60, 3.00],  # best 0.80
            [2.60, 2.50, 1.25, 2.70],  # best 1.25 (not < 1.25: strict)
        ]
    )
    s = score_matrix(d)
    assert s.cov_r_at(0.5) == pytest.approx(1 / 3)
    assert s.cov_r_at(1.0) == pytest.approx(2 / 3)
    assert s.cov_r_at(1.25) == pytest.approx(2 / 3)  # strict inequality
    assert s.amr_r == pytest.approx((0.40 + 0.80 + 1.25) / 3)
    # precision: column minima 0.40, 0.80, 1.25, 0.90
    assert s.cov_p_at(0.5) == pytest.approx(1 / 4)
    assert s.cov_p_at(1.0) == pytest.approx(3 / 4)
    assert s.amr_p == pytest.approx((0.40 + 0.80 + 1.25 + 0.90) / 4)
    assert s.cov_r[0] == 0.0 and s.cov_r[-1] == 1.0
    assert np.all(np.diff(s.cov_r) >= 0) and np.all(np.diff(s.cov_p) >= 0)
    assert (s.num_ref, s.num_gen) == (3, 4)


def test_recall_and_precision_swap_under_transpose() -> None:
    d = np.random.default_rng(0).uniform(0, 3, size=(5, 9))
    a, b = score_matrix(d), score_matrix(d.T)
    np.testing.assert_allclose(a.cov_r, b.cov_p)
    assert a.amr_r == pytest.approx(b.amr_p)


def test_failures_count_as_zero_coverage_and_are_left_out_of_amr() -> None:
    good = score_matrix(np.array([[0.2, 0.6], [0.7, 1.4]]))  # COV-R(1.0) = 1, AMR-R 0.45
    empty = score_matrix(np.zeros((3, 0)))
    assert empty.failed and math.isnan(empty.amr_r)
    assert not empty.cov_r.any() and not empty.cov_p.any() and failed_score(3).num_gen == 0
    summary = summarize([good, empty])
    assert summary.num_failed == 1 and summary.num_molecules == 2
    assert summary.at("cov_r_mean", 1.0) == pytest.approx(0.5)  # (1 + 0) / 2
    assert summary.at("cov_r_median", 1.0) == pytest.approx(0.5)
    assert summary.amr_r_mean == pytest.approx(0.45)  # over the one molecule with output


def test_mean_and_median_over_molecules() -> None:
    scores = [score_matrix(np.array([[x]])) for x in (0.3, 0.9, 1.1, 2.0, 0.1)]
    s = summarize(scores)
    assert s.at("cov_r_mean", 1.0) == pytest.approx(3 / 5)
    assert s.at("cov_r_median", 1.0) == 1.0
    assert s.amr_r_mean == pytest.approx(np.mean([0.3, 0.9, 1.1, 2.0, 0.1]))
    assert s.amr_r_median == pytest.approx(0.9)


def test_recall_by_group_known_answer() -> None:
    d = np.array([[0.5, 2.0], [1.5, 1.2], [0.9, 3.0], [2.0, 2.0]])  # covered at 1 Å: refs 0 and 2
    assert recall_by_group(d, np.array([0, 0, 1, 1]), 3) == pytest.approx([0.5, 0.5, math.nan], nan_ok=True)
    assert recall_by_group(d, np.array([2, 1, 2, 0]), 3, threshold=1.3) == [0.0, 1.0, 1.0]
    assert recall_by_group(np.zeros((2, 0)), np.array([0, 1]), 2) == [0.0, 0.0]
    with pytest.raises(ValueError, match="groups"):
        recall_by_group(d, np.array([0, 1]), 2)


def test_bad_matrices_are_rejected() -> None:
    with pytest.raises(ValueError, match="L >= 1"):
        score_matrix(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="finite"):
        score_matrix(np.array([[np.nan]]))
    with pytest.raises(ValueError, match="no molecules"):
        summarize([])


def test_method_registry() -> None:
    settings = MethodSettings()
    methods = build_methods(["rdkit", "rdkit+mmff", "rdkit+relax"], settings)
    assert [m.name for m in methods] == ["rdkit", "rdkit+mmff", "rdkit+relax"]
    assert methods[0].generator == methods[2].generator  # shared conformers within a run
    (both,) = build_methods(["rdkit+mmff+relax"], settings)
    assert both.generator == methods[0].generator
    assert both.refiner is not None and both.refiner.name == "mmff94+relax[xtb]"
    product, relaxed = build_methods(["torsional+mmff", "torsional+mmff+relax"], settings)
    assert relaxed.generator == product.generator  # the capped xTB rows relax the product's own conformers
    assert relaxed.refiner is not None and relaxed.refiner.name == "mmff94+relax[xtb]"
    with pytest.raises(ValueError, match="unknown method"):
        build_methods(["omega"], settings)
    with pytest.raises(ValueError, match="already registered"):
        register_method("rdkit", METHODS["rdkit"])


def test_etkdg_generator_is_seeded_and_refuses_seed_zero() -> None:
    mol = mol_from_smiles("CCCCC(=O)OCC")
    gen = EtkdgGenerator()
    a, b = gen.generate(mol, 4, seed=3), gen.generate(mol, 4, seed=3)
    assert a.GetNumConformers() == 4
    np.testing.assert_array_equal(a.GetConformer(2).GetPositions(), b.GetConformer(2).GetPositions())
    assert not np.allclose(a.GetConformer(0).GetPositions(), a.GetConformer(1).GetPositions())
    with pytest.raises(ValueError, match="randomSeed 0"):
        gen.generate(mol, 2, seed=0)


@pytest.mark.slow
@pytest.mark.skipif(not (DATA / "drugs").is_dir(), reason="shared data not available")
def test_benchmark_harness_end_to_end(tmp_path: Path) -> None:
    """Two tiny molecules, RDKit and RDKit + MMFF: every output is written and self-consistent."""
    from benchmarks.conformers import BenchConfig, run
    from benchmarks.report import summaries, write_report

    config = BenchConfig(
        datasets=("drugs_dev",), methods=("rdkit", "rdkit+mmff"), num_molecules=2, max_refs=3, tag="test"
    )
    results = run(config, DATA)
    paths = write_report(results, tmp_path, "test", "adjoint-sampling bench conformers --test")
    assert {p.name for p in paths} == {"conformers_test.md", "conformers_test.json", "conformers_test_drugs_dev.png"}
    md = (tmp_path / "conformers_test.md").read_text()
    assert "Reproduce: `adjoint-sampling bench conformers --test`" in md and "(published)" in md
    data = json.loads((tmp_path / "conformers_test.json").read_text())
    (ds,) = data["datasets"]
    assert len(ds["molecules"]) == 2
    for mol in ds["molecules"]:
        for rec in mol["methods"].values():
            assert rec["requested"] == 2 * mol["num_refs"]
            assert rec["scored"] == rec["requested"] and not rec["failed"]
            assert rec["seconds"] > 0 and rec["conformers_per_s"] > 0
            assert 0 <= rec["cov_r"][8] <= 1 and rec["amr_r"] >= 0
            # recall by compactness third: the thirds' recalls average (weighted by size) to the whole
            sizes = np.bincount((3 * np.arange(mol["num_refs"])) // mol["num_refs"], minlength=3)
            by_rg = np.nan_to_num(rec["cov_r_by_rg"])
            assert np.isclose((sizes * by_rg).sum() / sizes.sum(), rec["cov_r"][8])
            assert mol["reference_rg"][0] <= mol["reference_rg"][2] and rec["rg"][0] > 1.0
    assert "Recall by compactness" in md and "| rdkit+mmff |" in md
    assert ds["rmsd_engine"]["max_abs_diff"] < 1e-3  # the engine agrees with GetBestRMS on sampled pairs
    s = summaries(data)["drugs_dev"]["rdkit"]
    assert s.num_molecules == 2 and s.num_failed == 0


def test_mmff_refiner_drops_molecules_without_parameters_with_a_reason() -> None:
    from benchmarks.methods import RdkitMmffOptimizer

    gen = EtkdgGenerator()
    xe = RdkitMmffOptimizer().refine(gen.generate(mol_from_smiles("[Xe](F)F"), 3, seed=1))
    assert xe.mol.GetNumConformers() == 0 and xe.reasons == ("no MMFF94 parameters",) * 3
    ok = RdkitMmffOptimizer(max_iters=2000).refine(gen.generate(mol_from_smiles("CCCC(=O)O"), 3, seed=1))
    assert ok.mol.GetNumConformers() == 3 and ok.not_converged == 0 and not ok.reasons


def test_energy_relaxation_lowers_the_energy_through_the_registry() -> None:
    """The ``+relax`` refiner: relax(build_energy_model(name), conformer_structures(mol), RelaxConfig)."""
    from rdkit.Chem import rdForceFieldHelpers

    from benchmarks.methods import relaxation

    mol = EtkdgGenerator().generate(mol_from_smiles("CCOC(=O)C"), 3, seed=2)
    refiner = relaxation(MethodSettings(relax_model="mmff", relax_fmax=0.01))
    try:
        out = refiner.refine(mol)
    finally:
        refiner.close()
    assert out.mol.GetNumConformers() == 3 and not out.reasons and out.steps > 0

    def energy(m: object, cid: int) -> float:
        props = rdForceFieldHelpers.MMFFGetMoleculeProperties(m)
        return rdForceFieldHelpers.MMFFGetMoleculeForceField(m, props, confId=cid).CalcEnergy()

    for cid in range(3):
        assert energy(out.mol, cid) < energy(mol, cid) - 0.1  # kcal/mol
