"""Slow (SmolLM2): the v2 harmful − harmless direction encodes content, not phrasing (issue 14).

Directions fitted at ``last_prompt`` on the train split of all seven domains, once per half of the phrasings, must
agree (cosine ≥ 0.8) at every layer 3–20, for each of the three ways to split the four phrasings into two pairs.
The same helper measures v1 data: ``phrasing_agreement(model, harmful_v1, harmless_v1, groups=(("0",), ("1", "2")))``
(v1 records carry their template index at the end of their id).
"""

import itertools

import pytest

from probes import datasets
from probes.build_data import PHRASINGS
from probes.data_checks import phrasing_agreement

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smol():
    from interp import load_model

    return load_model("smollm2-135m-instruct")


def _halves():
    names = list(PHRASINGS)
    for a in itertools.combinations(names[1:], 1):  # pair names[0] with each other phrasing: the 3 distinct splits
        first = (names[0], *a)
        yield first, tuple(n for n in names if n not in first)


@pytest.mark.parametrize("groups", list(_halves()), ids=lambda g: "+".join(g[0]) + "_vs_" + "+".join(g[1]))
def test_directions_from_disjoint_phrasings_agree_on_smollm2(smol, groups):
    harmful = [r for d in datasets.DOMAINS for r in datasets.load(f"{d}_harmful", "train")]
    harmless = [r for d in datasets.DOMAINS for r in datasets.load(f"{d}_harmless", "train")]
    cos = phrasing_agreement(smol, harmful, harmless, groups, layers=list(range(3, 21)))
    low = {layer: round(c, 3) for layer, c in cos.items() if c < 0.8}
    assert sorted(cos) == list(range(3, 21)) and not low, f"cosine < 0.8 at layers {low} (all: {cos})"
