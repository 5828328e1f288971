"""The types a model may hold are fixed in our code: every model family of `ml.training`, fitted on real features of
both shipped datasets, needs no type beyond `SKOPS_TRUSTED_TYPES` (a model that would need one is refused when
logged: tests/resources/test_model_logging.py), and the same list is all `load_verified` trusts."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pandas as pd
import pytest
import skops.io
from conftest import AIR_CSV, AIR_SPEC, BIKE_CSV, BIKE_SPEC

from kernel.paths import PROJECT_ROOT
from kernel.spec import CandidateSpec, PipelineSpec, load_spec
from ml import features, ingest, training
from resources.tracking import SKOPS_TRUSTED_TYPES


def fitted_models(spec_path: Any, csv: Any, last: date) -> dict[str, Any]:
    """Each model family fitted on the real features of the 14 days up to `last`."""
    spec: PipelineSpec = load_spec(spec_path)
    raw = ingest.normalise(ingest.read_source_file(str(csv), spec, PROJECT_ROOT), spec, str(csv)).frame
    days = [last - timedelta(days=k) for k in range(13, -1, -1)]
    frame = pd.concat([features.build_features(raw, day, spec).frame for day in days], ignore_index=True)
    frame = frame.dropna(subset=[spec.target])
    models = {}
    for family in ("hist_gradient_boosting", "random_forest", "ridge"):
        estimator = training.make_estimator(CandidateSpec(family=family), spec)
        estimator.fit(frame[features.feature_columns(spec)], frame[spec.target])
        models[family] = estimator
    return models


@pytest.mark.parametrize(
    ("spec_path", "csv", "last"), [(BIKE_SPEC, BIKE_CSV, date(2012, 6, 30)), (AIR_SPEC, AIR_CSV, date(2014, 6, 30))]
)
def test_every_family_fitted_on_real_features_needs_only_the_fixed_trusted_types(
    spec_path: Any, csv: Any, last: date
) -> None:
    for family, model in fitted_models(spec_path, csv, last).items():
        needed = set(skops.io.get_untrusted_types(data=skops.io.dumps(model)))
        assert needed <= set(SKOPS_TRUSTED_TYPES), (family, needed - set(SKOPS_TRUSTED_TYPES))
        loaded = skops.io.loads(skops.io.dumps(model), trusted=list(SKOPS_TRUSTED_TYPES))
        assert type(loaded) is type(model)
