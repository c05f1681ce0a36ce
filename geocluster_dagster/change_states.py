"""The values of a change map's ``change`` band, their names and colours: one definition for the
map's colour table (:mod:`geocluster_dagster.change`) and its figure
(:mod:`geocluster_dagster.plot_change`)."""

from __future__ import annotations

#: 0 unknown (no data on one date or both), 1 unchanged (same cluster), 2 changed (another
#: land cover), 3 another cluster of the same cover.
UNKNOWN, UNCHANGED, CHANGED, WITHIN_COVER = 0, 1, 2, 3

STATE_NAMES = {
    UNCHANGED: "unchanged",
    CHANGED: "changed",
    WITHIN_COVER: "same cover, other cluster",
}
#: RGBA 0..255; unknown stays transparent, like nodata.
STATE_COLOURS = {
    UNKNOWN: (0, 0, 0, 0),
    UNCHANGED: (220, 220, 220, 255),
    CHANGED: (214, 39, 40, 255),
    WITHIN_COVER: (160, 160, 160, 255),
}


def state_rgba(state: int) -> tuple[float, float, float, float]:
    """The state's colour as matplotlib takes it (0..1)."""
    red, green, blue, alpha = (channel / 255 for channel in STATE_COLOURS[state])
    return red, green, blue, alpha
