"""Separation span by span in fixed memory: the mix read as blocks, stems handed on as they are final."""

from __future__ import annotations

from .blocks import ArrayBlocks, BlockSource, DecodedBlocks, FileBlocks, IteratorBlocks, MappedBlocks
from .gate import DenoisedBlocks
from .resample import ResampledBlocks
from .separation import Region, separate_stream, stream_steps
from .spool import Spool
from .statistics import MixStatistics, measure

__all__ = [
    "ArrayBlocks", "BlockSource", "DecodedBlocks", "DenoisedBlocks", "FileBlocks", "IteratorBlocks", "MappedBlocks",
    "MixStatistics", "Region", "ResampledBlocks", "Spool", "measure", "separate_stream", "stream_steps",
]
