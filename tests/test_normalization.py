"""The loss normalization: default weights mean the same thing at 128 px and at 512 px."""

import pytest

from conftest import EXAMPLES
from vggstyle.optimize import measure_losses

CONTENT = EXAMPLES / "content" / "tubingen.jpg"
STYLE = EXAMPLES / "style" / "starry_night.jpg"


@pytest.fixture(scope="module")
def terms():
    out = {}
    for size in (128, 512):
        at_content = measure_losses(CONTENT, STYLE, image_size=size, precision="fp32", init="content")
        at_random = measure_losses(CONTENT, STYLE, image_size=size, precision="fp32", init="random", seed=0)
        out[size] = {"style": at_content["style"], "tv": at_content["tv"], "content": at_random["content"]}
    return out


@pytest.mark.parametrize("term", ["style", "tv", "content"])
def test_loss_terms_agree_within_factor_two_across_sizes(terms, term):
    small, large = terms[128][term], terms[512][term]
    assert small > 0 and large > 0
    assert 0.5 <= small / large <= 2.0, f"{term}: {small:.4g} at 128 px vs {large:.4g} at 512 px"


def test_content_init_has_zero_content_loss():
    assert measure_losses(CONTENT, STYLE, image_size=64, precision="fp32")["content"] == pytest.approx(0, abs=1e-6)
