"""What the diagnostics say about the k a map was made with."""

from __future__ import annotations

from geocluster_dagster.diagnostics import k_advice


def test_a_k_away_from_the_knee_is_pointed_out_with_what_to_try():
    advice = k_advice(6, 4, 4)
    assert advice.startswith("k=6 was used") and "try n_clusters: 4, or n_clusters: auto" in advice


def test_a_k_at_the_knee_and_a_curve_without_one():
    assert k_advice(4, 4, 3).startswith("k=4 is at the elbow's knee")
    assert "no knee" in k_advice(5, None, 2) and "k=2" in k_advice(5, None, 2)
