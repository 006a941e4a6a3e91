"""`python scripts/report_small.py ...` = `python -m experiments.report_small ...`; the code is in experiments/report_small.py."""
if __name__ == "__main__":
    from experiments.report_small import main

    raise SystemExit(main())
