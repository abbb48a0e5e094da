"""Entry point for ``python -m train`` and ``torchrun -m train``."""

from train.cli import main

if __name__ == "__main__":
    main()
