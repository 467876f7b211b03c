"""Scale-out: stateless fronts and workers that share Redis (queue, state, quotas, notifications)
and S3-compatible storage (inputs and results). Off unless SAMI_QUEUE_URL and SAMI_STORAGE_URL are set."""
