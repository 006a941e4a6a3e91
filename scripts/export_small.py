"""`python scripts/export_small.py ...` = `python -m experiments.export_small ...`; the code is in experiments/export_small.py."""
if __name__ == "__main__":
    from experiments.export_small import main

    raise SystemExit(main())
