"""Schemathesis hooks (`schemathesis.toml`): what a job request must hold that the document says in words.

`copy_results_to` names only stems the job makes. With `stems` absent the document's schema says it
(the model's default stems); with `stems` given it would take one `if`/`then` per stem, whose
expansion into alternatives (2 to the number of stems) is more than schemathesis generates from, so
the document says it in `copy_results_to`'s description and the generated requests are held to it here.
"""

from __future__ import annotations

from typing import Any

import schemathesis

JOBS = "/api/v1/jobs"


def copies_only_asked_stems(body: Any) -> bool:
    """False for a job request (JSON, or a form's `params`) that copies a stem its `stems` do not name."""
    if isinstance(body, dict) and isinstance(body.get("params"), dict):
        body = body["params"]
    if not isinstance(body, dict):
        return True
    copies, stems = body.get("copy_results_to"), body.get("stems")
    return not (isinstance(copies, dict) and isinstance(stems, list) and any(stem not in stems for stem in copies))


@schemathesis.hook
def filter_case(context: Any, case: Any) -> bool:
    return case.method.upper() != "POST" or case.path != JOBS or copies_only_asked_stems(case.body)
