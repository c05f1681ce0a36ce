"""Declarative automation: what Dagster remakes by itself when what a product was made from
changes, evaluated by one automation sensor (off until you turn it on).

What triggers what (docs/automation.md):

* the ``new_imagery_sensor`` decides which partitions got new scenes and runs their whole graph;
* then this sensor, from the lineage: a date's remade map changes the data version of its
  ``clusters`` (and ``geotiff``), so the ``cluster_change`` of every later date that compares
  with it (within the look-back) and was made before is remade, and its ``stac_item`` (the Item
  and report that publish the change) after it. Partitions never materialized are left alone
  (a backfill makes them), and so is a change whose inputs are still being made.

A refitted reference model marks the maps made with it as stale (their data version no longer
matches), but nothing remakes them by itself: remaking every date of an AOI is a user's call
(materialize them, or backfill the AOI's partitions).
"""

from __future__ import annotations

import dagster as dg

#: A materialized partition whose inputs changed since it was made: any dependency partition
#: it reads (an earlier date's map, this date's geotiff) got a new data version from a run
#: that did not also remake this partition, or is being requested on this tick.
REMADE_INPUTS = (
    dg.AutomationCondition.any_deps_match(
        (
            dg.AutomationCondition.data_version_changed()
            & ~dg.AutomationCondition.executed_with_root_target()
        ).with_label("changed by another run")
        | dg.AutomationCondition.will_be_requested()
    ).since_last_handled()
    & ~dg.AutomationCondition.missing()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("remake when an input changed")

#: The one sensor that evaluates the conditions (stopped by default: turn it on in the UI under
#: Automation, or `dagster sensor start geocluster_automation`).
automation_sensor = dg.AutomationConditionSensorDefinition(
    "geocluster_automation",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.STOPPED,
    minimum_interval_seconds=60,
    description="Remakes the cluster_change (and the STAC Item that publishes it) of later "
    "dates when a map they compare with is remade. Off by default.",
)
