"""Commands as short functions over a Job: run, replay, undo, verify, resolve, status.

Each builds a Plan directly and returns data; the CLI renders it. The library never prints.
Import each from its module (batcher.job.run, batcher.job.status ...): this package imports
nothing, so that `batcher status` and `batcher --help` do not load what `batcher run` needs.
"""
