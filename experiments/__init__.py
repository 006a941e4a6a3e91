"""Experiments: the replication machinery (``experiments.replication``) and the one-off scripts of past runs.

The top floor of the layout (tests/test_layout.py), beside ``gasp_cli`` and ``bench``: it may use every
package below and nothing below imports it. Where results and docs are written is passed in by its scripts.
"""
