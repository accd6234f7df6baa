import pytest

import dc_kernels
from tests.dc_kernels.models import CONFIG, MODELS, build


@pytest.fixture(scope="module", params=list(MODELS))
def compressed(request):
    model, x, names = build(request.param)
    report = dc_kernels.compress_(model, CONFIG)
    assert set(report.converted) == names and not report.skipped
    # Only the attention output projections are read through .weight (decoded per call): noted.
    assert set(report.notes) == {n for n in names if n.endswith("self_attn.out_proj")}
    assert all(f"note {n}: nn.MultiheadAttention reads" in str(report) for n in report.notes)
    return request.param, model, x
