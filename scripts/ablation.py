"""Same as ``python -m stereo.evaluation.ablation``: see :mod:`stereo.evaluation.ablation` for what it does and its options."""

from stereo.evaluation.ablation import main

if __name__ == "__main__":
    main()
