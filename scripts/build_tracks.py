"""`python scripts/build_tracks.py ...` = `gasp convert rgbd ...`; the code is in gasp_cli/build_tracks.py."""
if __name__ == "__main__":
    from gasp_cli.build_tracks import main

    raise SystemExit(main())
