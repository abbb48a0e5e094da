"""Entry point for ``python -m prep``."""

from prep.cli import main

if __name__ == "__main__":
    main()
