"""`python probes/compare.py ...` is `gasp plot compare ...` (gasp_cli/compare.py), kept at the README's path."""
if __name__ == "__main__":
    from gasp_cli.compare import main

    raise SystemExit(main())
