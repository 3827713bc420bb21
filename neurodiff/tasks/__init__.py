"""Task functions: load -> run -> return a result dataclass. Surfaces (CLI, Snakemake, notebooks) call these."""
