"""The model store: its layout on disk, what it holds (read without loading a model), the
catalogue of what can be fetched, verified downloads and imports, and the models loaded on demand."""
