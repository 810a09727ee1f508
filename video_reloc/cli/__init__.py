"""The binaries: one module per verb, each a thin face over one typed library function.

Each is the console script `video-reloc-VERB` and runs as `python -m video_reloc.cli.VERB`;
each imports `video_reloc.cli.startup` first, before anything imports TensorFlow.
"""
