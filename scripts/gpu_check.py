"""`python scripts/gpu_check.py ...` = `gasp gpu-check ...`; the code is in gasp_cli/gpu_check.py."""
if __name__ == "__main__":
    from gasp_cli.gpu_check import main

    raise SystemExit(main())
