"""The composition root: each role (single process, front, worker) built from the same parts."""
