"""`python scripts/reproduce_small.py ...` = `python -m experiments.reproduce_small ...`; the code is in experiments/reproduce_small.py."""
if __name__ == "__main__":
    from experiments.reproduce_small import main

    raise SystemExit(main())
