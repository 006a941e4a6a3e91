"""Objectives that put geometry into a VLM beside GASP's heads (gasp/heads.py, gasp/losses.py)."""
