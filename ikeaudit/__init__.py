"""ikeaudit: audit IKEv2 handshakes in packet captures for post-quantum key exchange."""

__version__ = "0.1.0"
