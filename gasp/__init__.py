"""gasp: diagnose and train geometric correspondence in the attention of video VLMs."""

__version__ = "0.1.0"
