"""`python scripts/convert_vggt.py ...` = `gasp convert vggt ...`; the code is in gasp_cli/convert_vggt.py."""
if __name__ == "__main__":
    from gasp_cli.convert_vggt import main

    raise SystemExit(main())
