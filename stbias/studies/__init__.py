"""Studies: what combines runs of the single-run tasks into a paper's table or figure.

Each study is one module (its driver, the read-back of its runs, its drawing) on
:mod:`stbias.studies.base`. ``task=<study>`` runs the ones with a driver
(:data:`stbias.runner.STUDIES`, the command line's dispatch); the figure registry
(:mod:`stbias.figures`) draws from their runs.
"""
