"""Metadata a person reads: significant digits, one name per denominator, a summary table."""

from __future__ import annotations

import pytest

from geocluster_dagster.defs.readable import as_metadata
from geocluster_dagster.products.described import DENOMINATORS, Measure, rounded, share


@pytest.mark.parametrize(
    ("value", "digits", "shown"),
    [
        (0.4517671071897937, 3, 0.452),
        (211155.2336430954, 3, 211155),
        (0.000123456, 3, 0.000123),
        (98851, 3, 98851),
        (0.0, 3, 0.0),
        (-0.0371982, 2, -0.037),
    ],
)
def test_floats_keep_their_significant_digits(value, digits, shown):
    result = Measure("x", value, digits=digits).shown()
    assert result == shown and type(result) is type(shown)


def test_a_share_names_its_denominator_and_the_counts():
    measure = share("clear", 812, 1000, "aoi", "clear pixels")
    assert measure.key == "clear_share_of_aoi" and measure.value == 0.812
    assert DENOMINATORS["aoi"] in measure.meaning and "(812 of 1,000)" in measure.meaning
    with pytest.raises(KeyError):
        share("clear", 1, 2, "bbox", "a denominator nobody defined")


def test_the_summary_table_holds_every_measure_and_only_trends_become_numbers():
    metadata = as_metadata(
        [
            Measure("silhouette", 0.45176, "", "higher is better"),
            Measure("n_silhouette", 10_000, "px", "pixels behind it", trend=False),
            Measure("missing", None),
        ]
    )
    assert metadata["silhouette"] == 0.452 and "n_silhouette" not in metadata
    table = metadata["summary"].value.splitlines()
    assert table[2] == "| `silhouette` | 0.452 |  | higher is better |"
    assert table[3] == "| `n_silhouette` | 10,000 | px | pixels behind it |"
    assert len(table) == 4  # no row for a value that was not measured


def test_nested_statistics_are_rounded():
    assert rounded({"red": {"mean": 0.0432637119, "count": 5}, "q": [1.23456, "a"]}) == {
        "red": {"mean": 0.04326, "count": 5},
        "q": [1.235, "a"],
    }
