"""Layer-wise correspondence probes of a VLM's attention (paper Sec. 3 and 5.3)."""
