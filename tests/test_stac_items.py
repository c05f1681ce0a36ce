"""The partition's search results as figures and titles read them."""

from __future__ import annotations


def test_the_acquisition_days_a_figure_title_names():
    from datetime import datetime, timezone

    import pystac

    from geocluster_dagster.products.stac_items import acquisition_days, scenes_label

    def item(day: int, hour: int) -> pystac.Item:
        when = datetime(2023, 6, day, hour, tzinfo=timezone.utc)
        return pystac.Item(f"i{day}{hour}", None, None, when, {})

    days = acquisition_days([item(18, 16), item(10, 15), item(10, 16)])
    assert days == ["2023-06-10", "2023-06-18"]  # each day once, in order
    assert scenes_label(days) == "scenes of 2023-06-10, 2023-06-18"
    many = [f"2023-06-{d:02d}" for d in range(2, 30, 5)]
    assert scenes_label(many) == "scenes of 6 days, 2023-06-02 to 2023-06-27"
    assert scenes_label([]) == "no scene"
