"""One input through one model, shared by invoke and jobs: decode and hash, the stem cache or one
model run, the stems and `no_<stem>` built, a job's files written."""
