"""The single process's back-ends: the job store and work queue in one SQLite file."""
