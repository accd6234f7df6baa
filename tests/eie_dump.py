"""Where the tests find the EIE authors' AlexNet fc8 dump, which is not part of the repository.

The folder named by the ``EIE_DUMP`` environment variable, else the one CI places beside the
clone. Tests that need it are marked `needs_dump` and skip cleanly without it.
"""

import os
from pathlib import Path

import pytest

DUMP = (
    Path(os.environ["EIE_DUMP"])
    if os.environ.get("EIE_DUMP")
    else Path(__file__).resolve().parents[2] / "shared" / "data" / "eie_alexnet_fc8"
)
needs_dump = pytest.mark.skipif(
    not (DUMP / "arithm.dat").is_file(),
    reason=f"the EIE authors' dump is not at {DUMP} (set EIE_DUMP to its folder)",
)
