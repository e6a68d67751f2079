"""Settings shared by the fuzz tests (tests/fuzz): example counts that `SEQSERVE_FUZZ_EXAMPLES`
scales for longer runs by hand, and the hypothesis profile they run under."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import HealthCheck, settings

EXAMPLE_STORE = Path(__file__).resolve().parents[2] / "model_store"

# A multiplier of every example count: 1 in CI (seconds), e.g. 50 for a long run by hand.
SCALE = float(os.environ.get("SEQSERVE_FUZZ_EXAMPLES", "1"))

# CI runs the same inputs every time (a red build is reproducible); a scaled run explores new ones.
# No example database: nothing is written into the checkout.
FUZZ = settings(
    database=None,
    deadline=None,
    derandomize=SCALE == 1,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)


def examples(count: int) -> int:
    """`count` examples in CI, scaled by SEQSERVE_FUZZ_EXAMPLES."""
    return max(1, round(count * SCALE))
