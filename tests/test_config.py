"""The launchpad's run config and the plain settings dataclasses are one source of truth."""

from __future__ import annotations

import dataclasses
import enum
import typing

import dagster as dg
import pytest

from geocluster_dagster.change import ChangeSettings
from geocluster_dagster.definitions import defs
from geocluster_dagster.defs.config import SETTINGS_OF, SHOWN_FOR_NONE, MaskFlagChoice, to_settings
from geocluster_dagster.load import LoadSettings
from geocluster_dagster.mask import MASKABLE_FLAGS

#: Settings the plain modules take that a run has no business changing.
NOT_IN_RUN_CONFIG = {"preflight"}  # LoadSettings: a stored recipe reopens without it

#: Fields whose type Dagster config cannot express (a union of an int and a choice): the
#: launchpad shows them untyped, and the settings dataclass checks them when the run starts.
UNTYPED_IN_RUN_CONFIG = {"n_clusters"}

CASES = [
    (config_class, field)
    for config_class, settings_classes in SETTINGS_OF.items()
    for settings_class in settings_classes
    for field in dataclasses.fields(settings_class)
    if field.name not in NOT_IN_RUN_CONFIG
]


def _plain(value: object) -> object:
    if isinstance(value, list | tuple):
        return tuple(_plain(v) for v in value)
    return value.value if isinstance(value, enum.Enum) else value


def _choices(annotation: object) -> set[str] | None:
    """The values a Literal (or Enum, or a list/tuple/Optional of one) allows."""
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return {member.value for member in annotation}
    if typing.get_origin(annotation) is typing.Literal:
        return set(typing.get_args(annotation))
    for arg in typing.get_args(annotation):
        if arg is not Ellipsis and (found := _choices(arg)) is not None:
            return found
    return None


def test_every_config_class_has_exactly_the_fields_of_its_settings():
    for config_class, settings_classes in SETTINGS_OF.items():
        expected = {
            f.name
            for settings_class in settings_classes
            for f in dataclasses.fields(settings_class)
            if f.name not in NOT_IN_RUN_CONFIG
        }
        assert set(config_class.model_fields) == expected, config_class.__name__


@pytest.mark.parametrize(("config_class", "field"), CASES, ids=lambda c: getattr(c, "name", ""))
def test_config_defaults_descriptions_and_choices_come_from_the_settings(config_class, field):
    config_field = config_class.model_fields[field.name]
    if field.default is None:
        # Shown as the value that stands for None, which the description explains.
        assert config_field.description.startswith(field.metadata["description"] + " (")
        assert getattr(config_class(), field.name) == SHOWN_FOR_NONE[field.name][0]
    else:
        assert config_field.description == field.metadata["description"]
        assert _plain(getattr(config_class(), field.name)) == _plain(field.default)
    settings_class = next(s for s in SETTINGS_OF[config_class] if field in dataclasses.fields(s))
    hints = typing.get_type_hints(settings_class)
    if field.name in UNTYPED_IN_RUN_CONFIG:
        assert config_field.annotation is typing.Any
        assert all(
            f"'{choice}'" in config_field.description for choice in _choices(hints[field.name])
        )
    else:
        assert _choices(config_field.annotation) == _choices(hints[field.name])


def test_default_config_gives_the_default_settings():
    for config_class, settings_classes in SETTINGS_OF.items():
        for settings_class in settings_classes:
            assert to_settings(settings_class, config_class()) == settings_class()


def test_the_mask_flag_choices_are_the_maskable_flags():
    assert tuple(member.value for member in MaskFlagChoice) == MASKABLE_FLAGS


@pytest.mark.parametrize(
    ("asset", "config", "allowed"),
    [
        ("mosaic", {"method": "medain"}, "median"),
        ("clusters", {"algorithm": "k-means"}, "minibatch_kmeans"),
        ("band_stack", {"mask_flags": ["clouds"]}, "cloud_shadow"),
        ("geotiff", {"compress": "jpeg"}, "deflate"),
    ],
)
def test_a_mistyped_choice_is_refused_before_the_run_starts(asset, config, allowed):
    job = defs.resolve_job_def("geocluster_pipeline")
    with pytest.raises(dg.DagsterInvalidConfigError) as refused:
        dg.validate_run_config(job, {"ops": {asset: {"config": config}}})
    value = next(iter(config.values()))
    assert repr(value[0] if isinstance(value, list) else value).strip("'") in str(refused.value)
    # the launchpad offers the allowed values: the field's schema is an enum of them
    ops = job.run_config_schema.config_type.fields["ops"].config_type
    fields = ops.fields[asset].config_type.fields["config"].config_type.fields
    assert allowed in _enum_values(fields[next(iter(config))].config_type)


