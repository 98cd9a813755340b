"""eps: Evolving the Proxy Search Space, a random-sampling weight-sharing NAS method."""

__version__ = "0.1.0"
