"""Known answers for the Flower binding's digests and metric encoding (SPEC 13.9), and a property test: the ring
sum of any nodes' metric groups decodes to each group's weighted means (2^-20 fixed point)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("flwr")

from flwr.app import Array, ArrayRecord, ConfigRecord

from secagg.errors import ConfigurationError
from secagg.flower import records as rec_

pytestmark = pytest.mark.property("P16")

ARRAYS = ArrayRecord({"w": Array(np.arange(6, dtype=np.float32).reshape(2, 3))})
CONFIG = ConfigRecord({"lr": 0.1, "batch-size": 32, "server-round": 2, "tag": "x"})
EVALUATE = ConfigRecord({"server-round": 1})


def test_records_and_metrics_digests_known_answers() -> None:
    plain = rec_.records_digest(ARRAYS, CONFIG)
    folded = rec_.records_digest(ARRAYS, CONFIG, EVALUATE)
    assert plain.hex() == "915a06ee6258032a505f8e2fc987f5c034c2d21ef07e1258df058d6f93d0ea10"
    assert folded.hex() == "ea5fd5bcbab9bae4eba032b9318c7c71c0867b6cbbbcec60353729b9530f97cf"
    assert rec_.metrics_digest(folded, ["train", "evaluate"]).hex() == (
        "f669b6f72ae32e2f14cd5b37073f36a22851be7b8b396c1b3b77a9c47d55d5d3"
    )
    # the evaluate config, its values and the group list are all bound
    assert rec_.records_digest(ARRAYS, CONFIG, ConfigRecord({"server-round": 2})) != folded
    assert rec_.records_digest(ARRAYS, CONFIG, ConfigRecord()) != plain
    assert rec_.metrics_digest(folded, ["train"]) != rec_.metrics_digest(folded, ["train", "evaluate"])


def test_metric_groups_known_answer_and_capacity() -> None:
    vec = rec_.encode_metric_groups([([0.5, -1.25], 10), ([0.75], 3)], 8)
    assert vec.tolist() == [10 << 20, 5 << 20, 2**64 - (25 << 19), 3 << 20, 2359296, 0, 0, 0]
    assert rec_.slots_needed({"train": ["a", "b"], "evaluate": ["c"]}) == 5
    with pytest.raises(ConfigurationError, match="slots"):
        rec_.encode_metric_groups([([0.5, -1.25], 10), ([0.75], 3)], 4)


_value = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(
    n_train=st.integers(0, 4),
    n_eval=st.integers(0, 4),
    nodes=st.lists(st.tuples(st.integers(1, 5000), st.integers(1, 5000), st.data()), min_size=3, max_size=8),
)
def test_summed_metric_groups_decode_to_the_weighted_means(n_train: int, n_eval: int, nodes: list) -> None:
    names = {"train": [f"t{i}" for i in range(n_train)], "evaluate": [f"e{i}" for i in range(n_eval)]}
    slots = rec_.slots_needed(names) + 3
    total = np.zeros(slots, dtype=np.uint64)
    rows = []
    for w_train, w_eval, data in nodes:
        t = data.draw(st.lists(_value, min_size=n_train, max_size=n_train))
        e = data.draw(st.lists(_value, min_size=n_eval, max_size=n_eval))
        rows.append((w_train, t, w_eval, e))
        total += rec_.encode_metric_groups([(t, w_train), (e, w_eval)], slots)  # wraps mod 2^64, as the ring does
    got = rec_.decode_metric_groups(total, names)
    for group, wi, vi in (("train", 0, 1), ("evaluate", 2, 3)):
        weight = sum(r[wi] for r in rows)
        for j, key in enumerate(names[group]):
            want = sum(r[wi] * r[vi][j] for r in rows) / weight
            # each node's value x weight is rounded to 2^-20: the mean is off by at most n / 2 / 2^20 / weight
            assert got[group][key] == pytest.approx(want, abs=len(rows) / 2 / 2**20 / weight + 1e-9)
