"""The SD tag that says what was done to a molecule's draws (molecules.tags.pipeline_label)."""

from __future__ import annotations

import pytest

from molecules.tags import TAG_PIPELINE, conformer_tags, pipeline_label


@pytest.mark.parametrize(
    ("selected", "mmff_relaxed", "repaired", "relaxed_with", "label"),
    [
        (True, 8, 0, None, "relaxed selection (MMFF94)"),
        (True, 0, 0, None, "raw draws"),  # selection asked for but skipped (MMFF94 could not type the molecule)
        (False, 8, 0, None, "MMFF94-relaxed draws"),
        (False, 0, 8, None, "MMFF94-repaired draws"),
        (False, 0, 0, None, "raw draws"),
        (True, 8, 0, "xtb", "relaxed selection (MMFF94), relaxed with xtb"),
    ],
)
def test_pipeline_label(selected: bool, mmff_relaxed: int, repaired: int, relaxed_with: str | None, label: str) -> None:
    assert (
        pipeline_label(selected=selected, mmff_relaxed=mmff_relaxed, repaired=repaired, relaxed_with=relaxed_with)
        == label
    )


def test_pipeline_tag_is_written_only_when_given() -> None:
    assert all(t[TAG_PIPELINE] == "raw draws" for t in conformer_tags(3, pipeline="raw draws"))
    assert all(TAG_PIPELINE not in t for t in conformer_tags(3))
