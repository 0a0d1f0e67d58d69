"""vmemlab: a page-level simulator of virtualization-host memory policies."""
__version__ = "0.1.0"
