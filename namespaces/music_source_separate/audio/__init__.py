"""The audio library: sniffing, framing checks, bounded decoding, conversion and encoding, with its own errors."""
