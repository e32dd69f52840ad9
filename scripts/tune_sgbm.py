"""Same as ``python -m stereo.evaluation.tune_sgbm``: see :mod:`stereo.evaluation.tune_sgbm` for what it does and its options."""

from stereo.evaluation.tune_sgbm import main

if __name__ == "__main__":
    main()
