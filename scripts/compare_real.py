"""Same as ``python -m stereo.evaluation.compare_real``: see :mod:`stereo.evaluation.compare_real` for what it does and its options."""

from stereo.evaluation.compare_real import main

if __name__ == "__main__":
    main()
