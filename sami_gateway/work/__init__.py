"""Dispatch, one design for the single process and scale-out: the work queue's contract and the
one loop that runs it."""
