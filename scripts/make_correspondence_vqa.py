"""`python scripts/make_correspondence_vqa.py ...` = `python -m gasp_cli.make_correspondence_vqa ...`; the code is in gasp_cli/make_correspondence_vqa.py."""
if __name__ == "__main__":
    from gasp_cli.make_correspondence_vqa import main

    raise SystemExit(main())
