"""`POST /api/v1/invoke`: the SAMI envelope, its streaming reader, the handler, and running one invoke."""
