"""Entry points: the `gasp` command (``gasp_cli.main``) and the modules behind the README's scripts.

The top floor of the layout (tests/test_layout.py): it wires the library (gasp), the probe
(probes) and the figures (plots) together; nothing below imports it.
"""
