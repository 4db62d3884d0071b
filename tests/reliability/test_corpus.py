"""The reliability corpus: every hostile input ends in a VitkitError within the limits, or loads correctly.

The default run takes a fast slice (every hand-made case, a few of each kind of bulk mutation); ``--long``
runs the whole generated corpus (thousands of cases). The per-category table is printed at the end of the run.
"""

from __future__ import annotations

import pytest
from harness import RELIABILITY_TABLES, build, run, table

pytestmark = pytest.mark.timeout(3600)


def test_corpus(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> None:
    long = request.config.getoption("--long")
    root = tmp_path_factory.mktemp("corpus")
    cases = build(root, long)
    verdicts = run(cases, root / "runs", jobs=2)
    summary = table(verdicts)
    request.config.stash.setdefault(RELIABILITY_TABLES, []).append(("long" if long else "fast", summary))
    failures = [f"{v.case.id} [{v.case.category}] expected {v.case.expect}, got {v.outcome}: {v.detail}"
                for v in verdicts if not v.passed]
    assert not failures, f"{len(failures)} of {len(verdicts)} cases failed:\n" + "\n".join(failures[:60])

