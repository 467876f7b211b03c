"""Inference: Demucs's chunked model calls, their `fast` forms and native attention kernel, the
`Separator` library API and the bs_4track denoiser."""
