"""What a caller asks for: the SAMI payload (`params.py`), a job's model, stems and output
(`job_params.py`), and the one table of SAMI models (`sami_models.py`)."""
