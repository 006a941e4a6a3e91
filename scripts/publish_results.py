"""`python scripts/publish_results.py ...` = `python -m experiments.publish_results ...`; the code is in experiments/publish_results.py."""
if __name__ == "__main__":
    from experiments.publish_results import main

    raise SystemExit(main())
