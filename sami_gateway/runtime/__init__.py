"""What every role (single process, front, worker) is built from and shares."""
