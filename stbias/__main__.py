"""``python -m stbias [overrides]``: the same as the ``stbias`` command."""

from stbias.cli import main

main()
