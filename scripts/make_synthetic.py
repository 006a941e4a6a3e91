"""`python scripts/make_synthetic.py ...` = `gasp convert synthetic ...`; the code is in gasp_cli/make_synthetic.py."""
if __name__ == "__main__":
    from gasp_cli.make_synthetic import main

    raise SystemExit(main())
