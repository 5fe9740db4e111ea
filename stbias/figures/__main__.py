"""``python -m stbias.figures [name] ...``: make a paper figure, or list them (``make figures``).

python -m stbias.figures                      # every figure and what it needs
python -m stbias.figures fig3                 # real data and weights (figures.local.yaml)
python -m stbias.figures fig3-embedded        # shipped data, tiny models
python -m stbias.figures fig3 --set checkpoints.kinetics.i3d=/w/I3D.pyth --dry-run
python -m stbias.figures fig3-embedded debug=fast   # overrides for every run

Paths also come from the environment, as ``make`` passes them (so that they may hold spaces and
quotes): ``STBIAS_FIGURE_SETS`` (``key=/path`` entries, each starting at a word ``key=``),
``STBIAS_FIGURE_PATHS`` (the paths file) and ``STBIAS_FIGURES_OUT`` (the output folder).
"""

from __future__ import annotations

import argparse
import os
import sys

from stbias.errors import StbiasError
from stbias.figures.make import SETS_ENV, listing, make, split_sets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m stbias.figures", description=__doc__.splitlines()[0]
    )
    parser.add_argument("name", nargs="?", help="figure, e.g. fig3 or fig3-embedded")
    parser.add_argument("overrides", nargs="*", help="config overrides for every run")
    parser.add_argument(
        "--out",
        default=os.environ.get("STBIAS_FIGURES_OUT") or "outputs/figures",
        help="output folder",
    )
    parser.add_argument("--paths", default=None, help="local paths file (figures.local.yaml)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=PATH", help="one path (repeatable)"
    )
    parser.add_argument("--dry-run", action="store_true", help="check paths, print the commands")
    parser.add_argument("--force", action="store_true", help="run finished multiruns again")
    args = parser.parse_intermixed_args(argv)
    sets = split_sets(os.environ.get(SETS_ENV, "")) + args.set

    try:
        if not args.name:
            print(listing(args.paths))
            return 0
        make(
            args.name,
            args.out,
            args.paths,
            sets,
            args.overrides,
            dry_run=args.dry_run,
            force=args.force,
        )
    except StbiasError as err:
        for line in str(err).splitlines():
            print(f"stbias: error: {line}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