def _enum_values(config_type) -> set[str]:
    """The values of the enum a config type is, or holds (in a list, or optional)."""
    if getattr(config_type, "enum_values", None):
        return {value.config_value for value in config_type.enum_values}
    inner = getattr(config_type, "inner_type", None)
    return _enum_values(inner) if inner is not None else set()


def test_a_valid_choice_passes_validation():
    job = defs.resolve_job_def("geocluster_pipeline")
    dg.validate_run_config(job, {"ops": {"mosaic": {"config": {"method": "first_clear"}}}})


@pytest.mark.parametrize("job_name", ["geocluster_pipeline", "geocluster_reference"])
def test_the_launchpad_scaffolds_every_field_with_its_default(job_name):
    """The launchpad opens with the YAML Dagster derives from the job's config schema. Dagster
    drops a null default from it, so a setting whose plain default is None is shown as the
    value that stands for it (crs: native, pca_components: 0, ...), and that value reaches the
    asset as the plain default: every field appears, and the scaffold changes nothing."""
    import yaml
    from dagster._core.snap import JobSnap
    from dagster._core.snap.snap_to_yaml import default_values_yaml_from_type_snap

    from geocluster_dagster.defs.config import CONFIG_OF

    snap = JobSnap.from_job_def(defs.resolve_job_def(job_name))
    schema = snap.config_schema_snapshot
    root = schema.get_config_snap(snap.mode_def_snaps[0].root_config_key)
    scaffold = yaml.safe_load(default_values_yaml_from_type_snap(schema, root))["ops"]
    assert scaffold
    for asset, values in scaffold.items():
        config_class = CONFIG_OF[asset]
        for name, field in config_class.model_fields.items():
            assert field.default is not None, f"{asset}.{name} has a null default"
            assert name in values["config"], f"{asset}.{name} is missing from the launchpad"
            assert _plain(values["config"][name]) == _plain(field.default), (asset, name)
        scaffolded = config_class(**values["config"])
        for settings_class in SETTINGS_OF[config_class]:
            assert to_settings(settings_class, scaffolded) == settings_class(), (
                asset,
                settings_class,
            )


def test_a_null_typed_in_still_means_the_plain_default():
    from geocluster_dagster.defs.config import BandStackConfig, ChangeConfig

    assert to_settings(LoadSettings, BandStackConfig(crs=None, resolution=None)) == LoadSettings()
    assert to_settings(ChangeSettings, ChangeConfig(compare_with=None)) == ChangeSettings()
    # ... and any other value is the user's: 30 m, an EPSG code, a date.
    chosen = to_settings(LoadSettings, BandStackConfig(crs="EPSG:32633", resolution=30.0))
    assert (chosen.crs, chosen.resolution) == ("EPSG:32633", 30.0)


def test_the_configuration_reference_gives_every_field_with_its_default():
    """docs/configuration.md's run config YAML is a copy a user reads: every field of every
    step, each with the default the config classes have."""
    import re
    from pathlib import Path

    import yaml

    from geocluster_dagster.defs import config as configs

    doc = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text()
    block = re.search(r"```yaml\n(ops:\n.*?)```", doc, re.S)
    assert block is not None
    # cluster_model takes the fit settings of clusters: the reference says so rather than
    # repeating them, and they are checked against clusters' below.
    text = block.group(1).replace("...the fit settings of clusters...,", "")
    documented = {op: entry["config"] for op, entry in yaml.safe_load(text)["ops"].items()}
    classes = {
        "stac_items": configs.SearchConfig,
        "band_stack": configs.BandStackConfig,
        "mosaic": configs.MosaicConfig,
        "geotiff": configs.GeoTiffConfig,
        "clusters": configs.ClusterConfig,
        "cluster_model": configs.ReferenceModelConfig,
        "diagnostics": configs.DiagnosticsConfig,
        "cluster_change": configs.ChangeConfig,
        "accuracy": configs.AccuracyConfig,
    }
    assert set(documented) == set(classes)
    for op, config_class in classes.items():
        fields = config_class.model_fields
        for name, value in documented[op].items():
            assert name in fields, f"docs: ops.{op}.config.{name} is not a setting"
            default = fields[name].default
            default = default.value if isinstance(default, enum.Enum) else default
            if isinstance(default, list | tuple):
                default = [d.value if isinstance(d, enum.Enum) else d for d in default]
            assert value == default, f"docs: ops.{op}.config.{name}: {value!r}, not {default!r}"
        left_out = set(fields) - set(documented[op])
        if op == "cluster_model":
            clusters = classes["clusters"].model_fields
            assert all(fields[n].default == clusters[n].default for n in left_out)
            left_out -= set(clusters)
        assert not left_out, f"docs: ops.{op}.config lacks {sorted(left_out)}"
