"""glann: GLO + IMLE (GLANN, Hoshen, Li & Malik, CVPR 2019) and its baselines.

The science of the pipeline: data preparation, models, losses, training loops
and metrics. Nothing in this package imports Snakemake; each workflow rule calls
one function here through the ``glann`` command line (see ``glann.pipeline.cli``).
"""

__version__ = "0.1.0"
