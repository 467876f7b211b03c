"""The Jobs API over HTTP: its routes, uploads, event streams and model listing, over `jobs.service`."""
