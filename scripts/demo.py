"""`python scripts/demo.py ...` = `gasp demo ...`; the code is in gasp_cli/demo.py."""
if __name__ == "__main__":
    from gasp_cli.demo import main

    raise SystemExit(main())
