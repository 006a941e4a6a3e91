"""`python scripts/convert_dl3dv.py ...` = `gasp convert dl3dv ...`; the code is in gasp_cli/convert_dl3dv.py."""
if __name__ == "__main__":
    from gasp_cli.convert_dl3dv import main

    raise SystemExit(main())
