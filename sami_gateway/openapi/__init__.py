"""The OpenAPI 3.1 document of every route (`document.py`, its schemas in `schemas.py`, a gateway's
own narrowed to the models it lists now in `live.py`), served at `/openapi.json` and `/docs` (`page.py`)."""
