"""``python -m beyondbp`` runs the command line (same as the ``beyondbp`` script)."""

from .cli import main

if __name__ == "__main__":
    main()
