"""`python scripts/train_gasp.py ...` = `gasp train ...`; the code is in gasp_cli/train.py."""
if __name__ == "__main__":
    from gasp_cli.train import main

    raise SystemExit(main())
