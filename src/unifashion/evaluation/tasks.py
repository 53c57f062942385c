"""The evaluation tasks by name (a module of its own so the CLI can list them without torch)."""

TASKS = ("cmr", "cir", "fic", "fig", "phrasing")
