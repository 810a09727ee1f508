"""The binaries: one module per verb, each a thin face over one typed library function.

    train       video_reloc.training.train(TrainConfig)
    evaluate    video_reloc.evaluation.evaluate(EvaluateConfig)
    export      video_reloc.export.export_checkpoint(...)
    serve       video_reloc.serving.serve(...)
    relocalize  video_reloc.relocalize.relocalize_files(...)
    benchmark   video_reloc.benchmark.run_benchmark(BenchmarkConfig)

Each is the console script `video-reloc-VERB` and runs as `python -m video_reloc.cli.VERB`.
Importing this package first prepares TensorFlow's start-up (`startup`), before anything
imports TensorFlow; `runner` runs a binary (help, log levels, one-line errors).
"""

from video_reloc.cli import startup  # noqa: F401  (first: TensorFlow reads its settings once)
