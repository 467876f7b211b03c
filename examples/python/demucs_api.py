"""The Demucs API examples, with only the import line changed.

    sami-gateway models import /path/to/*.th /path/to/*.yaml   # or: sami-gateway models fetch htdemucs
    python demucs_api.py song.wav
"""
import sys

from namespaces.music_source_separate import ModelRepository, Separator, select_model

song = sys.argv[1]

# Separate a file into its stems and export one of them.
separator = Separator(model="htdemucs", device="cpu")
separated = separator.separate(song, progress_callback=lambda event, data: print(event, data))
separated.export_stem("vocals", "vocals.wav")

# Keep one stem and everything else as its complement.
isolated = separated.isolate_stem("vocals")
isolated.export_stem("no_vocals", "no_vocals.mp3", format="mp3")

# Let the library pick the model, then load only the specialist it names.
model, only_load = select_model(song, isolate_stem="vocals")
vocals = Separator(model=model, only_load=only_load, device="cpu").separate(song, shifts=0)
vocals.export_stem("vocals", "vocals_ft.wav")

# What the store holds.
repository = ModelRepository()
print(repository.get_cache_dir())
for name, info in repository.get_cache_info().items():
    print(name, len(info["layers"]), info["size_bytes"])
