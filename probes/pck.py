"""`python probes/pck.py ...` is `gasp probe ...` (gasp_cli/probe.py): the path the README has always shown."""
if __name__ == "__main__":
    from gasp_cli.probe import main

    raise SystemExit(main())
