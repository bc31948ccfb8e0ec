"""worldreel: an open, self-hostable text-to-video world simulator."""

__version__ = "0.1.0"
