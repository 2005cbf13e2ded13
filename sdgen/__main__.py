"""``python -m sdgen``: the same as the ``sdgen`` command."""

from .cli import main

if __name__ == "__main__":
    main()
