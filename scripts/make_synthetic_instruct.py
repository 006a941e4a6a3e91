"""`python scripts/make_synthetic_instruct.py ...` = `python -m gasp_cli.make_synthetic_instruct ...`; the code is in gasp_cli/make_synthetic_instruct.py."""
if __name__ == "__main__":
    from gasp_cli.make_synthetic_instruct import main

    raise SystemExit(main())
