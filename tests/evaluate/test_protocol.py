from __future__ import annotations

import inspect

import numpy as np
import pytest

from petclf.evaluate import InterpretationLike, Interpretation, MultiLabelInterpretation

PROBS = np.array([[0.7, 0.3], [0.2, 0.8], [0.6, 0.4]])


@pytest.mark.parametrize("interp", [
    Interpretation.from_arrays(PROBS, [0, 1, 1], classes=["cat", "dog"], items=["a", "b", "c"]),
    MultiLabelInterpretation.from_arrays(PROBS, [[1, 0], [0, 1], [1, 1]], classes=["cat", "dog"],
                                         items=["a", "b", "c"]),
], ids=["single", "multi"])
def test_both_interpretations_offer_what_the_protocol_says(interp):
    """Code written against InterpretationLike works with either task: same members, same call shapes."""
    assert isinstance(interp, InterpretationLike)
    for name in ("metrics", "top_losses", "plot_top_losses", "from_arrays"):
        wanted = inspect.signature(getattr(InterpretationLike, name)).parameters
        have = inspect.signature(getattr(type(interp), name)).parameters
        assert [p for p in wanted if p not in have] == [], name
    assert interp.preds.shape[0] == interp.losses.shape[0] == len(interp.items) == 3
    metrics = interp.metrics()
    assert (metrics["split"], metrics["task"], metrics["n"]) == ("valid", interp.task, 3)
    assert list(interp.top_losses(2).index) == [0, 1]


def test_something_else_is_not_an_interpretation():
    assert not isinstance(object(), InterpretationLike)
