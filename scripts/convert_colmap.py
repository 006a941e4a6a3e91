"""`python scripts/convert_colmap.py ...` = `gasp convert colmap ...`; the code is in gasp_cli/convert_colmap.py."""
if __name__ == "__main__":
    from gasp_cli.convert_colmap import main

    raise SystemExit(main())
