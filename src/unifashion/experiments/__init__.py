"""Experiments: whole runs that combine data, training, evaluation and pipelines (the two-stage
CIR recipe, the design/try-on run, the demo). Above every library layer; below serving and the CLI."""
