"""The Jobs API: asynchronous jobs, direct uploads, signed result URLs and webhooks, beside invoke."""
