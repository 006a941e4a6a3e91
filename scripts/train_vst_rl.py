"""`python scripts/train_vst_rl.py ...` = `gasp rl ...`; the code is in gasp_cli/rl.py and gasp/rl/loop.py."""
if __name__ == "__main__":
    from gasp_cli.rl import main

    raise SystemExit(main())
