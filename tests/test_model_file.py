"""Model files hold plain numbers: they round-trip exactly, and anything else is refused unrun."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from geocluster_dagster.cluster import ClusterSettings, fit_clusterer
from geocluster_dagster.errors import AssetReadError
from geocluster_dagster.model_file import load_model, save_model

FEATURES = ("blue", "green", "red", "nir")


@pytest.fixture(scope="module")
def samples():
    rng = np.random.default_rng(0)
    centres = rng.uniform(0.02, 0.5, size=(4, len(FEATURES)))
    return np.concatenate([c + rng.normal(0, 0.01, (500, len(FEATURES))) for c in centres]).astype(
        np.float32
    )


@pytest.mark.parametrize(
    ("algorithm", "pca_components"),
    [
        ("minibatch_kmeans", None),
        ("kmeans", 2),
        ("bisecting_kmeans", None),
        ("gaussian_mixture", 3),
    ],
)
def test_a_saved_model_predicts_exactly_what_the_fitted_one_does(
    tmp_path, samples, algorithm, pca_components
):
    settings = ClusterSettings(n_clusters=4, algorithm=algorithm, pca_components=pca_components)
    model = fit_clusterer(samples, FEATURES, settings)
    path = save_model(model, tmp_path / "model.json")
    loaded = load_model(path)
    assert loaded.features == FEATURES and loaded.settings == settings
    np.testing.assert_array_equal(loaded.predict(samples), model.predict(samples))
    np.testing.assert_allclose(loaded.centers(), model.centers(), rtol=0, atol=1e-12)
    assert loaded.inertia(samples) == pytest.approx(model.inertia(samples), rel=1e-12)
    document = json.loads(path.read_text())  # plain JSON anyone can read
    assert document["features"] == list(FEATURES) and len(document["centers"]) == 4
    assert [p.name for p in tmp_path.iterdir()] == ["model.json"]  # no temporary left


class _Payload:
    """What a malicious pickle does: run code when it is loaded."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_pickle_is_refused_and_nothing_in_it_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.json"
    path.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(AssetReadError, match="never read from pickles"):
        load_model(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda d: d.update(format_version=99), "format version 99"),
        (lambda d: d.update(format="sklearn-pickle"), "does not say format"),
        (lambda d: d["features"].pop(), r"scaler.mean has shape \(4,\), expected \(3,\)"),
        (lambda d: d["centers"][0].__setitem__(0, float("nan")), "NaN or infinite"),
        (lambda d: d["scaler"]["scale"].__setitem__(1, 0.0), "scaler.scale"),
        (lambda d: d["settings"].update(n_clusters=5), r"centers has shape \(4, 4\)"),
        (lambda d: d["settings"].update(__class__="os.system"), "not ClusterSettings"),
    ],
)
def test_a_tampered_model_is_refused_saying_what_is_wrong(tmp_path, samples, tamper, message):
    path = save_model(
        fit_clusterer(samples, FEATURES, ClusterSettings(n_clusters=4)), tmp_path / "model.json"
    )
    document = json.loads(path.read_text())
    tamper(document)
    path.write_text(json.dumps(document))
    with pytest.raises(AssetReadError, match=message):
        load_model(path)


def test_a_model_edited_by_hand_is_refused_though_well_formed(tmp_path, samples):
    """One centre moved by 5 standard deviations still parses; its digest no longer matches."""
    model = fit_clusterer(samples, FEATURES, ClusterSettings(n_clusters=4))
    path = save_model(model, tmp_path / "model.json")
    document = json.loads(path.read_text())
    assert len(document["digest"]) == 64
    document["centers"][0][0] += 5.0  # centres are in standard deviations of the features
    path.write_text(json.dumps(document))
    with pytest.raises(
        AssetReadError, match=r"was changed after geocluster_dagster wrote it.*materialize clusters"
    ):
        load_model(path)
    # A file of the format before digests (version 1) cannot be checked: refused, saying why.
    document = json.loads(save_model(model, tmp_path / "v1.json").read_text())
    del document["digest"]
    document["format_version"] = 1
    (tmp_path / "v1.json").write_text(json.dumps(document))
    with pytest.raises(
        AssetReadError, match="format version 1.*reads version 2.*Materialize clusters again"
    ):
        load_model(tmp_path / "v1.json")
    # The same parameters with the digest: read back as they were.
    np.testing.assert_array_equal(
        load_model(save_model(model, tmp_path / "ok.json")).centers(), model.centers()
    )
