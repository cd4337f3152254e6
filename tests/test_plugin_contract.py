"""The plugin contract is checked where a plugin is loaded and where its processor is fitted (issue #32): a
``fit()`` that returns None is named at once, not met deep in the build code."""

from __future__ import annotations

import pytest

from pipelines.build import fit_processor
from zoo import ExampleSet, Modality
from zoo.registry import _check_contract


def test_a_fit_that_returns_none_is_named_with_the_contract(toy_plugin):
    import zoo
    mod = zoo.get_modality("toyseq")

    class Forgetful(mod.processor):
        def fit(self, examples):                # returns None: the mistake a plugin author makes
            super().fit(examples)

    data = ExampleSet(_toy_examples(), None)
    with pytest.raises(TypeError, match=r"Forgetful\.fit\(\) returned NoneType.*return self"):
        fit_processor(Forgetful(), data, seed=0, skip_bad=False)
    assert fit_processor(mod.processor(), data, seed=0, skip_bad=False) is not None


def _toy_examples():
    import numpy as np
    rng = np.random.default_rng(0)
    return [rng.standard_normal((int(rng.integers(4, 9)), 4)).astype("float32") for _ in range(6)]


def test_a_processor_declared_to_return_none_is_refused_when_the_plugin_loads(toy_plugin):
    import zoo
    mod = zoo.get_modality("toyseq")

    class Declared(mod.processor):
        def fit(self, examples) -> None:
            super().fit(examples)

    bad = Modality(name="toyseq", description="", processor=Declared, architectures=dict(mod.architectures),
                   load_data=mod.load_data)
    with pytest.raises(TypeError, match="declared to return None"):
        _check_contract(bad, "zoo_toyseq:MODALITY")
    _check_contract(mod, "zoo_toyseq:MODALITY")
