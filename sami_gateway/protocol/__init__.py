"""The SAMI wire format: the invoke envelope, its status answers, and the reader that decodes a
body's `data` as it streams in."""
