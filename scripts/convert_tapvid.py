"""`python scripts/convert_tapvid.py ...` = `gasp convert tapvid ...`; the code is in gasp_cli/convert_tapvid.py."""
if __name__ == "__main__":
    from gasp_cli.convert_tapvid import main

    raise SystemExit(main())
