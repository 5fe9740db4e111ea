"""``python run.py [group=option ...] [key=value ...]``: the ``stbias`` command from a checkout."""

from stbias.cli import main

if __name__ == "__main__":
    main()
